"""Suspending users (admins): a suspended user's sessions are closed on every gateway process,
their refresh tokens revoked, and `auth`, `auth.login`, `auth.refresh` and `auth.claim` refused with `suspended`."""

from datetime import datetime
from typing import Annotated

import msgspec

from protocol.bounds import LINE
from protocol.frames import Reply, Request

UserId = Annotated[str, LINE, msgspec.Meta(min_length=1, max_length=200,
                                           description="a session token's subject (an account's id or a minted one)")]
Reason = Annotated[str, LINE, msgspec.Meta(min_length=1, max_length=500)]


class Suspension(msgspec.Struct, kw_only=True):
    id: int
    user_id: str
    reason: str
    suspended_at: datetime
    suspended_by: str
    lifted_at: datetime | None  # null: in force
    lifted_by: str | None


class HeldOrder(msgspec.Struct, kw_only=True):
    """An unfinished order of the suspended user, left as it is for staff (`admin.reassign`, `admin.cancel`)."""

    order_id: str
    state: str
    role: str  # "technician": they hold it; "consumer": it is theirs


class SuspendResult(Reply):
    suspension: Suspension
    sessions_closed: int  # on the process that answered; every other process closes its own as well
    refresh_tokens_revoked: int
    taken_off_duty: bool  # a technician who was on duty: off duty and out of matching
    orders: list[HeldOrder]


class Suspend(Request, tag="admin.suspend"):
    """Suspend a user (admins; not themselves). Already suspended: `conflict` (`current_state`: `suspended`)."""

    user_id: UserId
    reason: Reason
    reply = SuspendResult


class UnsuspendResult(Reply):
    suspension: Suspension  # the one lifted


class Unsuspend(Request, tag="admin.unsuspend"):
    """Lift a user's suspension (admins): they may sign in again; revoked refresh tokens stay revoked.
    Not suspended: `conflict` (`current_state`: `active`)."""

    user_id: UserId
    reply = UnsuspendResult


class Suspensions(Reply):
    suspensions: list[Suspension]
    next_before: int | None  # pass as `before` for the next (older) page; null: no more


class SuspensionList(Request, tag="admin.suspensions"):
    """Suspensions newest first (admins), in force and lifted; `in_force` only those in force."""

    user_id: UserId | None = None
    in_force: bool = False
    before: Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)] | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=500)] = 100
    reply = Suspensions
