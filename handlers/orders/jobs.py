"""A job's life after the order opens: accept, decline, release, depart, start, complete, cancel.

The allowed transitions are one table; each operation is one conditional UPDATE, which is also
what makes concurrent attempts (fifty technicians accepting at once) race-free."""

import uuid
from dataclasses import dataclass
from typing import Any, NoReturn

import asyncpg

from handlers.chat.rooms import post_system
from handlers.context import Context
from handlers.effects import after_commit
from handlers.errors import N_, NotFound
from handlers.money.scheduler import settle
from handlers.orders import metrics
from handlers.orders.orders import check_attachments, push_offline, tell_parties
from handlers.orders.pool import announce, withdraw
from handlers.orders.views import parse_id, sight, state_conflict, view, within_reach
from handlers.routing import Router
from protocol.frames import Empty
from protocol.orders import (
    OrderAccept,
    OrderCancel,
    OrderComplete,
    OrderDecline,
    OrderDepart,
    OrderRelease,
    OrderReply,
    OrderStart,
)
from storage import geo, orders

router = Router()


@dataclass(frozen=True)
class Transition:
    from_states: tuple[str, ...]
    to_state: str
    guard: str = "TRUE"  # SQL over `o`; $4 is the caller's id


ASSIGNED = "o.technician_id = $4"
TRANSITIONS = {
    "accept": Transition(("open",), "accepted"),
    "release": Transition(("accepted",), "open", ASSIGNED),
    "depart": Transition(("accepted",), "en_route", ASSIGNED),
    "start": Transition(("en_route",), "in_service", ASSIGNED),
    "complete": Transition(("in_service",), "completed", ASSIGNED),
    "cancel_by_consumer": Transition(("awaiting_payment", "open", "accepted", "en_route"), "cancelled",
                                     "o.consumer_id = $4"),
    "cancel_by_admin": Transition(("awaiting_payment", "open", "accepted", "en_route", "in_service"), "cancelled"),
    # staff moderation (handlers.admin.moderation): $7 is the technician given the order
    "reassign": Transition(("open", "accepted", "en_route"), "accepted"),
    "reassign_to_pool": Transition(("accepted", "en_route"), "open"),
}


async def apply(ctx: Context, order_id: str | uuid.UUID, name: str, *, sets: str = "", args: tuple[Any, ...] = (),
                details: dict[str, Any] | None = None) -> asyncpg.Record:
    """Run the named transition for the caller, or raise the error that says why it did not apply."""
    who = ctx.identity
    assert who is not None
    step = TRANSITIONS[name]
    oid = order_id if isinstance(order_id, uuid.UUID) else parse_id(order_id)
    async with ctx.services.db.acquire() as conn, conn.transaction():  # the move and its push, together
        row = await orders.move(conn, oid, from_states=step.from_states, to_state=step.to_state,
                                actor_id=who.user_id, actor_role=who.role, guard=step.guard, sets=sets, args=args,
                                details=details)
        if row is not None:
            await push_offline(ctx, conn, row)
    if row is None:
        await explain(ctx, oid, step)
    return row


async def explain(ctx: Context, order_id: Any, step: Transition, row: asyncpg.Record | None = None) -> NoReturn:
    """Why a transition did not apply. An order the caller may not see is `not_found`, exactly like
    an unknown id, so ids cannot be probed. One exception: a technician whose accept or decline
    finds an order within their reach gone from the pool learns its state (`conflict`), which the
    pool tells them anyway (`order.unavailable`)."""
    who = ctx.identity
    assert who is not None
    if row is None:
        row = await orders.get(ctx.services.db, order_id)
    if row is None:
        raise NotFound(N_("No such order."))
    if await sight(ctx, who, row) is None and not (
            step is TRANSITIONS["accept"] and who.role == "technician" and await within_reach(ctx, who.user_id, row)):
        raise NotFound(N_("No such order."))
    raise state_conflict(row)  # the caller sees the order, and it is not where the step applies


async def pool_order(ctx: Context, order_id: str) -> uuid.UUID:
    """The id of an order the technician may take or decline: open and within their reach."""
    assert ctx.identity is not None
    oid = parse_id(order_id)
    row = await orders.get(ctx.services.db, oid)
    if row is None or await sight(ctx, ctx.identity, row) is None:
        await explain(ctx, oid, TRANSITIONS["accept"], row)
    return oid


