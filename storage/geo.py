"""Redis GEO indexes: on-duty technicians' positions and the pool of open orders.

Redis is an index here, not the source of truth: positions repopulate from the apps' next
updates, and the pool is rebuilt from PostgreSQL when it is found missing (`pool:built`).

Keys:
    geo:techs               GEO   on-duty technicians' last positions
    geo:techs:seen          ZSET  technician -> unix time of the last update (staleness sweep)
    techs:filters           HASH  technician -> "brand,brand|service,service" (absent: no filter)
    geo:orders[:b:B][:s:S]  GEO   open orders, overall and per brand / service type / both
    pool:orders             HASH  order id -> msgpack of the pool view of the order
    pool:meta               HASH  order id -> "brand|service" (which indexes hold it)
    declined:<technician>   SET   orders the technician declined
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import Counter

from protocol.bounds import MAX_LATITUDE
from storage import lifecycle

log = logging.getLogger(__name__)
# What the index refused, counted per process; gateway.metrics registers it with its registry.
REFUSED = Counter("gateway_geo_refused", "Positions and open orders skipped because the Redis GEO index "
                  "cannot hold their coordinates", ["index"], registry=None)
WRITTEN = Counter("gateway_positions_written", "Technician positions written to the GEO index: after coalescing, "
                  "a technician's several updates within one flush are one write", registry=None)


def indexable(lng: float, lat: float) -> bool:
    """Whether the GEO index can hold the point (Redis refuses a GEOADD beyond Web Mercator's edge,
    and with it the whole command). The protocol refuses others; rows planted in PostgreSQL or an
    older client's data still may not be."""
    return -180.0 <= lng <= 180.0 and -MAX_LATITUDE <= lat <= MAX_LATITUDE

TECHS = "geo:techs"
SEEN = "geo:techs:seen"
FILTERS = "techs:filters"
POOL = "pool:orders"
POOL_META = "pool:meta"
POOL_BUILT = "pool:built"
DECLINED_TTL_S = 14 * 24 * 3600


def order_index(brand: str | None = None, service: str | None = None) -> str:
    key = "geo:orders"
    if brand:
        key += ":b:" + brand
    if service:
        key += ":s:" + service
    return key


def order_indexes(brand: str, service: str) -> tuple[str, ...]:
    return order_index(), order_index(brand), order_index(None, service), order_index(brand, service)


def declined_key(technician: str) -> str:
    return "declined:" + technician


class PositionWriter:
    """Coalesces position updates from every session into few Redis round trips: one GEOADD and
    one ZADD carry all technicians that moved since the last flush; a technician who sent several
    updates meanwhile is written once, at their newest position."""

    def __init__(self, redis: aioredis.Redis, max_batch: int = 20_000) -> None:
        self._redis = redis
        self._max_batch = max_batch
        self._pending: dict[str, tuple[float, float]] = {}
        self._flushed: asyncio.Future[None] | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="position-writer")

    async def stop(self) -> None:
        if self._task is not None:
            await lifecycle.stop([self._task])

    def put(self, technician: str, lng: float, lat: float) -> asyncio.Future[None]:
        """Queue a position; the returned future completes once it is in Redis."""
        self._pending[technician] = (lng, lat)
        if self._flushed is None:
            self._flushed = asyncio.get_running_loop().create_future()
        self._wake.set()
        return self._flushed

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            pending, self._pending = self._pending, {}
            flushed, self._flushed = self._flushed, None
            try:
                await self._write(pending)
            except (aioredis.RedisError, OSError) as exc:
                if lifecycle.cancelling():
                    raise
                log.warning("position batch of %d lost: %s", len(pending), exc)
                if flushed is not None and not flushed.done():
                    flushed.set_exception(exc)
                    flushed.exception()  # retrieved: fire-and-forget updates have no waiter
                continue
            if flushed is not None and not flushed.done():
                flushed.set_result(None)

    async def _write(self, pending: dict[str, tuple[float, float]]) -> None:
        now = time.time()
        items = list(pending.items())
        pipe = self._redis.pipeline(transaction=False)
        for start in range(0, len(items), self._max_batch):
            chunk = items[start:start + self._max_batch]
            positions: list[float | str] = []
            seen: dict[str, float] = {}
            for technician, (lng, lat) in chunk:
                if not indexable(lng, lat):  # one such item would fail the whole GEOADD
                    log.warning("position of %s refused by the GEO index: %r, %r", technician, lng, lat)
                    REFUSED.labels("positions").inc()
                    continue
                positions += (lng, lat, technician)
                seen[technician] = now
            if positions:
                pipe.geoadd(TECHS, positions)
                pipe.zadd(SEEN, seen)
        await pipe.execute()
        WRITTEN.inc(len(items))


