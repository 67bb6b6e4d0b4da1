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

from bench.load import Children, Hooks, Tally, measure_window
from bench.session import Counts
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
