"""Orders, their timeline, declines, technicians' duty state and the catalog prices."""

import uuid
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from protocol.bounds import MAX_LATITUDE

OPEN_STATES = ("open",)


async def catalog_price(db: asyncpg.Pool, brand: str, sku: str, service: str) -> asyncpg.Record | None:
    return await db.fetchrow(
        "SELECT p.price_cents, p.currency, (b.retired OR s.retired OR p.retired) AS retired"
        " FROM catalog_prices p JOIN skus s ON s.id = p.sku_id JOIN brands b ON b.id = s.brand_id"
        " WHERE s.id = $1 AND s.brand_id = $2 AND p.service_type = $3", sku, brand, service)


async def owned_attachments(db: asyncpg.Pool, ids: list[uuid.UUID], owner: str) -> int:
    count: int = await db.fetchval("SELECT count(*) FROM attachments WHERE id = ANY($1::uuid[]) AND owner_id = $2",
                                   ids, owner)
    return count


async def create(db: asyncpg.Pool | asyncpg.Connection, order_id: uuid.UUID, *, consumer_id: str, created_by: str,
                 actor_role: str, brand: str, sku: str, service: str, description: str, address_enc: bytes, lat: float,
                 lng: float, attachments: list[uuid.UUID], window_start: datetime | None,
                 window_end: datetime | None, price_cents: int, currency: str,
                 paid: bool = False, customer_enc: bytes | None = None, ai_conversation_id: uuid.UUID | None = None,
                 ai_summary_enc: bytes | None = None) -> asyncpg.Record:
    """Insert the order, its first timeline entry and its chat room's row (no message yet) in one
    statement. A `paid` order waits for its payment (state awaiting_payment) before it opens. The
    room's row exists before any message, so `chat.missed` always has a row to wait on."""
    row: asyncpg.Record = await db.fetchrow(
        "WITH created AS (INSERT INTO orders (id, consumer_id, created_by, brand_id, sku_id, service_type,"
        " description, address_enc, lat, lng, attachments, window_start, window_end, price_cents, currency,"
        " state, payment_state, customer_enc, ai_conversation_id, ai_summary_enc)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,"
        " CASE WHEN $17 THEN 'awaiting_payment' ELSE 'open' END, CASE WHEN $17 THEN 'unpaid' END, $18, $19, $20)"
        " RETURNING *),"
        " logged AS (INSERT INTO order_events (order_id, actor_id, actor_role, from_state, to_state)"
        " SELECT id, $3, $16, NULL, state FROM created),"
        " room AS (INSERT INTO chat_rooms (order_id, last_seq) SELECT id, 0 FROM created)"
        " SELECT *, NULL::text AS previous_state FROM created",
        order_id, consumer_id, created_by, brand, sku, service, description, address_enc, lat, lng, attachments,
        window_start, window_end, price_cents, currency, actor_role, paid, customer_enc, ai_conversation_id,
        ai_summary_enc)
    return row


async def only_brands(db: asyncpg.Pool | asyncpg.Connection, consumer_id: str, brands: list[str]) -> bool:
    """Whether every order of the consumer is of one of these brands."""
    return not await db.fetchval("SELECT EXISTS (SELECT 1 FROM orders WHERE consumer_id = $1"
                                 " AND NOT brand_id = ANY($2::text[]))", consumer_id, brands)


async def get(db: asyncpg.Pool, order_id: uuid.UUID) -> asyncpg.Record | None:
    return await db.fetchrow("SELECT * FROM orders WHERE id = $1", order_id)


