"""The back office's append-only audit log: one row per action or personal-data read."""

from datetime import datetime
from typing import Any, TypeAlias

import asyncpg
import msgspec

Conn: TypeAlias = asyncpg.Connection | asyncpg.Pool


async def append(db: Conn, *, actor_id: str, actor_role: str, action: str, target_kind: str | None,
                 target_id: str | None, outcome: str, request: dict[str, Any]) -> None:
    await db.execute(
        "INSERT INTO admin_log (actor_id, actor_role, action, target_kind, target_id, outcome, request)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)",
        actor_id, actor_role, action, target_kind, target_id, outcome, msgspec.json.encode(request).decode())


async def entries(db: Conn, *, actor_id: str | None, action: str | None, target_id: str | None,
                  since: datetime | None, until: datetime | None, before: int | None,
                  limit: int) -> list[asyncpg.Record]:
    """Newest first, keyset-paginated on id."""
    rows: list[asyncpg.Record] = await db.fetch(
        "SELECT id, at, actor_id, actor_role, action, target_kind, target_id, outcome, request::text AS request"
        " FROM admin_log WHERE ($1::text IS NULL OR actor_id = $1) AND ($2::text IS NULL OR action = $2)"
        " AND ($3::text IS NULL OR target_id = $3) AND ($4::timestamptz IS NULL OR at >= $4)"
        " AND ($5::timestamptz IS NULL OR at < $5) AND ($6::bigint IS NULL OR id < $6)"
        " ORDER BY id DESC LIMIT $7", actor_id, action, target_id, since, until, before, limit)
    return rows
