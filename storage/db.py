"""Connections: the asyncpg pool and the Redis client."""

import asyncpg
import redis.asyncio as aioredis


async def connect_postgres(url: str, size: int) -> asyncpg.Pool:
    pool: asyncpg.Pool = await asyncpg.create_pool(url, min_size=min(2, size), max_size=size,
                                                   command_timeout=30, reset=_no_reset)
    return pool


async def _no_reset(conn: asyncpg.Connection) -> None:
    """Connections go back to the pool as they are: asyncpg's reset query would cost a round trip
    per use. The one piece of session state anything here takes, the money scheduler's order lock
    (handlers.money.scheduler), is released by its taker, or its connection is terminated, never pooled."""


def connect_redis(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(url, health_check_interval=30, socket_keepalive=True)
