"""Connections: the asyncpg pool and the Redis client."""

from typing import Any
from urllib.parse import urlparse

import asyncpg
import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel


async def connect_postgres(url: str, size: int) -> asyncpg.Pool:
    pool: asyncpg.Pool = await asyncpg.create_pool(url, min_size=min(2, size), max_size=size,
                                                   command_timeout=30, reset=_no_reset)
    return pool


async def _no_reset(conn: asyncpg.Connection) -> None:
    """Connections go back to the pool as they are: asyncpg's reset query would cost a round trip
    per use. The one piece of session state anything here takes, the money scheduler's order lock
    (handlers.money.scheduler), is released by its taker, or its connection is terminated, never pooled."""


def connect_redis(url: str | None, sentinels: list[tuple[str, int]] | None = None,
                  master: str = "mymaster") -> aioredis.Redis:
    """A client of `url`, or, with Sentinels, of whichever server they name as the master: after a
    failover, connections to the old master fail (`unavailable` meanwhile) and new ones go to the
    new master. With Sentinels, `url` (optional) gives only the password and database number."""
    options: dict[str, Any] = {"health_check_interval": 30, "socket_keepalive": True}
    if not sentinels:
        assert url is not None
        return aioredis.Redis.from_url(url, **options)
    if url:
        parsed = urlparse(url)
        options |= {"password": parsed.password, "username": parsed.username,
                    "db": int(parsed.path.strip("/") or 0)}
    sentinel = Sentinel(sentinels, socket_timeout=2, socket_connect_timeout=2)  # type: ignore[no-untyped-call]
    client: aioredis.Redis = sentinel.master_for(master, socket_connect_timeout=2, **options)
    return client
