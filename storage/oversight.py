"""The back office's reads of orders: the board's filtered, sorted, keyset-paginated page with its
total (one snapshot), and what one order's file gathers from the other domains' tables."""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from storage.chat import COLUMNS as CHAT_COLUMNS

# An order's payout, from its executed transfer and its latest transfer job.
PAYOUT_STATE = (
    "CASE WHEN t.order_id IS NOT NULL THEN"
    "   CASE WHEN t.reversed_cents >= t.amount_cents THEN 'reversed'"
    "        WHEN t.reversed_cents > 0 THEN 'partially_reversed' ELSE 'transferred' END"
    " WHEN j.state = 'failed' THEN 'failed'"
    " WHEN j.state IN ('pending', 'running', 'waiting') THEN 'pending' ELSE 'none' END")
PAYOUT_JOINS = (
    " LEFT JOIN transfers t ON t.order_id = o.id"
    " LEFT JOIN LATERAL (SELECT state FROM money_jobs WHERE order_id = o.id AND kind = 'transfer'"
    "                    ORDER BY id DESC LIMIT 1) j ON true")
COLUMNS = ("o.id, o.state, o.brand_id, o.sku_id, o.service_type, o.consumer_id, o.technician_id, o.price_cents,"
           " o.currency, o.payment_state, o.rating, o.created_at, o.updated_at")
# Every order with when it entered its state (its last transition); with its payout state (two more
# lookups per order) when a filter needs it, else that is added to the page's rows only.
BOARD = (f"SELECT {COLUMNS}, coalesce(e.at, o.created_at) AS state_since FROM orders o"
         " LEFT JOIN LATERAL (SELECT at FROM order_events WHERE order_id = o.id ORDER BY id DESC LIMIT 1) e ON true")
BOARD_WITH_PAYOUT = (f"SELECT {COLUMNS}, coalesce(e.at, o.created_at) AS state_since, {PAYOUT_STATE} AS payout_state"
                     " FROM orders o"
                     " LEFT JOIN LATERAL (SELECT at FROM order_events WHERE order_id = o.id ORDER BY id DESC LIMIT 1) e"
                     f" ON true{PAYOUT_JOINS}")
SORTS = {"created_at": "b.created_at", "updated_at": "b.updated_at", "state_since": "b.state_since"}
SETTLED = ("completed", "cancelled")  # states an order is never stuck in


@dataclass(frozen=True, slots=True, kw_only=True)
class Filters:
    """What the board's rows must match (None: anything). `brands` is the caller's scope."""

    brands: list[str] | None = None
    brand: str | None = None
    states: Sequence[str] | None = None
    sku: str | None = None
    technician_id: str | None = None
    consumer_id: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    payment_states: Sequence[str] | None = None  # 'none': the order needs no payment
    payout_states: Sequence[str] | None = None
    stuck_minutes: int | None = None
    id_range: tuple[uuid.UUID, uuid.UUID] | None = None  # `q`: an id prefix as the range of ids it covers
    q_sku: str | None = None  # `q`: a SKU (matched as given and upper-cased)


def _where(f: Filters, args: list[Any]) -> list[str]:
    """SQL conditions over the board's columns (`b.`); values appended to `args` as parameters."""

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    conds = []
    if f.brands is not None:
        conds.append(f"b.brand_id = ANY({arg(f.brands)}::text[])")
    for column, value in (("brand_id", f.brand), ("sku_id", f.sku), ("technician_id", f.technician_id),
                          ("consumer_id", f.consumer_id)):
        if value is not None:
            conds.append(f"b.{column} = {arg(value)}")
    if f.states is not None:
        conds.append(f"b.state = ANY({arg(list(f.states))}::text[])")
    if f.created_from is not None:
        conds.append(f"b.created_at >= {arg(f.created_from)}")
    if f.created_to is not None:
        conds.append(f"b.created_at < {arg(f.created_to)}")
    if f.payment_states is not None:
        paid = f"b.payment_state = ANY({arg([s for s in f.payment_states if s != 'none'])}::text[])"
        conds.append(f"({paid} OR b.payment_state IS NULL)" if "none" in f.payment_states else paid)
    if f.payout_states is not None:
        conds.append(f"b.payout_state = ANY({arg(list(f.payout_states))}::text[])")
    if f.stuck_minutes is not None:
        conds.append(f"b.state <> ALL({arg(list(SETTLED))}::text[])"
                     f" AND b.state_since < now() - {arg(f.stuck_minutes)} * interval '1 minute'")
    found = []
    if f.id_range is not None:
        found.append(f"b.id BETWEEN {arg(f.id_range[0])} AND {arg(f.id_range[1])}")
    if f.q_sku is not None:
        found.append(f"b.sku_id = ANY({arg(sorted({f.q_sku, f.q_sku.upper()}))}::text[])")
    if found:
        conds.append("(" + " OR ".join(found) + ")")
    return conds or ["TRUE"]