async def go_off_duty(redis: aioredis.Redis, technician: str) -> None:
    pipe = redis.pipeline(transaction=True)
    pipe.zrem(TECHS, technician)
    pipe.zrem(SEEN, technician)
    await pipe.execute()


async def set_filters(redis: aioredis.Redis, technician: str, brands: list[str], services: list[str]) -> None:
    await set_many_filters(redis, [(technician, brands, services)])


async def set_many_filters(redis: aioredis.Redis, rows: list[tuple[str, list[str], list[str]]]) -> None:
    """Each technician's feed filters (none: the entry goes), in one round trip."""
    kept = {t: ",".join(brands) + "|" + ",".join(services) for t, brands, services in rows if brands or services}
    dropped = [t for t, brands, services in rows if not (brands or services)]
    pipe = redis.pipeline(transaction=False)
    if kept:
        pipe.hset(FILTERS, mapping=kept)  # type: ignore[arg-type]
    if dropped:
        pipe.hdel(FILTERS, *dropped)
    await pipe.execute()


async def position(redis: aioredis.Redis, technician: str) -> tuple[float, float] | None:
    found = await redis.geopos(TECHS, technician)
    return (found[0][0], found[0][1]) if found and found[0] else None


async def sweep_stale(redis: aioredis.Redis, older_than_s: float) -> int:
    """Remove technicians whose last update is older than the limit; returns how many."""
    stale = await redis.zrangebyscore(SEEN, "-inf", time.time() - older_than_s, start=0, num=10_000)
    if stale:
        pipe = redis.pipeline(transaction=False)
        pipe.zrem(TECHS, *stale)
        pipe.zrem(SEEN, *stale)
        await pipe.execute()
    return len(stale)


async def technicians_within(redis: aioredis.Redis, lng: float, lat: float,
                             radius_mi: float) -> list[tuple[str, float]]:
    """Every on-duty technician in the circle with their distance: an announcement must reach
    them all, so this is the one unbounded search (it runs once per order opening, not per
    feed request)."""
    found: Any = await redis.geosearch(TECHS, longitude=lng, latitude=lat, radius=radius_mi,
                                                   unit="mi", withdist=True)
    return [(member.decode(), float(distance)) for member, distance in found]


async def filters_of(redis: aioredis.Redis, technicians: list[str]) -> dict[str, tuple[set[str], set[str]]]:
    """The feed filters of those technicians that have any."""
    if not technicians or not await redis.hlen(FILTERS):
        return {}
    values: Any = await redis.hmget(FILTERS, technicians)
    filters = {}
    for technician, value in zip(technicians, values, strict=True):
        if value:
            brands, services = value.decode().split("|")
            filters[technician] = ({b for b in brands.split(",") if b}, {s for s in services.split(",") if s})
    return filters


PoolEntry = tuple[str, float, float, str, str, bytes]  # order id, lng, lat, brand, service, pool view


def _add(pipe: aioredis.client.Pipeline, entry: PoolEntry) -> bool:
    """Queue the entry's commands; False (nothing queued, logged, counted) when the index cannot
    hold it, so that one bad row never fails a pipeline or a rebuild."""
    order_id, lng, lat, brand, service, view = entry
    if not indexable(lng, lat):
        log.warning("open order %s left out of the pool: the GEO index cannot hold %r, %r", order_id, lng, lat)
        REFUSED.labels("orders").inc()
        return False
    for key in order_indexes(brand, service):
        pipe.geoadd(key, (lng, lat, order_id))
    pipe.hset(POOL, order_id, view)
    pipe.hset(POOL_META, order_id, f"{brand}|{service}")
    return True


async def pool_add(redis: aioredis.Redis, entry: PoolEntry) -> bool:
    """Put an open order in the pool; False when the index cannot hold it (see `_add`)."""
    pipe = redis.pipeline(transaction=True)
    if not _add(pipe, entry):
        return False
    await pipe.execute()
    return True


