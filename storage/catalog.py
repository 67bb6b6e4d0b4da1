"""The catalog's tables: reads for the cache, changes with their history and version bump,
merchants' brand memberships. Every change runs on a connection inside the caller's transaction."""

import uuid
from typing import Any, TypeAlias

import asyncpg
import msgspec

Conn: TypeAlias = asyncpg.Connection | asyncpg.Pool


def jsonb(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def unjson(value: str | None) -> Any:
    return None if value is None else msgspec.json.decode(value)


async def version(db: Conn) -> int:
    current: int = await db.fetchval("SELECT version FROM catalog_version")
    return current


async def snapshot(conn: asyncpg.Connection) -> dict[str, Any]:
    """The whole catalog and its version, read in one snapshot (call inside a repeatable-read
    transaction)."""
    return {
        "version": await version(conn),
        "brands": await conn.fetch("SELECT id, name, names, retired FROM brands ORDER BY id"),
        "categories": await conn.fetch("SELECT id, name, names FROM categories ORDER BY id"),
        "service_types": await conn.fetch("SELECT id, name, names FROM service_types ORDER BY id"),
        "skus": await conn.fetch("SELECT id, brand_id, category, name, names, retired FROM skus"
                                 " ORDER BY brand_id, id"),
        "prices": await conn.fetch("SELECT sku_id, service_type, price_cents, currency, retired FROM catalog_prices"
                                   " ORDER BY sku_id, service_type"),
    }


async def bump(conn: asyncpg.Connection) -> int:
    """The next catalog version. The row stays locked until the transaction ends, so changes to
    the catalog are serialized and each one's `before` is what the previous one left."""
    next_version: int = await conn.fetchval("UPDATE catalog_version SET version = version + 1 RETURNING version")
    return next_version


async def record(conn: asyncpg.Connection, *, actor_id: str, actor_role: str, kind: str, key: str,
                 brand: str | None, before: str | None, after: str) -> None:
    await conn.execute(
        "INSERT INTO catalog_history (actor_id, actor_role, kind, key, brand_id, before, after)"
        " VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb)", actor_id, actor_role, kind, key, brand, before, after)


# -- brands ---------------------------------------------------------------------------------------
async def brand(conn: Conn, brand_id: str) -> str | None:
    """The brand as JSON (locked when in a transaction), or None."""
    row: str | None = await conn.fetchval("SELECT to_jsonb(b) FROM brands b WHERE id = $1 FOR NO KEY UPDATE", brand_id)
    return row


async def save_brand(conn: asyncpg.Connection, brand_id: str, name: str, names: dict[str, str]) -> str:
    after: str = await conn.fetchval(
        "INSERT INTO brands AS b (id, name, names) VALUES ($1, $2, $3::jsonb)"
        " ON CONFLICT (id) DO UPDATE SET name = $2, names = b.names || $3::jsonb RETURNING to_jsonb(b)",
        brand_id, name, jsonb(names))
    return after


async def retire_brand(conn: asyncpg.Connection, brand_id: str, retired: bool) -> str:
    after: str = await conn.fetchval("UPDATE brands b SET retired = $2 WHERE id = $1 RETURNING to_jsonb(b)",
                                     brand_id, retired)
    return after


# -- SKUs -----------------------------------------------------------------------------------------
async def sku(conn: Conn, sku_id: str) -> asyncpg.Record | None:
    """(brand_id, doc) of the SKU (locked when in a transaction), or None."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT brand_id, to_jsonb(s) AS doc FROM skus s WHERE id = $1 FOR NO KEY UPDATE", sku_id)
    return row


async def category_exists(conn: Conn, category: str) -> bool:
    return bool(await conn.fetchval("SELECT 1 FROM categories WHERE id = $1", category))


async def category(conn: Conn, category_id: str) -> str | None:
    row: str | None = await conn.fetchval("SELECT to_jsonb(c) FROM categories c WHERE id = $1 FOR NO KEY UPDATE",
                                          category_id)
    return row


async def save_category(conn: asyncpg.Connection, category_id: str, name: str, names: dict[str, str]) -> str:
    after: str = await conn.fetchval(
        "INSERT INTO categories AS c (id, name, names) VALUES ($1, $2, $3::jsonb)"
        " ON CONFLICT (id) DO UPDATE SET name = $2, names = c.names || $3::jsonb RETURNING to_jsonb(c)",
        category_id, name, jsonb(names))
    return after


async def save_sku(conn: asyncpg.Connection, sku_id: str, brand_id: str, category: str, name: str,
                   names: dict[str, str]) -> str:
    after: str = await conn.fetchval(
        "INSERT INTO skus AS s (id, brand_id, category, name, names) VALUES ($1, $2, $3, $4, $5::jsonb)"
        " ON CONFLICT (id) DO UPDATE SET category = $3, name = $4, names = s.names || $5::jsonb"
        " RETURNING to_jsonb(s)", sku_id, brand_id, category, name, jsonb(names))
    return after


async def retire_sku(conn: asyncpg.Connection, sku_id: str, retired: bool) -> str:
    after: str = await conn.fetchval("UPDATE skus s SET retired = $2 WHERE id = $1 RETURNING to_jsonb(s)",
                                     sku_id, retired)
    return after


# -- prices ---------------------------------------------------------------------------------------
async def service_type_exists(conn: Conn, service_type: str) -> bool:
    return bool(await conn.fetchval("SELECT 1 FROM service_types WHERE id = $1", service_type))


async def price(conn: Conn, sku_id: str, service_type: str) -> str | None:
    row: str | None = await conn.fetchval(
        "SELECT to_jsonb(p) FROM catalog_prices p WHERE sku_id = $1 AND service_type = $2 FOR NO KEY UPDATE",
        sku_id, service_type)
    return row


async def save_price(conn: asyncpg.Connection, sku_id: str, service_type: str, price_cents: int,
                     currency: str) -> str:
    after: str = await conn.fetchval(
        "INSERT INTO catalog_prices AS p (sku_id, service_type, price_cents, currency) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (sku_id, service_type) DO UPDATE SET price_cents = $3, currency = $4 RETURNING to_jsonb(p)",
        sku_id, service_type, price_cents, currency)
    return after


async def retire_price(conn: asyncpg.Connection, sku_id: str, service_type: str, retired: bool) -> str:
    after: str = await conn.fetchval(
        "UPDATE catalog_prices p SET retired = $3 WHERE sku_id = $1 AND service_type = $2 RETURNING to_jsonb(p)",
        sku_id, service_type, retired)
    return after


# -- guides ---------------------------------------------------------------------------------------
async def guide(conn: Conn, guide_id: uuid.UUID) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT brand_id, to_jsonb(g) - 'search' AS doc FROM catalog_guides g WHERE id = $1 FOR NO KEY UPDATE",
        guide_id)
    return row


async def save_guide(conn: asyncpg.Connection, guide_id: uuid.UUID, brand_id: str | None, sku_id: str | None,
                     locale: str, title: str, body: str, *, category: str | None = None, symptoms: str = "",
                     checks: str = "[]", call_when: str = "", likely_parts: list[str] | None = None,
                     urgency: str = "normal") -> str:
    """Insert or replace a guide; `checks` is its JSON list. The search vector follows (generated)."""
    after: str = await conn.fetchval(
        "INSERT INTO catalog_guides AS g (id, brand_id, sku_id, locale, title, body, category, symptoms, checks,"
        " call_when, likely_parts, urgency) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10, $11, $12)"
        " ON CONFLICT (id) DO UPDATE SET sku_id = $3, locale = $4, title = $5, body = $6, category = $7,"
        " symptoms = $8, checks = $9::jsonb, call_when = $10, likely_parts = $11, urgency = $12, updated_at = now()"
        " RETURNING to_jsonb(g) - 'search'", guide_id, brand_id, sku_id, locale, title, body, category, symptoms,
        checks, call_when, likely_parts or [], urgency)
    return after


async def guides(db: Conn, brand_id: str | None, sku_id: str | None, locale: str | None,
                 after: tuple[str, str, str, uuid.UUID] | None, limit: int, *,
                 category: str | None = None) -> list[asyncpg.Record]:
    """A brand's guides (`brand_id` None: the category-wide ones, of no brand), brand-wide first, then
    by SKU, locale and title; keyset-paginated on that order."""
    key = after or (None, None, None, None)
    rows: list[asyncpg.Record] = await db.fetch(
        "SELECT id, brand_id, sku_id, locale, title, body, updated_at, category, symptoms, checks, call_when,"
        " likely_parts, urgency FROM catalog_guides"
        " WHERE (brand_id = $1 OR ($1::text IS NULL AND brand_id IS NULL))"
        " AND ($2::text IS NULL OR sku_id IS NULL OR sku_id = $2)"
        " AND ($3::text IS NULL OR locale = $3) AND ($9::text IS NULL OR category = $9)"
        " AND ($4::text IS NULL OR (coalesce(sku_id, ''), locale, title, id) > ($4, $5, $6, $7::uuid))"
        " ORDER BY coalesce(sku_id, ''), locale, title, id LIMIT $8",
        brand_id, sku_id, locale, *key, limit, category)
    return rows


# -- history and memberships ----------------------------------------------------------------------
async def history(db: Conn, *, brands: list[str] | None, kind: str | None, key: str | None, before: int | None,
                  limit: int) -> list[asyncpg.Record]:
    """Newest first, keyset-paginated on id; `brands` None: every change (memberships included)."""
    rows: list[asyncpg.Record] = await db.fetch(
        "SELECT * FROM catalog_history WHERE ($1::text[] IS NULL OR brand_id = ANY($1::text[]))"
        " AND ($2::text IS NULL OR kind = $2) AND ($3::text IS NULL OR key = $3)"
        " AND ($4::bigint IS NULL OR id < $4) ORDER BY id DESC LIMIT $5", brands, kind, key, before, limit)
    return rows


async def merchant_brands(db: Conn, merchant_id: str) -> list[str]:
    """The merchant's brands; in a transaction they stay so until it ends (a change by a merchant
    never commits after staff took the brand away)."""
    rows = await db.fetch("SELECT brand_id FROM merchant_brands WHERE merchant_id = $1 ORDER BY brand_id FOR SHARE",
                          merchant_id)
    return [r["brand_id"] for r in rows]


async def known_brands(db: Conn, brand_ids: list[str]) -> set[str]:
    rows = await db.fetch("SELECT id FROM brands WHERE id = ANY($1::text[])", brand_ids)
    return {r["id"] for r in rows}


async def set_merchant_brands(conn: asyncpg.Connection, merchant_id: str, brand_ids: list[str]) -> list[str]:
    """Replace the merchant's memberships; returns the old set (two admins' changes serialize)."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('merchant_brands:' || $1))", merchant_id)
    old = await merchant_brands(conn, merchant_id)
    await conn.execute("DELETE FROM merchant_brands WHERE merchant_id = $1", merchant_id)
    await conn.execute("INSERT INTO merchant_brands (merchant_id, brand_id) SELECT $1, unnest($2::text[])",
                       merchant_id, brand_ids)
    return old