async def board(db: asyncpg.Pool, filters: Filters, *, sort: str, descending: bool,
                after: tuple[datetime, uuid.UUID] | None, limit: int) -> tuple[int, list[asyncpg.Record]]:
    """(how many orders match, the page after `after`: the last row's (sort key, id)), read from
    one snapshot so the total and the page agree."""
    args: list[Any] = []
    conds = _where(filters, args)
    payout = filters.payout_states is not None
    # Counting reads the derived columns only when a filter does (they cost lookups per order).
    counted = f"({BOARD_WITH_PAYOUT})" if payout else f"({BOARD})" if filters.stuck_minutes is not None else "orders"
    count_query = f"SELECT count(*) FROM {counted} b WHERE {' AND '.join(conds)}"
    count_args = list(args)
    key, direction = SORTS[sort], "DESC" if descending else "ASC"
    if after is not None:
        args.extend(after)
        conds.append(f"({key}, b.id) {'<' if descending else '>'} (${len(args) - 1}, ${len(args)})")
    args.append(limit)
    page_query = (f"SELECT * FROM ({BOARD_WITH_PAYOUT if payout else BOARD}) b WHERE {' AND '.join(conds)}"
                  f" ORDER BY {key} {direction}, b.id {direction} LIMIT ${len(args)}")
    if not payout:
        page_query = (f"SELECT o.*, {PAYOUT_STATE} AS payout_state FROM ({page_query}) o{PAYOUT_JOINS}"
                      f" ORDER BY {key.replace('b.', 'o.')} {direction}, o.id {direction}")
    async with db.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        total: int = await conn.fetchval(count_query, *count_args)
        rows: list[asyncpg.Record] = await conn.fetch(page_query, *args)
    return total, rows


async def board_row(db: asyncpg.Pool, order_id: uuid.UUID) -> asyncpg.Record | None:
    """The order's board row (its state_since and payout_state)."""
    return await db.fetchrow(f"SELECT * FROM ({BOARD_WITH_PAYOUT}) b WHERE b.id = $1", order_id)


async def system_messages(db: asyncpg.Pool, order_id: uuid.UUID) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await db.fetch(
        f"SELECT {CHAT_COLUMNS} FROM chat_messages WHERE order_id = $1 AND kind = 'system' ORDER BY seq", order_id)
    return rows


async def stripe_events(db: asyncpg.Pool, ids: list[str]) -> list[asyncpg.Record]:
    """The stored Stripe events about these objects (the payment's intent and charge, the transfer),
    oldest first; only their references are stored (migration 0007)."""
    rows: list[asyncpg.Record] = await db.fetch(
        "SELECT id, type, created, source, received_at, applied_at FROM stripe_events"
        " WHERE payload -> 'object' ->> 'id' = ANY($1::text[]) ORDER BY created, received_at, id", ids)
    return rows


async def attachments(db: asyncpg.Pool, ids: list[uuid.UUID]) -> dict[uuid.UUID, asyncpg.Record]:
    rows = await db.fetch("SELECT id, content_type, size FROM attachments WHERE id = ANY($1::uuid[])", ids)
    return {r["id"]: r for r in rows}


async def in_progress(db: asyncpg.Pool, brands: list[str] | None, limit: int) -> list[asyncpg.Record]:
    """The newest `limit` + 1 orders neither completed nor cancelled (of `brands`; None: every brand)."""
    rows: list[asyncpg.Record] = await db.fetch(
        "SELECT id, state, brand_id, sku_id, service_type, technician_id, lat, lng, created_at FROM orders"
        " WHERE state NOT IN ('completed', 'cancelled') AND ($1::text[] IS NULL OR brand_id = ANY($1))"
        " ORDER BY created_at DESC, id DESC LIMIT $2", brands, limit + 1)
    return rows
