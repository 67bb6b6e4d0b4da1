"""The feed's baseline: its GEOSEARCH sent straight to Redis, no gateway in between.

One client process on uvloop runs `concurrency` coroutines, each sending the command with
redis-py's asyncio client (hiredis parses the replies) and the next one when the reply is in: the
same closed loop, with as many requests in flight, as the websocket sessions keep on the gateway.
"""

import asyncio
import time
from multiprocessing.connection import Connection
from typing import Any

import redis.asyncio as aioredis
from hdrh.histogram import HdrHistogram

from bench.load import Children, Hooks, Tally, measure_window
from bench.session import HIGHEST_US, Counts, histogram
from storage import geo


def feed_search(lng: float, lat: float, radius_mi: float, limit: int) -> tuple[Any, ...]:
    """What the feed's script asks Redis first for a technician without declines: the nearest
    `limit` + 1 open orders in the circle (one more: is there a next page?), with distances."""
    return ("GEOSEARCH", geo.order_index(), "FROMLONLAT", lng, lat, "BYRADIUS", radius_mi, "mi", "ASC",
            "COUNT", limit + 1, "WITHDIST")


class RedisLoop(Children):
    """`with RedisLoop(url, command, 16) as rl: rl.open(30); rl.loop(warmup, seconds, redis_pid)`."""

    def __init__(self, url: str, command: tuple[Any, ...], concurrency: int, cpus: set[int] | None = None) -> None:
        super().__init__("bench-redis-client", _drive, [(url, command, concurrency)], cpus)

    def loop(self, warmup: float, seconds: float, redis_pid: int, hooks: Hooks | None = None) -> Tally:
        """Replies and their latencies in the last `seconds`; Redis is the server."""
        tally = measure_window(lambda *moments: self._send(("loop", *moments)), self.cpu, warmup, seconds,
                               redis_pid, hooks, {})
        tally.add(self._gather(seconds + 60, "looped")[0][1])
        return tally


async def _drive(pipe: Connection, url: str, command: tuple[Any, ...], concurrency: int) -> None:
    client = aioredis.Redis.from_url(url, max_connections=concurrency)
    try:
        await asyncio.gather(*(client.ping() for _ in range(concurrency)))  # open the connections first
        pipe.send(("ready", concurrency, 0, ""))
        while True:
            message = await asyncio.to_thread(pipe.recv)
            if message[0] != "loop":
                break
            _, start, t_from, t_until = message
            pipe.send(("looped", await _loop(client, command, concurrency, start, t_from, t_until)))
    finally:
        await client.aclose()
    pipe.send(("closed",))


async def _loop(client: aioredis.Redis, command: tuple[Any, ...], concurrency: int, start: float, t_from: float,
                t_until: float) -> Counts:
    counts = Counts()
    await asyncio.sleep(max(0.0, start - time.monotonic()))

    async def one() -> None:
        while (sent := time.monotonic()) < t_until:
            try:
                await client.execute_command(*command)  # type: ignore[no-untyped-call]
            except aioredis.RedisError:
                counts.errors += 1
                continue
            now = time.monotonic()
            if sent >= t_from and now < t_until:
                counts.replies += 1
                counts.latencies.append(now - sent)

    await asyncio.gather(*(one() for _ in range(concurrency)))
    return counts


class RedisPaced(Children):
    """The open-loop baseline: the command sent at a fixed rate on a timetable, each on a
    connection of a pool of `concurrency` (waiting for one when all are busy, which counts in
    its latency), latencies from when it was due.
    `with RedisPaced(url, command, 64) as rp: rp.open(30); rp.paced(rate, warmup, seconds, redis_pid)`."""

    def __init__(self, url: str, command: tuple[Any, ...], concurrency: int, cpus: set[int] | None = None) -> None:
        super().__init__("bench-redis-paced", _drive_paced, [(url, command, concurrency)], cpus)

    def paced(self, rate: float, warmup: float, seconds: float, redis_pid: int) -> tuple[Tally, HdrHistogram]:
        tally = measure_window(lambda *moments: self._send(("paced", *moments, rate)), self.cpu, warmup, seconds,
                               redis_pid, None, {})
        _, counts, encoded = self._gather(seconds + 60, "paced")[0]
        tally.add(counts)
        merged = histogram()
        merged.decode_and_add(encoded)
        return tally, merged


async def _drive_paced(pipe: Connection, url: str, command: tuple[Any, ...], concurrency: int) -> None:
    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=concurrency, timeout=None,
                                                    socket_connect_timeout=60)
    client = aioredis.Redis(connection_pool=pool)
    try:
        await asyncio.gather(*(client.ping() for _ in range(concurrency)))
        pipe.send(("ready", concurrency, 0, ""))
        while True:
            message = await asyncio.to_thread(pipe.recv)
            if message[0] != "paced":
                break
            _, start, t_from, t_until, rate = message
            pipe.send(("paced", *await _paced(client, command, start, t_from, t_until, rate)))
    finally:
        await client.aclose()
        await pool.disconnect()
    pipe.send(("closed",))


async def _paced(client: aioredis.Redis, command: tuple[Any, ...], start: float, t_from: float, t_until: float,
                 rate: float) -> tuple[Counts, bytes]:
    counts, h = Counts(), histogram()
    tasks: set[asyncio.Task[None]] = set()

    async def one(due: float) -> None:
        try:
            await client.execute_command(*command)  # type: ignore[no-untyped-call]
        except aioredis.RedisError:
            counts.errors += 1
            return
        if due >= t_from:
            now = time.monotonic()
            counts.replies += 1
            counts.finished = max(counts.finished, now)
            h.record_value(max(1, min(HIGHEST_US, int((now - due) * 1e6))))

    k = 0
    while (due := start + k / rate) < t_until:
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        task = asyncio.create_task(one(due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        k += 1
    if tasks:
        await asyncio.wait(tasks, timeout=60)
    return counts, h.encode()
