"""Suspending and unsuspending users (admins). A suspension is recorded first, then it ends the
user's sessions on every gateway process, revokes their refresh tokens and takes a technician off
duty; `auth`, `auth.login` and `auth.refresh` refuse the user from the moment it commits
(handlers.accounts.auth). Orders the user holds are listed in the reply and left to staff."""

import asyncpg

from handlers.admin import feed
from handlers.context import Context
from handlers.errors import N_, Conflict, Forbidden, SuspendedSession
from handlers.orders.location import take_off_duty
from handlers.routing import Router
from protocol.suspension import (
    HeldOrder,
    Suspend,
    SuspendResult,
    Suspension,
    SuspensionList,
    Suspensions,
    Unsuspend,
    UnsuspendResult,
)
from storage import suspensions

router = Router()


def suspension(row: asyncpg.Record) -> Suspension:
    return Suspension(id=row["id"], user_id=row["user_id"], reason=row["reason"], suspended_at=row["suspended_at"],
                      suspended_by=row["suspended_by"], lifted_at=row["lifted_at"], lifted_by=row["lifted_by"])


@router.route(Suspend, roles=["admin"])
async def suspend(ctx: Context, req: Suspend) -> SuspendResult:
    who = ctx.identity
    assert who is not None
    if req.user_id == who.user_id:
        raise Forbidden(N_("You cannot suspend yourself."))
    db = ctx.services.db
    row = await suspensions.suspend(db, req.user_id, req.reason, who.user_id)
    if row is None:
        # Enforced again (a first suspension whose later steps failed left sessions or tokens):
        # the answer stays `conflict`, the clean-up is done anew.
        await suspensions.revoke_refresh_tokens(db, req.user_id)
        await ctx.disconnect_user(req.user_id, SuspendedSession)
        await take_off_duty(ctx, req.user_id)
        raise Conflict(N_("This user is already suspended."), current_state="suspended")
    # Committed: from here every `auth` and token refresh of theirs is refused, so what follows
    # only clears what was already out there. Revoking after the commit: a racing refresh either
    # checked before the commit, so its new token was stored before this and is revoked with the
    # rest, or checks after it and refuses itself.
    revoked = await suspensions.revoke_refresh_tokens(db, req.user_id)
    closed = await ctx.disconnect_user(req.user_id, SuspendedSession)
    off_duty = await take_off_duty(ctx, req.user_id)
    held = [HeldOrder(order_id=r["id"], state=r["state"], role="technician" if r["as_technician"] else "consumer")
            for r in await suspensions.held_orders(db, req.user_id)]
    await feed.publish(ctx, "user.suspended", user_id=req.user_id, detail=req.reason)
    return SuspendResult(suspension=suspension(row), sessions_closed=closed, refresh_tokens_revoked=revoked,
                         taken_off_duty=off_duty, orders=held)


@router.route(Unsuspend, roles=["admin"])
async def unsuspend(ctx: Context, req: Unsuspend) -> UnsuspendResult:
    who = ctx.identity
    assert who is not None
    row = await suspensions.lift(ctx.services.db, req.user_id, who.user_id)
    if row is None:
        raise Conflict(N_("This user is not suspended."), current_state="active")
    await feed.publish(ctx, "user.unsuspended", user_id=req.user_id)
    return UnsuspendResult(suspension=suspension(row))


@router.route(SuspensionList, roles=["admin"])
async def listed(ctx: Context, req: SuspensionList) -> Suspensions:
    rows = await suspensions.history(ctx.services.db, user_id=req.user_id, in_force_only=req.in_force,
                                     before=req.before, limit=req.limit + 1)
    page = [suspension(r) for r in rows[:req.limit]]
    return Suspensions(suspensions=page, next_before=page[-1].id if len(rows) > req.limit else None)
