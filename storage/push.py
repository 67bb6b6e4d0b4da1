"""Device tokens, the push outbox and Redis presence (is a user connected anywhere?)."""

import time
from datetime import timedelta
from typing import Any

import asyncpg
import msgspec
import redis.asyncio as aioredis

PRESENCE_TTL_S = 45  # a process refreshes its users every 10 s; one that died stops counting after this


def presence_key(user_id: str) -> str:
    return "presence:" + user_id


async def mark_online(redis: aioredis.Redis, node: str, user_ids: list[str]) -> None:
    now = time.time()
    pipe = redis.pipeline(transaction=False)
    for user_id in user_ids:
        pipe.hset(presence_key(user_id), node, now)
        pipe.expire(presence_key(user_id), PRESENCE_TTL_S)
    await pipe.execute()


async def mark_offline(redis: aioredis.Redis, node: str, user_id: str) -> None:
    await redis.hdel(presence_key(user_id), node)


async def online(redis: aioredis.Redis, user_ids: list[str]) -> set[str]:
    """Those of the users with a live session on some gateway process."""
    pipe = redis.pipeline(transaction=False)
    for user_id in user_ids:
        pipe.hvals(presence_key(user_id))
    cutoff = time.time() - PRESENCE_TTL_S
    return {u for u, stamps in zip(user_ids, await pipe.execute(), strict=True)
            if any(float(s) > cutoff for s in stamps)}


async def register(db: asyncpg.Pool, user_id: str, token: str, platform: str) -> None:
    await db.execute(
        "INSERT INTO push_devices (token, user_id, platform) VALUES ($1, $2, $3)"
        " ON CONFLICT (token) DO UPDATE SET user_id = $2, platform = $3, created_at = now()",
        token, user_id, platform)


async def unregister(db: asyncpg.Pool, user_id: str, token: str) -> bool:
    status: str = await db.execute("DELETE FROM push_devices WHERE token = $1 AND user_id = $2", token, user_id)
    return status != "DELETE 0"


async def forget_token(db: asyncpg.Pool, token: str) -> None:
    await db.execute("DELETE FROM push_devices WHERE token = $1", token)


async def tokens(db: asyncpg.Pool, user_id: str) -> list[str]:
    rows = await db.fetch("SELECT token FROM push_devices WHERE user_id = $1 ORDER BY created_at", user_id)
    return [r["token"] for r in rows]


async def enqueue(conn: asyncpg.Connection | asyncpg.Pool, user_id: str, dedupe_key: str, title: str, body: str,
                  data: dict[str, str]) -> None:
    await conn.execute(
        "INSERT INTO push_outbox (user_id, dedupe_key, title, body, data) VALUES ($1, $2, $3, $4, $5::jsonb)"
        " ON CONFLICT (dedupe_key) DO NOTHING", user_id, dedupe_key, title, body, msgspec.json.encode(data).decode())


async def claim(db: asyncpg.Pool, batch: int, lease: timedelta) -> list[asyncpg.Record]:
    """Due jobs, leased to this worker: another worker skips them until the lease ends."""
    rows: list[asyncpg.Record] = await db.fetch(
        "UPDATE push_outbox SET attempts = attempts + 1, next_attempt_at = now() + $2::interval"
        " WHERE id IN (SELECT id FROM push_outbox WHERE state = 'pending' AND next_attempt_at <= now()"
        " ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) RETURNING *", batch, lease)
    return rows


async def finish(db: asyncpg.Pool, job_id: int, state: str, error: str | None = None,
                 retry_in: timedelta | None = None) -> None:
    """`sent`, `dead`, or back to `pending` with a delay."""
    await db.execute(
        "UPDATE push_outbox SET state = $2, last_error = $3, sent_at = CASE WHEN $2 = 'sent' THEN now() END,"
        " next_attempt_at = now() + coalesce($4::interval, '0 s'::interval) WHERE id = $1",
        job_id, state, error, retry_in)


def job_data(row: asyncpg.Record) -> dict[str, Any]:
    data: dict[str, Any] = msgspec.json.decode(row["data"])
    return data
