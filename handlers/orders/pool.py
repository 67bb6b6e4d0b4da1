"""The pool of open orders: announcing an order to the technicians around it, withdrawing it,
and the technicians' feed (`order.nearby`)."""

import logging
import time

import asyncpg
import msgspec

from handlers.context import Context
from handlers.errors import N_, BadRequest
from handlers.orders import metrics
from handlers.orders.views import pool_view, technician_position
from handlers.routing import Router
from handlers.services import Services
from protocol.frames import Event
from protocol.orders import NearbyOrder, NearbyPage, Order, OrderAvailable, OrderNearby, OrderUnavailable
from storage import geo, orders

log = logging.getLogger(__name__)
router = Router()
POOL_CODEC = msgspec.msgpack.Encoder()
POOL_DECODE = msgspec.msgpack.Decoder(Order)


def pool_entry(row: asyncpg.Record) -> geo.PoolEntry:
    return (str(row["id"]), row["lng"], row["lat"], row["brand_id"], row["service_type"],
            POOL_CODEC.encode(pool_view(row)))


async def rebuild_if_lost(services: Services) -> bool:
    async def load() -> list[geo.PoolEntry]:
        return [pool_entry(row) for row in await orders.open_orders(services.db)]

    return await geo.ensure_pool(services.redis, load)


async def repair(ctx: Context, settled_s: float = 10.0, within_s: float = 3600.0, limit: int = 5000) -> int:
    """Announce the open orders PostgreSQL has and the pool lacks: a process that died between
    committing an order's opening and announcing it (creation, payment, release), or Redis being
    unreachable then, lost the announcement. Orders that changed meanwhile (accepted, cancelled)
    leave the pool again, as do orders the pool still holds but that are no longer open (their
    withdrawal was lost the same ways). Cheap when all is well (two counts); otherwise it compares
    the last hour's open orders, or the pool's."""
    db, redis = ctx.services.db, ctx.services.redis
    open_now, pooled = await orders.open_count(db), await geo.pool_size(redis)
    if pooled > open_now:
        ids = await geo.pool_ids(redis)
        stale = sorted(set(ids) - await orders.open_among(db, ids))
        await geo.pool_remove(redis, stale)
        if stale:
            log.warning("removed %d orders no longer open from the pool", len(stale))
        return 0
    if open_now <= pooled:
        return 0
    missing = await geo.pool_missing(redis, await orders.settled_open_ids(db, settled_s, within_s, limit))
    for row in await orders.rows(db, missing):
        await announce(ctx, row, frozenset(await orders.decliners(db, row["id"])))
    if missing:
        moved = [str(r["id"]) for r in await orders.rows(db, missing) if r["state"] != "open"]
        await geo.pool_remove(redis, moved)
    return len(missing)


async def announce(ctx: Context, row: asyncpg.Record, exclude: frozenset[str] = frozenset()) -> int:
    """Put the order in the pool and send `order.available` to every on-duty technician in its
    radius whose filters it matches; returns how many were told."""
    services = ctx.services
    started = time.monotonic()
    if not await geo.pool_add(services.redis, pool_entry(row)):
        return 0  # a row no index can hold (planted, or older than the protocol's bounds): logged
    nearby = await geo.technicians_within(services.redis, row["lng"], row["lat"], services.order_rules.radius_mi)
    filters = await geo.filters_of(services.redis, [t for t, _ in nearby])
    brand, service = row["brand_id"], row["service_type"]
    order = pool_view(row)
    by_distance: dict[float, list[str]] = {}  # one event per tenth of a mile: encoded once for many
    for technician, distance in nearby:
        wanted = filters.get(technician)
        if technician in exclude or (wanted and ((wanted[0] and brand not in wanted[0])
                                                 or (wanted[1] and service not in wanted[1]))):
            continue
        by_distance.setdefault(round(distance, 1), []).append(technician)
    batches: list[tuple[list[str], Event]] = [(technicians, OrderAvailable(order=order, distance_mi=distance))
                                              for distance, technicians in by_distance.items()]
    await ctx.deliver_many(batches)
    told = sum(len(t) for t, _ in batches)
    metrics.DISPATCH.observe(time.monotonic() - started)
    metrics.ANNOUNCED_TO.observe(told)
    return told


async def withdraw(ctx: Context, row: asyncpg.Record) -> None:
    """Take the order out of the pool and tell the technicians around it."""
    services = ctx.services
    await geo.pool_remove(services.redis, [str(row["id"])])
    nearby = await geo.technicians_within(services.redis, row["lng"], row["lat"], services.order_rules.radius_mi)
    if nearby:
        await ctx.deliver_many([([t for t, _ in nearby], OrderUnavailable(order_id=str(row["id"]),
                                                                          state=row["state"]))])


@router.route(OrderNearby, roles=["technician"])
async def nearby(ctx: Context, req: OrderNearby) -> NearbyPage:
    assert ctx.identity is not None
    rules = ctx.services.order_rules
    if (req.lat is None) != (req.lng is None):
        raise BadRequest(N_("Give both lat and lng, or neither."))
    if req.lat is not None and req.lng is not None:
        lng, lat = req.lng, req.lat
    else:
        where = await technician_position(ctx, ctx.identity.user_id)
        if where is None:
            raise BadRequest(N_("Send your location first, or give lat and lng."))
        lng, lat = where
    try:
        offset = int(req.cursor or 0)
    except ValueError:
        raise BadRequest(N_("The cursor is not valid.")) from None
    radius = min(req.radius_mi or rules.radius_mi, rules.max_radius_mi)
    found, more = await ctx.services.nearby(ctx.identity.user_id, lng, lat, radius, req.brand, req.service_type,
                                            max(offset, 0), req.limit)
    page = [NearbyOrder(order=POOL_DECODE.decode(view), distance_mi=round(distance, 2))
            for _, distance, view in found]
    return NearbyPage(orders=page, next_cursor=str(offset + len(found)) if more else None)