@router.route(OrderAccept, roles=["technician"])
async def accept(ctx: Context, req: OrderAccept) -> OrderReply:
    assert ctx.identity is not None
    row = await apply(ctx, await pool_order(ctx, req.order_id), "accept", sets=", technician_id = $4")
    metrics.TO_ACCEPT.observe(max((row["updated_at"] - row["previous_since"]).total_seconds(), 0.0))
    await after_commit("withdrawing an accepted order", withdraw(ctx, row))
    await after_commit("order.status of an accept", tell_parties(ctx, row))
    await post_system(ctx, row)
    return OrderReply(order=await view(ctx, row))


@router.route(OrderDecline, roles=["technician"])
async def decline(ctx: Context, req: OrderDecline) -> Empty:
    assert ctx.identity is not None
    order_id = await pool_order(ctx, req.order_id)
    if not await orders.decline(ctx.services.db, order_id, ctx.identity.user_id):
        await explain(ctx, order_id, TRANSITIONS["accept"])
    await geo.decline(ctx.services.redis, ctx.identity.user_id, str(order_id))
    return Empty()


@router.route(OrderRelease, roles=["technician"])
async def release(ctx: Context, req: OrderRelease) -> OrderReply:
    assert ctx.identity is not None
    me = ctx.identity.user_id
    row = await apply(ctx, req.order_id, "release", sets=", technician_id = NULL",
                      details={"reason": req.reason} if req.reason else None)
    await after_commit("order.status of a release", tell_parties(ctx, row, me))
    await post_system(ctx, row)
    exclude = frozenset({me}) | await orders.decliners(ctx.services.db, row["id"])
    await after_commit("announcing a released order", announce(ctx, row, exclude))
    return OrderReply(order=await view(ctx, row))


async def _advance(ctx: Context, order_id: str, name: str, settles: bool = False, **kwargs: Any) -> OrderReply:
    row = await apply(ctx, order_id, name, **kwargs)
    if settles:
        await settle(ctx, row["id"])  # capture the payment, schedule the payout
    await after_commit(f"order.status of {name}", tell_parties(ctx, row))
    await post_system(ctx, row)
    return OrderReply(order=await view(ctx, row))


@router.route(OrderDepart, roles=["technician"])
async def depart(ctx: Context, req: OrderDepart) -> OrderReply:
    return await _advance(ctx, req.order_id, "depart")


@router.route(OrderStart, roles=["technician"])
async def start(ctx: Context, req: OrderStart) -> OrderReply:
    return await _advance(ctx, req.order_id, "start")


@router.route(OrderComplete, roles=["technician"])
async def complete(ctx: Context, req: OrderComplete) -> OrderReply:
    assert ctx.identity is not None
    photos = await check_attachments(ctx, req.attachments, ctx.identity.user_id)
    keep = 10_000 - ctx.services.money_rules.platform_fee_bp
    return await _advance(
        ctx, req.order_id, "complete",
        sets=", payout_cents = o.price_cents * $7::int / 10000, completion_attachments = $8,"
             " completion_note = $9",
        args=(keep, photos, req.note), details={"photos": len(photos)}, settles=True)


async def cancel_order(ctx: Context, order_id: str, reason: str | None) -> asyncpg.Record:
    """Cancel the order for the caller (its consumer or an admin); `after_cancel` settles and tells."""
    assert ctx.identity is not None
    name = "cancel_by_admin" if ctx.identity.role == "admin" else "cancel_by_consumer"
    return await apply(ctx, order_id, name, details={"reason": reason} if reason else None)


async def after_cancel(ctx: Context, row: asyncpg.Record) -> None:
    await settle(ctx, row["id"])  # release the authorization or refund the payment
    if row["previous_state"] == "open":
        await withdraw(ctx, row)
    await tell_parties(ctx, row)
    await post_system(ctx, row)


@router.route(OrderCancel, roles=["consumer", "admin"])
async def cancel(ctx: Context, req: OrderCancel) -> OrderReply:
    row = await cancel_order(ctx, req.order_id, req.reason)
    await after_cancel(ctx, row)
    return OrderReply(order=await view(ctx, row))