async def sizes(redis: aioredis.Redis, stale_after_s: float) -> tuple[int, int, int]:
    """(technicians in the position index, those of them not heard from in `stale_after_s`, open
    orders in the pool), in one round trip: what the gateway's gauges show."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zcard(TECHS)
        pipe.zcount(SEEN, "-inf", time.time() - stale_after_s)
        pipe.hlen(POOL)
        techs, stale, pool = await pipe.execute()
    return int(techs), int(stale), int(pool)


async def pool_size(redis: aioredis.Redis) -> int:
    size: int = await redis.hlen(POOL)
    return size


async def pool_ids(redis: aioredis.Redis) -> list[str]:
    ids: list[bytes | str] = await redis.hkeys(POOL)
    return [i.decode() if isinstance(i, bytes) else i for i in ids]


async def pool_missing(redis: aioredis.Redis, order_ids: list[str]) -> list[str]:
    """Of these orders, the ones not in the pool."""
    missing = []
    for start in range(0, len(order_ids), 1000):
        chunk = order_ids[start:start + 1000]
        metas: Any = await redis.hmget(POOL_META, chunk)
        missing += [o for o, meta in zip(chunk, metas, strict=True) if meta is None]
    return missing


async def pool_remove(redis: aioredis.Redis, order_ids: Iterable[str]) -> None:
    ids = list(order_ids)
    metas: Any = await redis.hmget(POOL_META, ids) if ids else []
    pipe = redis.pipeline(transaction=True)
    for order_id, meta in zip(ids, metas, strict=True):
        if meta is not None:
            brand, service = meta.decode().split("|")
            for key in order_indexes(brand, service):
                pipe.zrem(key, order_id)
        pipe.hdel(POOL, order_id)
        pipe.hdel(POOL_META, order_id)
    await pipe.execute()


async def decline(redis: aioredis.Redis, technician: str, order_id: str) -> None:
    pipe = redis.pipeline(transaction=False)
    pipe.sadd(declined_key(technician), order_id)
    pipe.expire(declined_key(technician), DECLINED_TTL_S)
    await pipe.execute()


# One round trip for the feed: a bounded GEOSEARCH (COUNT, nearest first) over-fetching by the
# number of declined orders, the declined ones skipped, then the page's pool views.
NEARBY_SCRIPT = """
local declined = KEYS[3]
local wanted = tonumber(ARGV[4]) + tonumber(ARGV[5]) + 1  -- one more: is there a next page?
local found = redis.call('GEOSEARCH', KEYS[1], 'FROMLONLAT', ARGV[1], ARGV[2], 'BYRADIUS', ARGV[3], 'mi',
                         'ASC', 'COUNT', wanted + redis.call('SCARD', declined), 'WITHDIST')
local ids, dists, skipped = {}, {}, 0
for _, item in ipairs(found) do
  if redis.call('SISMEMBER', declined, item[1]) == 0 then
    skipped = skipped + 1
    if skipped > tonumber(ARGV[4]) and #ids < tonumber(ARGV[5]) then
      ids[#ids + 1] = item[1]
      dists[#dists + 1] = item[2]
    end
  end
end
local more = 0
if skipped > tonumber(ARGV[4]) + #ids then more = 1 end
if #ids == 0 then return {{}, {}, {}, more} end
return {ids, dists, redis.call('HMGET', KEYS[2], unpack(ids)), more}
"""


class NearbySearch:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._script = redis.register_script(NEARBY_SCRIPT)

    async def __call__(self, technician: str, lng: float, lat: float, radius_mi: float, brand: str | None,
                       service: str | None, offset: int, limit: int) -> tuple[list[tuple[str, float, bytes]], bool]:
        """[(order id, miles, pool view)] nearest first, and whether more follow."""
        ids, dists, views, more = await self._script(
            keys=[order_index(brand, service), POOL, declined_key(technician)],
            args=[lng, lat, radius_mi, offset, limit])
        page = [(i.decode(), float(d), v) for i, d, v in zip(ids, dists, views, strict=True) if v is not None]
        return page, bool(more)


async def ensure_pool(redis: aioredis.Redis, load_open: Callable[[], Awaitable[list[PoolEntry]]]) -> bool:
    """Rebuild the pool from PostgreSQL if Redis lost it; True when it did."""
    if await redis.exists(POOL_BUILT):
        return False
    open_orders = await load_open()
    added = 0
    for start in range(0, len(open_orders), 1000):
        pipe = redis.pipeline(transaction=False)
        added += sum(_add(pipe, entry) for entry in open_orders[start:start + 1000])
        await pipe.execute()
    await redis.set(POOL_BUILT, "1")
    log.info("rebuilt the open-order pool from PostgreSQL: %d orders (%d left out)", added, len(open_orders) - added)
    return True


async def recent_positions(redis: aioredis.Redis, limit: int) -> tuple[list[tuple[str, float, float, float]], bool]:
    """(the `limit` most recently seen technicians as (id, lng, lat, unix time seen), whether there
    are more), in one round trip."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zrevrange(SEEN, 0, limit - 1, withscores=True)
        pipe.zcard(SEEN)
        seen, count = await pipe.execute()
    if not seen:
        return [], False
    members = [member for member, _ in seen]
    positions: Any = await redis.geopos(TECHS, *members)
    found = [(member.decode(), pos[0], pos[1], float(at))
             for (member, at), pos in zip(seen, positions, strict=True) if pos]
    return found, int(count) > limit
