"""Back-office operations available to admins from the debug console."""

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from protocol.bounds import END, LINE, MOMENT, TEXT, check_moments
from protocol.frames import Event, Reply, Request

GroupName = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[a-z0-9_.:-]+" + END)]


class Notice(Event, tag="notice"):
    """A message from staff, shown to the user as a banner."""

    text: str
    sender: str


class Notified(Reply):
    sessions: int = msgspec.field(default=0)


class Notify(Request, tag="admin.notify"):
    """Push a `notice` to one user (all their sessions) or a group (e.g. `role:technician`),
    on whichever gateway process holds the sessions. `sessions` counts this process's only."""

    text: Annotated[str, TEXT, msgspec.Meta(min_length=1, max_length=1000)]
    user_id: Annotated[str, LINE, msgspec.Meta(max_length=64)] | None = None
    group: GroupName | None = None
    reply = Notified


# -- the audit log ------------------------------------------------------------------------------
ActionName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[a-z0-9_.]+" + END)]
Identifier = Annotated[str, LINE, msgspec.Meta(min_length=1, max_length=200)]


class LogEntry(msgspec.Struct, kw_only=True):
    id: int
    at: datetime
    actor_id: str
    actor_role: str
    action: str  # the operation ('catalog.sku.save', 'admin.suspend') or a read ('read.transcript')
    target_kind: str | None
    target_id: str | None
    outcome: str  # 'ok' or the error code the caller was answered
    request: dict[str, Any]  # as sent, with secrets and personal fields replaced by "[redacted]"


class Log(Reply):
    entries: list[LogEntry]
    next_before: int | None  # pass as `before` for the next (older) page; null: no more


class LogList(Request, tag="admin.log"):
    """The audit log, newest first (admins). Rows are never changed or deleted."""

    actor_id: Identifier | None = None
    action: ActionName | None = None
    target_id: Identifier | None = None
    since: Annotated[datetime, MOMENT] | None = None
    until: Annotated[datetime, MOMENT] | None = None
    before: Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)] | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=500)] = 100
    reply = Log

    def __post_init__(self) -> None:
        check_moments(self, "since", "until")


# -- the live activity feed ---------------------------------------------------------------------
ActivityKind = Literal["order.created", "order.state", "payment", "payout", "audit.anomaly", "user.suspended",
                       "user.unsuspended", "catalog.changed", "ai.conversation"]


class Activity(Event, tag="admin.activity"):
    """Something happened that the back office watches. Merchants get their brands' only."""

    kind: ActivityKind
    at: datetime
    brand: str | None = None
    order_id: str | None = None
    user_id: str | None = None
    conversation_id: str | None = None  # an AI troubleshooting conversation's (`ai.conversation`)
    state: str | None = None  # the order's, payment's or payout's new state
    previous_state: str | None = None
    amount_cents: int | None = None
    detail: str | None = None  # a short English summary (an anomaly's kind, a suspension's reason...)


class Watching(Reply):
    brands: list[str] | None  # null: every brand (admins)


class Watch(Request, tag="admin.watch"):
    """Subscribe this session to `admin.activity` events (merchants: their brands at this moment;
    watch again after memberships change). Ends with `admin.unwatch` or the session."""

    reply = Watching


class Unwatched(Event, tag="admin.unwatched"):
    """The session no longer watches the feed: `memberships` (the merchant's brands changed;
    `admin.watch` again to follow the new ones)."""

    reason: Literal["memberships"]


class Unwatch(Request, tag="admin.unwatch"):
    reply = Watching


# -- users --------------------------------------------------------------------------------------
class Account(msgspec.Struct, kw_only=True):
    user_id: str
    role: Literal["consumer", "technician", "merchant", "admin"]
    name: str | None
    email: str | None  # null: a session-token subject without an account (minted by `run.py token`)
    locale: str
    created_at: datetime
    invited: bool  # created by a merchant's order and not claimed yet
    suspended: bool  # a suspension is in force (admin.suspensions has its reason)
    brands: list[str]  # a merchant's memberships; empty for other roles


class UserFound(Reply):
    user: Account


class UserGet(Request, tag="admin.user"):
    """Admins: one account by id or by e-mail (give exactly one). The read of its name and e-mail
    is written to the audit log (`read.user`). Their orders: `admin.orders` with `consumer_id` or
    `technician_id`."""

    user_id: Annotated[str, LINE, msgspec.Meta(min_length=1, max_length=64)] | None = None
    email: Annotated[str, LINE, msgspec.Meta(min_length=3, max_length=254)] | None = None
    reply = UserFound
