"""Technicians: the position stream, duty state and feed filters, and their stats."""

import asyncio
import time
from datetime import UTC, datetime

from handlers.context import Context
from handlers.routing import Router
from handlers.services import Services
from protocol.location import Duty, DutyState, LocationAck, LocationUpdate, Stats, TechStats
from storage import geo, orders

router = Router()


async def on_duty(ctx: Context, technician: str) -> bool:
    """Cached per session: read once from PostgreSQL (with the other sessions' reads of the
    moment: a node taking over a stopped one's technicians reads thousands at once), then kept by
    `tech.duty`."""
    known = ctx.memo.get("on_duty")
    if known is None:
        known = ctx.memo["on_duty"] = await ctx.services.sign_in_reads.on_duty.get(technician)
    return bool(known)


@router.route(LocationUpdate, roles=["technician"])
async def update(ctx: Context, req: LocationUpdate) -> LocationAck | None:
    assert ctx.identity is not None
    ctx.memo["position"] = (req.lng, req.lat)
    ctx.memo["position_at"] = time.time()
    duty = await on_duty(ctx, ctx.identity.user_id)
    if duty:
        written = ctx.services.positions.put(ctx.identity.user_id, req.lng, req.lat)
        if req.id is None:
            return None  # a stream: the writer batches it, nobody waits
        await written
    return LocationAck(on_duty=duty, server_time=datetime.now(UTC))


@router.route(Duty, roles=["technician"])
async def duty(ctx: Context, req: Duty) -> DutyState:
    assert ctx.identity is not None
    me = ctx.identity.user_id
    row = await orders.set_duty(ctx.services.db, me, req.on_duty, req.brands, req.services)
    ctx.memo["on_duty"] = req.on_duty
    redis = ctx.services.redis
    await geo.set_filters(redis, me, row["brands"], row["services"])
    if not req.on_duty:
        await geo.go_off_duty(redis, me)
    elif (where := ctx.memo.get("position")) is not None:
        await ctx.services.positions.put(me, *where)
    return DutyState(on_duty=row["on_duty"], brands=row["brands"], services=row["services"])


async def restore(services: Services, positions: dict[str, tuple[float, float]]) -> int:
    """After Redis came back (perhaps empty): the last positions that this process's technician
    sessions sent, for those on duty, back into matching with their feed filters, instead of each
    waiting for its app's next update. How many were restored."""
    rows = await orders.duty_rows(services.db, list(positions))
    await geo.set_many_filters(services.redis, [(r["user_id"], r["brands"], r["services"]) for r in rows])
    await asyncio.gather(*(services.positions.put(row["user_id"], *positions[row["user_id"]]) for row in rows))
    return len(rows)


async def take_off_duty(ctx: Context, technician: str) -> bool:
    """Another's decision (a suspension): the technician off duty and out of matching, so no new
    order is announced to them; their filters are kept. Whether they were on duty."""
    if not await orders.duty(ctx.services.db, technician):
        await geo.go_off_duty(ctx.services.redis, technician)  # a position left behind, if any
        return False
    await orders.set_duty(ctx.services.db, technician, False, None, None)
    await geo.go_off_duty(ctx.services.redis, technician)
    return True


@router.route(TechStats, roles=["technician"])
async def stats(ctx: Context, req: TechStats) -> Stats:
    assert ctx.identity is not None
    row = await orders.technician_stats(ctx.services.db, ctx.identity.user_id)
    average = row["average"]
    return Stats(earnings_cents=row["earnings"], pending_cents=row["pending"], currency=row["currency"] or "usd",
                 jobs_completed=row["jobs"],
                 average_rating=None if average is None else round(average, 2), ratings=row["ratings"])
