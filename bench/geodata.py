"""The orders bench's world: places, random positions around them or across the continental US,
and bulk loads that bypass the gateway (technicians straight into the Redis GEO index, open orders
straight into PostgreSQL with COPY)."""

import asyncio
import math
import random
import time
import uuid
from collections.abc import Sequence

import asyncpg
import redis

from handlers.orders.views import miles
from storage import geo

Place = tuple[float, float]  # (lat, lng), as people say them; Redis and the gateway's internals use (lng, lat)
CHICAGO: Place = (41.8781, -87.6298)  # dispatch
DALLAS: Place = (32.7767, -96.7970)  # the order feed
DENVER: Place = (39.7392, -104.9903)  # location ingest
US = (24.6, 49.0, -124.6, -67.0)  # the continental US, roughly: south, north, west, east
MILES_PER_DEGREE = 69.05  # of latitude; of longitude times cos(latitude)
DESCRIPTION = "Refrigerator stopped cooling: the freezer works but the fresh food section is at 55 F, no ice."
ADDRESS = "233 S Wacker Dr, Chicago, IL 60606"


def around(rng: random.Random, place: Place, radius_mi: float, count: int) -> list[Place]:
    """`count` positions spread evenly over the disc of `radius_mi` around `place`."""
    lat0, lng0 = place
    out: list[Place] = []
    while len(out) < count:
        r, bearing = radius_mi * math.sqrt(rng.random()), rng.uniform(0, 2 * math.pi)
        lat = lat0 + r * math.cos(bearing) / MILES_PER_DEGREE
        lng = lng0 + r * math.sin(bearing) / (MILES_PER_DEGREE * math.cos(math.radians(lat0)))
        if miles(lat0, lng0, lat, lng) < radius_mi:  # the flat approximation is a hair off near the edge
            out.append((lat, lng))
    return out


def nationwide(rng: random.Random, count: int, outside: tuple[Place, float] | None = None) -> list[Place]:
    """`count` positions spread evenly over the continental US (its bounding box), none within
    `outside` = (place, radius) if given."""
    south, north, west, east = US
    out: list[Place] = []
    while len(out) < count:
        lat, lng = rng.uniform(south, north), rng.uniform(west, east)
        if outside is None or miles(outside[0][0], outside[0][1], lat, lng) > outside[1]:
            out.append((lat, lng))
    return out


def seed_technicians(redis_url: str, positions: Sequence[Place], prefix: str = "seeded-") -> None:
    """Put technicians in the GEO index, seen now, as the position writer would: pipelined
    GEOADD + ZADD, 10,000 a round trip."""
    client = redis.Redis.from_url(redis_url)
    try:
        for start in range(0, len(positions), 10_000):
            chunk = positions[start:start + 10_000]
            members = [f"{prefix}{start + i}" for i in range(len(chunk))]
            flat: list[float | str] = []
            for member, (lat, lng) in zip(members, chunk, strict=True):
                flat += (lng, lat, member)
            pipe = client.pipeline(transaction=False)
            pipe.geoadd(geo.TECHS, flat)
            pipe.zadd(geo.SEEN, dict.fromkeys(members, time.time()))
            pipe.execute()
    finally:
        client.close()


def clear_technicians(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        client.delete(geo.TECHS, geo.SEEN)
    finally:
        client.close()


def seed_orders(database_url: str, positions: Sequence[Place]) -> None:
    """Open orders at those positions, with the catalog's products and prices, straight into the
    `orders` table (one COPY). Their addresses are not encrypted: nothing here reads them."""

    async def load() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            catalog = await conn.fetch("SELECT s.id AS sku, s.brand_id AS brand, p.service_type, p.price_cents,"
                                       " p.currency FROM catalog_prices p JOIN skus s ON s.id = p.sku_id")
            rng = random.Random(7)
            records = []
            for lat, lng in positions:
                item = rng.choice(catalog)
                consumer = str(uuid.uuid4())
                records.append((uuid.uuid4(), consumer, consumer, item["brand"], item["sku"], item["service_type"],
                                DESCRIPTION, b"bench: not an envelope", lat, lng, item["price_cents"],
                                item["currency"]))
            await conn.copy_records_to_table(
                "orders", records=records,
                columns=["id", "consumer_id", "created_by", "brand_id", "sku_id", "service_type", "description",
                         "address_enc", "lat", "lng", "price_cents", "currency"])
        finally:
            await conn.close()

    asyncio.run(load())


def rebuild_pool(redis_url: str, expected: int, timeout: float) -> float:
    """Make the gateway rebuild the pool from PostgreSQL (drop `pool:built`; its upkeep notices) and
    wait until Redis holds `expected` orders and the flag again; returns how long it took."""
    client = redis.Redis.from_url(redis_url)
    try:
        started = time.monotonic()
        client.delete(geo.POOL_BUILT)
        while time.monotonic() - started < timeout:
            if client.exists(geo.POOL_BUILT) and int(client.hlen(geo.POOL)) >= expected:
                return time.monotonic() - started
            time.sleep(0.2)
        raise TimeoutError(f"the pool held {client.hlen(geo.POOL)} of {expected} orders after {timeout:.0f} s")
    finally:
        client.close()


def time_geosearch(redis_url: str, place: Place, radius_mi: float, repeat: int) -> tuple[list[float], int]:
    """The announcement's search (every technician in the circle, with distances) from redis-py
    with hiredis, `repeat` times: (seconds each, technicians found)."""
    client = redis.Redis.from_url(redis_url)
    try:
        times, found = [], 0
        for _ in range(repeat):
            started = time.perf_counter()
            found = len(client.geosearch(geo.TECHS, longitude=place[1], latitude=place[0], radius=radius_mi,
                                         unit="mi", withdist=True))
            times.append(time.perf_counter() - started)
        return times, found
    finally:
        client.close()