async def move(db: asyncpg.Pool | asyncpg.Connection, order_id: uuid.UUID, *, from_states: tuple[str, ...],
               to_state: str, actor_id: str, actor_role: str, guard: str = "TRUE", sets: str = "",
               args: tuple[Any, ...] = (), details: dict[str, Any] | None = None) -> asyncpg.Record | None:
    """One state transition as one conditional statement: the row is locked, the transition
    applies only from `from_states` and when `guard` holds, and the timeline entry is written
    with it. None when it did not apply (the caller looks at the order to say why). The row
    returned has the order's `previous_state`, `previous_technician_id` and `previous_since` (when
    it entered its previous state, as far as any change shows: its last update) too.

    `guard` and `sets` are SQL fragments from the caller's code (never input) over the columns of
    `orders o`; in them $4 is the actor's id, and their own parameters, `args`, are $7 on."""
    return await db.fetchrow(
        "WITH old AS (SELECT id, state, technician_id, updated_at FROM orders WHERE id = $1 FOR UPDATE),"
        f" moved AS (UPDATE orders o SET state = $2, updated_at = now(){sets} FROM old"
        f" WHERE o.id = old.id AND old.state = ANY($3::text[]) AND ({guard})"
        " RETURNING o.*, old.state AS previous_state, old.technician_id AS previous_technician_id,"
        " old.updated_at AS previous_since),"
        " logged AS (INSERT INTO order_events (order_id, actor_id, actor_role, from_state, to_state, details)"
        " SELECT id, $4, $5, previous_state, state, $6::jsonb FROM moved)"
        " SELECT * FROM moved",
        order_id, to_state, list(from_states), actor_id, actor_role,
        msgspec.json.encode(details or {}).decode(), *args)


async def rate(db: asyncpg.Pool, order_id: uuid.UUID, consumer_id: str, stars: int,
               comment: str | None) -> asyncpg.Record | None:
    return await db.fetchrow(
        "UPDATE orders SET rating = $3, rating_comment = $4, updated_at = now()"
        " WHERE id = $1 AND consumer_id = $2 AND state = 'completed' AND rating IS NULL"
        " RETURNING *, state AS previous_state", order_id, consumer_id, stars, comment)


async def decline(db: asyncpg.Pool, order_id: uuid.UUID, technician: str) -> bool:
    """Record a decline of an open order; False when the order is not open."""
    status: str = await db.execute(
        "INSERT INTO order_declines (technician_id, order_id) SELECT $2, id FROM orders"
        " WHERE id = $1 AND state = 'open' ON CONFLICT DO NOTHING", order_id, technician)
    return status != "INSERT 0 0" or bool(await db.fetchval(
        "SELECT 1 FROM order_declines WHERE technician_id = $2 AND order_id = $1", order_id, technician))


async def decliners(db: asyncpg.Pool, order_id: uuid.UUID) -> set[str]:
    rows = await db.fetch("SELECT technician_id FROM order_declines WHERE order_id = $1", order_id)
    return {r["technician_id"] for r in rows}


async def timeline(db: asyncpg.Pool, order_id: uuid.UUID) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await db.fetch(
        "SELECT at, actor_id, actor_role, from_state, to_state, details FROM order_events"
        " WHERE order_id = $1 ORDER BY id", order_id)
    return rows


async def page(db: asyncpg.Pool, *, column: str | None, value: Any, state: str | None,
               after: tuple[datetime, uuid.UUID] | None, limit: int) -> list[asyncpg.Record]:
    """Newest first, keyset-paginated on (created_at, id). `column` is `consumer_id`,
    `technician_id`, `brand_id` (with a list value) or None for every order."""
    where = {"consumer_id": "consumer_id = $1", "technician_id": "technician_id = $1",
             "brand_id": "brand_id = ANY($1::text[])", None: "$1::text IS NULL"}[column]
    rows: list[asyncpg.Record] = await db.fetch(
        f"SELECT * FROM orders WHERE {where} AND ($2::text IS NULL OR state = $2)"
        " AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4))"
        " ORDER BY created_at DESC, id DESC LIMIT $5",
        value, state, after[0] if after else None, after[1] if after else None, limit)
    return rows


async def open_orders(db: asyncpg.Pool) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await db.fetch("SELECT * FROM orders WHERE state = 'open'")
    return rows


async def open_count(db: asyncpg.Pool) -> int:
    """Open orders the pool can hold (see storage.geo.indexable): what a whole pool has."""
    count: int = await db.fetchval("SELECT count(*) FROM orders WHERE state = 'open' AND abs(lat) <= $1"
                                   " AND abs(lng) <= 180", MAX_LATITUDE)
    return count


