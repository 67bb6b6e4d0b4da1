"""The feed's baseline: its GEOSEARCH sent straight to Redis, no gateway in between.

One client process on uvloop runs `concurrency` coroutines, each sending the command with
redis-py's asyncio client (hiredis parses the replies) and the next one when the reply is in: the
same closed loop, with as many requests in flight, as the websocket sessions keep on the gateway.
"""

import asyncio
import contextlib
import multiprocessing
import os
import signal
import time
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import redis.asyncio as aioredis
import uvloop

from bench.load import Hooks, Tally, measure_window
from bench.procfs import cpu_seconds
from bench.session import Counts
from storage import geo


def feed_search(lng: float, lat: float, radius_mi: float, limit: int) -> tuple[Any, ...]:
    """What the feed's script asks Redis first for a technician without declines: the nearest
    `limit` + 1 open orders in the circle (one more: is there a next page?), with distances."""
    return ("GEOSEARCH", geo.order_index(), "FROMLONLAT", lng, lat, "BYRADIUS", radius_mi, "mi", "ASC",
            "COUNT", limit + 1, "WITHDIST")


class RedisLoop:
    """`with RedisLoop(url, command, 16) as rl: rl.loop(warmup, seconds, redis_pid)`."""

    def __init__(self, url: str, command: tuple[Any, ...], concurrency: int, cpus: set[int] | None = None) -> None:
        ctx = multiprocessing.get_context("fork")
        self.pipe, child = ctx.Pipe()
        self.process: BaseProcess = ctx.Process(target=_child, args=(child, url, command, concurrency),
                                                name="bench-redis-client", daemon=True)
        self._child_end = child
        self.cpus = cpus

    def __enter__(self) -> "RedisLoop":
        try:
            self.process.start()
            self._child_end.close()
            if self.cpus and self.process.pid is not None:
                os.sched_setaffinity(self.process.pid, self.cpus)
            self._expect("ready", 30)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def loop(self, warmup: float, seconds: float, redis_pid: int, hooks: Hooks | None = None) -> Tally:
        """Replies and their latencies in the last `seconds`; Redis is the server."""
        def start(*moments: float) -> None:
            self.pipe.send(("loop", *moments))

        def client_cpu() -> float:
            return cpu_seconds(self.process.pid) if self.process.pid is not None else 0.0

        tally = measure_window(start, client_cpu, warmup, seconds, redis_pid, hooks, {})
        tally.add(self._expect("looped", seconds + 60)[1])
        return tally

    def stop(self) -> None:
        if self.process.pid is not None and self.process.is_alive():
            with contextlib.suppress(OSError):
                self.pipe.send(("close",))
            self.process.join(5)
            if self.process.is_alive():
                self.process.kill()
                self.process.join(5)
        self.pipe.close()

    def _expect(self, what: str, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while not self.pipe.poll(0.2):
            if not self.process.is_alive():
                raise RuntimeError(f"the Redis client exited with {self.process.exitcode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the Redis client: no `{what}` within {timeout:.0f} s")
        reply = self.pipe.recv()
        if reply[0] != what:
            raise RuntimeError(f"the Redis client: {reply}")
        return reply


def _child(pipe: Connection, url: str, command: tuple[Any, ...], concurrency: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop, and cleans up
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    try:
        uvloop.run(_drive(pipe, url, command, concurrency))
    except BaseException as exc:
        with contextlib.suppress(OSError):
            pipe.send(("failed", f"{type(exc).__name__}: {exc}"))
        raise


async def _drive(pipe: Connection, url: str, command: tuple[Any, ...], concurrency: int) -> None:
    client = aioredis.Redis.from_url(url, max_connections=concurrency)
    try:
        await asyncio.gather(*(client.ping() for _ in range(concurrency)))  # open the connections first
        pipe.send(("ready",))
        while True:
            message = await asyncio.to_thread(pipe.recv)
            if message[0] != "loop":
                break
            _, start, t_from, t_until = message
            pipe.send(("looped", await _loop(client, command, concurrency, start, t_from, t_until)))
    finally:
        await client.aclose()


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
