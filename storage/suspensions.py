"""Suspensions of users (migration 0015): one row per suspension, lifted rather than deleted."""

import uuid
from typing import TypeAlias

import asyncpg

from storage.users import token_hash

Conn: TypeAlias = asyncpg.Connection | asyncpg.Pool
COLUMNS = "id, user_id, reason, suspended_at, suspended_by, lifted_at, lifted_by"
HELD = ("accepted", "en_route", "in_service")  # an order's states while a technician holds it


async def in_force(db: Conn, user_id: str) -> bool:
    """Whether the user is suspended now: one probe of the index of suspensions in force."""
    return bool(await db.fetchval("SELECT EXISTS (SELECT 1 FROM suspensions WHERE user_id = $1"
                                  " AND lifted_at IS NULL)", user_id))


async def in_force_among(db: Conn, user_ids: list[str]) -> set[str]:
    """Those of the users suspended now, in one probe (`in_force` for many)."""
    rows = await db.fetch("SELECT user_id FROM suspensions WHERE user_id = ANY($1::text[])"
                          " AND lifted_at IS NULL", user_ids)
    return {row["user_id"] for row in rows}


async def of_refresh_token(db: Conn, token: str) -> bool:
    """Whether the refresh token (live, spent or revoked) belongs to a suspended user."""
    return bool(await db.fetchval(
        "SELECT EXISTS (SELECT 1 FROM refresh_tokens t JOIN suspensions s ON s.user_id = t.user_id::text"
        " AND s.lifted_at IS NULL WHERE t.token_hash = $1)", token_hash(token)))


async def suspend(db: Conn, user_id: str, reason: str, by: str) -> asyncpg.Record | None:
    """The new suspension; None when one is already in force."""
    row: asyncpg.Record | None = await db.fetchrow(
        "INSERT INTO suspensions (user_id, reason, suspended_by) VALUES ($1, $2, $3)"
        f" ON CONFLICT (user_id) WHERE lifted_at IS NULL DO NOTHING RETURNING {COLUMNS}", user_id, reason, by)
    return row


async def lift(db: Conn, user_id: str, by: str) -> asyncpg.Record | None:
    """The suspension in force, now lifted; None when there was none."""
    row: asyncpg.Record | None = await db.fetchrow(
        "UPDATE suspensions SET lifted_at = clock_timestamp(), lifted_by = $2 WHERE user_id = $1"
        f" AND lifted_at IS NULL RETURNING {COLUMNS}", user_id, by)
    return row


async def revoke_refresh_tokens(db: Conn, user_id: str) -> int:
    """Revoke every live refresh token of the user; how many. Ids that are not UUIDs have no account."""
    try:
        account = uuid.UUID(user_id)
    except ValueError:
        return 0
    status: str = await db.execute("UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = $1"
                                   " AND revoked_at IS NULL", account)
    return int(status.split()[-1])


async def held_orders(db: Conn, user_id: str) -> list[asyncpg.Record]:
    """Orders the user holds as their technician, or awaits as their consumer, not yet finished."""
    rows: list[asyncpg.Record] = await db.fetch(
        "SELECT id::text AS id, state, technician_id = $1 AS as_technician FROM orders"
        " WHERE (technician_id = $1 AND state = ANY($2::text[]))"
        " OR (consumer_id = $1 AND state NOT IN ('completed', 'cancelled')) ORDER BY created_at, id",
        user_id, list(HELD))
    return rows


async def history(db: Conn, *, user_id: str | None, in_force_only: bool, before: int | None,
                  limit: int) -> list[asyncpg.Record]:
    """Newest first, keyset-paginated on id."""
    rows: list[asyncpg.Record] = await db.fetch(
        f"SELECT {COLUMNS} FROM suspensions WHERE ($1::text IS NULL OR user_id = $1)"
        " AND (NOT $2 OR lifted_at IS NULL) AND ($3::bigint IS NULL OR id < $3) ORDER BY id DESC LIMIT $4",
        user_id, in_force_only, before, limit)
    return rows
