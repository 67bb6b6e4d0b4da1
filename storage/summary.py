"""The back office's summaries in one SQL statement: each order of the range with its timeline's
moments (kept on the order, migration 0014), payment, transfer and declines, grouped by local
bucket, brand (and SKU) and totalled."""

from datetime import datetime

import asyncpg

# Buckets are local: truncated in the zone, then back to the moment they start. The same
# expression for the orders and for the list of buckets, so the two always agree.
_SUMMARY = """
WITH picked AS (
    SELECT o.id, o.brand_id, CASE WHEN $6 THEN o.sku_id END AS sku_id, o.state, o.rating, o.accepts,
           date_trunc($3, o.created_at AT TIME ZONE $4) AT TIME ZONE $4 AS bucket,
           extract(epoch FROM o.accepted_at - o.opened_at) AS to_accept,
           extract(epoch FROM o.completed_at - o.assigned_at) AS to_complete
    FROM orders o
    WHERE {brands} AND ($5::text IS NULL OR o.sku_id = $5) AND o.created_at >= $1 AND o.created_at < $2
), facts AS (
    SELECT picked.*, coalesce(p.captured_cents, 0) AS captured, coalesce(p.refunded_cents, 0) AS refunded,
           t.amount_cents - t.reversed_cents AS paid_out,
           -- What the platform kept: of a paid-out order, what the consumer paid and kept paid less
           -- the technician's net transfer; of a cancelled one, all it kept (a cancellation fee).
           -- A completed order whose transfer is still to come counts once it is made.
           CASE WHEN t.order_id IS NOT NULL
                THEN coalesce(p.captured_cents, 0) - coalesce(p.refunded_cents, 0) - (t.amount_cents - t.reversed_cents)
                WHEN picked.state = 'cancelled' THEN coalesce(p.captured_cents, 0) - coalesce(p.refunded_cents, 0)
           END AS kept,
           (SELECT count(*) FROM order_declines d WHERE d.order_id = picked.id) AS declines
    FROM picked
    -- LIMIT 1 (each is keyed by the order) keeps these lookups by key: joined plainly, the planner
    -- may hash a whole table of a million payments for a month's ten thousand orders.
    LEFT JOIN LATERAL (SELECT captured_cents, refunded_cents FROM payments
                       WHERE payments.order_id = picked.id LIMIT 1) p ON TRUE
    LEFT JOIN LATERAL (SELECT order_id, amount_cents, reversed_cents FROM transfers
                       WHERE transfers.order_id = picked.id LIMIT 1) t ON TRUE
)
SELECT GROUPING(bucket, brand_id) AS level, bucket, brand_id, sku_id,
       count(*) AS total,
       count(*) FILTER (WHERE state = 'awaiting_payment') AS awaiting_payment,
       count(*) FILTER (WHERE state = 'open') AS open,
       count(*) FILTER (WHERE state = 'accepted') AS accepted,
       count(*) FILTER (WHERE state = 'en_route') AS en_route,
       count(*) FILTER (WHERE state = 'in_service') AS in_service,
       count(*) FILTER (WHERE state = 'completed') AS completed,
       count(*) FILTER (WHERE state = 'cancelled') AS cancelled,
       coalesce(sum(captured), 0)::bigint AS revenue_cents,
       coalesce(sum(refunded), 0)::bigint AS refunds_cents,
       coalesce(sum(kept), 0)::bigint AS fees_cents,
       coalesce(sum(paid_out), 0)::bigint AS payouts_cents,
       count(rating) AS ratings, avg(rating)::float8 AS avg_rating,
       coalesce(sum(accepts), 0)::bigint AS accepts, coalesce(sum(declines), 0)::bigint AS declines,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY to_accept) AS accept_p50_s,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY to_accept) AS accept_p90_s,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY to_complete) AS complete_p50_s,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY to_complete) AS complete_p90_s
FROM facts
GROUP BY GROUPING SETS ((bucket, brand_id, sku_id), (brand_id, sku_id), ())
ORDER BY level, bucket, brand_id, sku_id
LIMIT $7
"""
# Two literal statements, not one with `$8 IS NULL OR ...`: a prepared statement's generic plan
# could not use the brand index for the second form.
BRANDS = _SUMMARY.format(brands="o.brand_id = ANY($8::text[])")
EVERY_BRAND = _SUMMARY.format(brands="TRUE")


async def summary(db: asyncpg.Pool | asyncpg.Connection, *, brands: list[str] | None, sku: str | None,
                  since: datetime, until: datetime, granularity: str, tz: str, by_sku: bool,
                  limit: int) -> list[asyncpg.Record]:
    """Bucket rows (level 0), then totals per brand (and SKU) (level 2), then the grand total
    (level 3, always present); `brands` None: every brand. At most `limit` rows."""
    if brands is None:
        rows: list[asyncpg.Record] = await db.fetch(EVERY_BRAND, since, until, granularity, tz, sku, by_sku, limit)
    else:
        rows = await db.fetch(BRANDS, since, until, granularity, tz, sku, by_sku, limit, brands)
    return rows


async def buckets(db: asyncpg.Pool | asyncpg.Connection, since: datetime, until: datetime, granularity: str,
                  tz: str) -> list[datetime]:
    """The first moment of every local bucket the range touches."""
    found = await db.fetch(
        "SELECT b AT TIME ZONE $4 AS start FROM generate_series(date_trunc($3, $1 AT TIME ZONE $4),"
        " $2 AT TIME ZONE $4 - interval '1 microsecond', ('1 ' || $3)::interval) b", since, until, granularity, tz)
    return [r["start"] for r in found]


async def sku_brand(db: asyncpg.Pool | asyncpg.Connection, sku_id: str) -> str | None:
    brand: str | None = await db.fetchval("SELECT brand_id FROM skus WHERE id = $1", sku_id)
    return brand