async def open_among(db: asyncpg.Pool, order_ids: list[str]) -> set[str]:
    """Which of these orders are open."""
    found = await db.fetch("SELECT id FROM orders WHERE id = ANY($1::uuid[]) AND state = 'open'", order_ids)
    return {str(r["id"]) for r in found}


async def settled_open_ids(db: asyncpg.Pool, older_than_s: float, within_s: float, limit: int) -> list[str]:
    """Open orders that last changed between `within_s` and `older_than_s` ago (their announcement
    is long done, or should be), newest first."""
    found = await db.fetch(
        "SELECT id FROM orders WHERE state = 'open' AND updated_at < now() - $1 * interval '1 second'"
        " AND updated_at > now() - $2 * interval '1 second' AND abs(lat) <= $4 AND abs(lng) <= 180"
        " ORDER BY updated_at DESC LIMIT $3",
        older_than_s, within_s, limit, MAX_LATITUDE)
    return [str(r["id"]) for r in found]


async def rows(db: asyncpg.Pool, order_ids: list[str]) -> list[asyncpg.Record]:
    found: list[asyncpg.Record] = await db.fetch("SELECT * FROM orders WHERE id = ANY($1::uuid[])", order_ids)
    return found


async def technician_stats(db: asyncpg.Pool, technician: str) -> asyncpg.Record:
    row: asyncpg.Record = await db.fetchrow(
        "SELECT (SELECT coalesce(sum(amount_cents - reversed_cents), 0) FROM transfers WHERE technician_id = $1)"
        " AS earnings, coalesce(sum(payout_cents) FILTER (WHERE t.order_id IS NULL), 0) AS pending,"
        " count(*) AS jobs, avg(rating)::float AS average, count(rating) AS ratings, min(o.currency) AS currency"
        " FROM orders o LEFT JOIN transfers t ON t.order_id = o.id"
        " WHERE o.technician_id = $1 AND o.state = 'completed'", technician)
    return row


async def set_duty(db: asyncpg.Pool, technician: str, on_duty: bool, brands: list[str] | None,
                   services: list[str] | None) -> asyncpg.Record:
    row: asyncpg.Record = await db.fetchrow(
        "INSERT INTO technicians (user_id, on_duty, brands, services) VALUES ($1, $2, coalesce($3::text[], '{}'),"
        " coalesce($4::text[], '{}')) ON CONFLICT (user_id) DO UPDATE SET on_duty = $2,"
        " brands = coalesce($3::text[], technicians.brands), services = coalesce($4::text[], technicians.services),"
        " updated_at = now() RETURNING *", technician, on_duty, brands, services)
    return row


async def duty(db: asyncpg.Pool, technician: str) -> bool:
    return bool(await db.fetchval("SELECT on_duty FROM technicians WHERE user_id = $1", technician))


async def duties(db: asyncpg.Pool, technicians: list[str]) -> dict[str, bool]:
    """`duty` for many technicians in one query: those with a row, whether they are on duty."""
    rows = await db.fetch("SELECT user_id, on_duty FROM technicians WHERE user_id = ANY($1::text[])", technicians)
    return {row["user_id"]: row["on_duty"] for row in rows}


async def duty_rows(db: asyncpg.Pool, technicians: list[str]) -> list[asyncpg.Record]:
    """The duty rows (user_id, brands, services) of those technicians who are on duty."""
    rows: list[asyncpg.Record] = await db.fetch(
        "SELECT user_id, brands, services FROM technicians WHERE on_duty AND user_id = ANY($1::text[])", technicians)
    return rows


async def known_duty(db: asyncpg.Pool, technician: str) -> bool | None:
    """Whether the technician is on duty; None when they never went on duty (no technician we know)."""
    on_duty: bool | None = await db.fetchval("SELECT on_duty FROM technicians WHERE user_id = $1", technician)
    return on_duty
