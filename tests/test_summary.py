"""admin.summary over real sessions: orders made and moved through the protocol in the test's own
brand, their moments and money then set to known values in PostgreSQL, so every figure of every
bucket is known exactly; local days, weeks and months; merchants kept to their brands; bad ranges."""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from protocol.catalog import MerchantBrandsSet, SkuSave
from protocol.orders import (
    OrderAccept,
    OrderCancel,
    OrderComplete,
    OrderDecline,
    OrderDepart,
    OrderRate,
    OrderRelease,
    OrderStart,
)
from protocol.summary import SummaryGet, SummaryRow
from storage.migrate import migrate, migrations
from tests.world import brand_with_sku, fresh, order_at, refused, spot, technician

DAY1 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # a Monday
DAY2 = datetime(2026, 3, 3, 15, 0, tzinfo=UTC)


async def plant(db: asyncpg.Pool, order_id: str, created: datetime, accepted_after_s: float | None = None,
                completed_after_s: float | None = None) -> None:
    """The order created at `created`, opened then, accepted and completed that many seconds later
    (each later step a second after the one it follows): in its timeline and in the moments the
    order keeps of it, as they would have been written then."""
    oid = uuid.UUID(order_id)
    accepted = created + timedelta(seconds=accepted_after_s or 0)
    moments = {"open": created, "accepted": accepted, "en_route": accepted + timedelta(seconds=1),
               "in_service": accepted + timedelta(seconds=2),
               "completed": accepted + timedelta(seconds=completed_after_s or 0), "cancelled": created}
    for state, at in moments.items():
        await db.execute("UPDATE order_events SET at = $3 WHERE order_id = $1 AND to_state = $2", oid, state, at)
    await db.execute(
        "UPDATE orders SET created_at = $2, opened_at = $2,"
        " accepted_at = CASE WHEN accepted_at IS NOT NULL THEN $3::timestamptz END,"
        " assigned_at = CASE WHEN assigned_at IS NOT NULL THEN $3::timestamptz END,"
        " completed_at = CASE WHEN completed_at IS NOT NULL THEN $4::timestamptz END WHERE id = $1",
        oid, created, accepted, moments["completed"])


async def pay(db: asyncpg.Pool, order_id: str, captured: int, refunded: int = 0,
              transferred: int | None = None, reversed_: int = 0) -> None:
    """A payment (and a transfer) as the money code records them from Stripe."""
    oid = uuid.UUID(order_id)
    await db.execute("INSERT INTO payments (order_id, intent_id, policy, amount_cents, currency, captured_cents,"
                     " refunded_cents) VALUES ($1, $2, 'capture_at_completion', 20000, 'usd', $3, $4)",
                     oid, fresh("pi"), captured, refunded)
    if transferred is not None:
        await db.execute("INSERT INTO transfers (order_id, technician_id, account_id, transfer_id, amount_cents,"
                         " reversed_cents, refunded_basis, currency) VALUES ($1, 'tech', 'acct', $2, $3, $4, $5,"
                         " 'usd')", oid, fresh("tr"), transferred, reversed_, refunded)


def figures(row: SummaryRow) -> dict[str, Any]:
    return {"orders": row.orders.total, "completed": row.orders.completed, "open": row.orders.open,
            "cancelled": row.orders.cancelled, "revenue": row.revenue_cents, "refunds": row.refunds_cents,
            "fees": row.fees_cents, "payouts": row.payouts_cents, "ratings": row.ratings, "avg": row.avg_rating,
            "accepts": row.accepts, "declines": row.declines, "decline_rate": row.decline_rate,
            "accept": (row.accept_p50_s, row.accept_p90_s), "complete": (row.complete_p50_s, row.complete_p90_s)}


async def test_each_day_of_a_brand_has_its_exact_counts_money_ratings_and_percentiles(gateway, signed_in):
    db = gateway.services.db
    admin, _ = await signed_in("admin")
    brand, sku = await brand_with_sku(admin)
    place = spot()
    consumer, _ = await signed_in("consumer")
    tech, _ = await technician(signed_in, place)
    other, _ = await technician(signed_in, place)
    a, b, c, d = [(await consumer.request(order_at(place, brand=brand, sku=sku))).order.id for _ in range(4)]
    await other.request(OrderDecline(order_id=b))
    await other.request(OrderDecline(order_id=c))
    for order_id, stars in ((a, 4), (b, 2)):
        for step in (OrderAccept, OrderDepart, OrderStart, OrderComplete):
            await tech.request(step(order_id=order_id))
        await consumer.request(OrderRate(order_id=order_id, stars=stars))
    await consumer.request(OrderCancel(order_id=d))
    await plant(db, a, DAY1, accepted_after_s=60, completed_after_s=3600)
    await plant(db, b, DAY1 + timedelta(hours=2), accepted_after_s=180, completed_after_s=1800)
    await plant(db, c, DAY2)
    await plant(db, d, DAY2 + timedelta(hours=1))
    await pay(db, a, 20000, transferred=17000)  # the platform kept 15%
    await pay(db, b, 20000, refunded=5000, transferred=12750)  # refunded before the payout: 85% of 15,000
    await pay(db, d, 2000)  # a cancellation fee, kept whole

    got = await admin.request(SummaryGet(since=DAY1.replace(hour=0), until=DAY1.replace(hour=0) + timedelta(days=3),
                                         brand=brand))
    assert [x.isoformat() for x in got.buckets] == [
        "2026-03-02T00:00:00+00:00", "2026-03-03T00:00:00+00:00", "2026-03-04T00:00:00+00:00"]
    assert [(r.bucket, r.brand, r.sku) for r in got.rows] == [(got.buckets[0], brand, None),
                                                              (got.buckets[1], brand, None)]  # none on day 3
    day1, day2 = got.rows
    assert figures(day1) == {
        "orders": 2, "completed": 2, "open": 0, "cancelled": 0, "revenue": 40000, "refunds": 5000,
        "fees": 3000 + 2250, "payouts": 29750, "ratings": 2, "avg": 3.0, "accepts": 2, "declines": 1,
        "decline_rate": 1 / 3, "accept": (120.0, 168.0), "complete": (2700.0, 3420.0)}
    assert figures(day2) == {
        "orders": 2, "completed": 0, "open": 1, "cancelled": 1, "revenue": 2000, "refunds": 0, "fees": 2000,
        "payouts": 0, "ratings": 0, "avg": None, "accepts": 0, "declines": 1, "decline_rate": 1.0,
        "accept": (None, None), "complete": (None, None)}
    [brand_total] = got.totals
    assert (brand_total.bucket, brand_total.brand) == (None, brand)
    assert figures(brand_total) == figures(got.total) == {
        "orders": 4, "completed": 2, "open": 1, "cancelled": 1, "revenue": 42000, "refunds": 5000, "fees": 7250,
        "payouts": 29750, "ratings": 2, "avg": 3.0, "accepts": 2, "declines": 2, "decline_rate": 0.5,
        "accept": (120.0, 168.0), "complete": (2700.0, 3420.0)}
    assert got.total.brand is None

    # Per SKU: a second SKU of the brand has no orders, so no rows; one SKU named keeps to it.
    second = fresh("SKU").upper()
    await admin.request(SkuSave(sku=second, brand=brand, category="washer", name="Other washer"))
    by_sku = await admin.request(SummaryGet(since=DAY1, until=DAY2 + timedelta(days=1), brand=brand,
                                            granularity="month", group_by_sku=True))
    assert [(r.sku, r.orders.total) for r in by_sku.rows] == [(sku, 4)]
    assert [(r.sku, r.orders.total) for r in by_sku.totals] == [(sku, 4)]
    only = await admin.request(SummaryGet(since=DAY1, until=DAY2 + timedelta(days=1), sku=second))
    assert (only.rows, only.totals, only.total.orders.total) == ([], [], 0)


async def test_the_order_keeps_its_timeline_moments_as_it_moves(gateway, signed_in):
    """What the summary measures is kept on the order by each transition: a job released and
    taken again counts two acceptances, and its time to complete runs from the second."""
    db = gateway.services.db
    admin, _ = await signed_in("admin")
    brand, sku = await brand_with_sku(admin)
    place = spot()
    consumer, _ = await signed_in("consumer")
    first, _ = await technician(signed_in, place)
    second, _ = await technician(signed_in, place)
    order_id = (await consumer.request(order_at(place, brand=brand, sku=sku))).order.id
    await first.request(OrderAccept(order_id=order_id))
    await first.request(OrderRelease(order_id=order_id))
    for step in (OrderAccept, OrderDepart, OrderStart, OrderComplete):
        await second.request(step(order_id=order_id))
    kept = await db.fetchrow("SELECT * FROM orders WHERE id = $1", uuid.UUID(order_id))
    timeline = await db.fetch("SELECT from_state, to_state, at FROM order_events WHERE order_id = $1 ORDER BY id",
                              uuid.UUID(order_id))
    assert [(e["from_state"], e["to_state"]) for e in timeline] == [
        (None, "open"), ("open", "accepted"), ("accepted", "open"), ("open", "accepted"),
        ("accepted", "en_route"), ("en_route", "in_service"), ("in_service", "completed")]
    opened, accepted, released, reaccepted, _, started, completed = (e["at"] for e in timeline)
    assert kept["accepts"] == 2
    assert kept["opened_at"] <= opened < kept["accepted_at"] <= accepted < released  # written with each move
    assert released < kept["assigned_at"] <= reaccepted and started < kept["completed_at"] <= completed

    got = await admin.request(SummaryGet(since=kept["created_at"], until=kept["created_at"] + timedelta(days=1),
                                         brand=brand))
    assert (got.total.accepts, got.total.orders.completed) == (2, 1)
    assert got.total.accept_p50_s == (kept["accepted_at"] - kept["opened_at"]).total_seconds()
    assert got.total.complete_p50_s == (kept["completed_at"] - kept["assigned_at"]).total_seconds()


async def test_days_weeks_and_months_are_local_to_the_time_zone(gateway, signed_in):
    db = gateway.services.db
    admin, _ = await signed_in("admin")
    brand, sku = await brand_with_sku(admin)
    place = spot()
    consumer, _ = await signed_in("consumer")
    moments = [datetime(2026, 3, 1, 3, 0, tzinfo=UTC),  # New York: Feb 28, 22:00 (a Saturday)
               datetime(2026, 3, 1, 6, 0, tzinfo=UTC),  # New York: Mar 1, 01:00 (a Sunday)
               datetime(2026, 3, 2, 4, 59, tzinfo=UTC),  # New York: Mar 1, 23:59
               datetime(2026, 3, 9, 3, 30, tzinfo=UTC)]  # New York: Mar 8, 23:30 (daylight time since 02:00)
    for at in moments:
        await plant(db, (await consumer.request(order_at(place, brand=brand, sku=sku))).order.id, at)

    def counts(reply: Any) -> list[tuple[str, int]]:
        return [(r.bucket.isoformat(), r.orders.total) for r in reply.rows]

    since, until = datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC)
    utc_days = await admin.request(SummaryGet(since=since, until=until, brand=brand))
    assert counts(utc_days) == [("2026-03-01T00:00:00+00:00", 2), ("2026-03-02T00:00:00+00:00", 1),
                                ("2026-03-09T00:00:00+00:00", 1)]
    ny = {"since": since, "until": until, "brand": brand, "tz": "America/New_York"}
    days = await admin.request(SummaryGet(**ny))
    assert counts(days) == [("2026-02-28T00:00:00-05:00", 1), ("2026-03-01T00:00:00-05:00", 2),
                            ("2026-03-08T00:00:00-05:00", 1)]
    assert len(days.buckets) == 60 and days.buckets[0].isoformat() == "2026-01-31T00:00:00-05:00"
    assert [b.isoformat() for b in days.buckets[36:38]] == ["2026-03-08T00:00:00-05:00", "2026-03-09T00:00:00-04:00"]
    weeks = await admin.request(SummaryGet(**ny, granularity="week"))  # weeks start on Monday
    assert counts(weeks) == [("2026-02-23T00:00:00-05:00", 3), ("2026-03-02T00:00:00-05:00", 1)]
    months = await admin.request(SummaryGet(**ny, granularity="month"))
    assert counts(months) == [("2026-02-01T00:00:00-05:00", 1), ("2026-03-01T00:00:00-05:00", 3)]
    assert [b.isoformat() for b in months.buckets] == [
        "2026-01-01T00:00:00-05:00", "2026-02-01T00:00:00-05:00", "2026-03-01T00:00:00-05:00"]
    tokyo = await admin.request(SummaryGet(since=since, until=until, brand=brand, tz="Asia/Tokyo",
                                           granularity="month"))
    assert counts(tokyo) == [("2026-03-01T00:00:00+09:00", 4)]


async def test_merchants_summarize_their_brands_only(gateway, signed_in):
    db = gateway.services.db
    admin, _ = await signed_in("admin")
    mine, my_sku = await brand_with_sku(admin)
    theirs, their_sku = await brand_with_sku(admin)
    merchant, merchant_id = await signed_in("merchant")
    await admin.request(MerchantBrandsSet(merchant_id=merchant_id, brands=[mine]))
    place = spot()
    consumer, _ = await signed_in("consumer")
    for brand, sku in ((mine, my_sku), (theirs, their_sku), (theirs, their_sku)):
        await plant(db, (await consumer.request(order_at(place, brand=brand, sku=sku))).order.id, DAY1)
    window = {"since": DAY1 - timedelta(days=1), "until": DAY1 + timedelta(days=1)}

    everything = await merchant.request(SummaryGet(**window))
    assert [(r.brand, r.orders.total) for r in everything.rows] == [(mine, 1)]
    assert everything.total.orders.total == 1
    assert [(r.brand, r.orders.total) for r in (await admin.request(SummaryGet(**window, brand=theirs))).rows] == [
        (theirs, 2)]
    for request in (SummaryGet(**window, brand=theirs), SummaryGet(**window, brand=fresh("brand"))):
        refusal = await refused(merchant, request)
        assert (refusal.code, refusal.error.message) == ("not_found", "No such brand.")
    for request in (SummaryGet(**window, sku=their_sku), SummaryGet(**window, sku="NO-SUCH-SKU")):
        refusal = await refused(merchant, request)
        assert (refusal.code, refusal.error.message) == ("not_found", "No such SKU.")
    assert (await refused(admin, SummaryGet(**window, brand=fresh("brand")))).code == "not_found"
    for role in ("consumer", "technician"):
        client, _ = await signed_in(role)
        assert (await refused(client, SummaryGet(**window))).code == "forbidden"


async def test_bad_ranges_and_zones_are_bad_requests(signed_in):
    admin, _ = await signed_in("admin", locale="es")
    start = datetime(2025, 1, 1, tzinfo=UTC)
    backwards = await refused(admin, SummaryGet(since=start, until=start - timedelta(days=1)))
    assert (backwards.code, backwards.error.message) == (
        "bad_request", "El intervalo debe terminar después de empezar.")
    assert (await refused(admin, SummaryGet(since=start, until=start))).code == "bad_request"
    too_many = await refused(admin, SummaryGet(since=start, until=start + timedelta(days=801)))
    assert (too_many.code, too_many.error.message) == (
        "bad_request", "Como máximo 800 periodos: acorta el intervalo o elige una granularidad mayor.")
    # Two years of days fit; ten years of days do not, of weeks they do.
    await admin.request(SummaryGet(since=start, until=start + timedelta(days=731), brand="whirlpool"))
    await admin.request(SummaryGet(since=start, until=start + timedelta(days=3650), granularity="week",
                                   brand="whirlpool"))
    for tz in ("Mars/Olympus_Mons", "America/", "UTC+5"):
        refusal = await refused(admin, SummaryGet(since=start, until=start + timedelta(days=1), tz=tz))
        assert refusal.code == "bad_request", tz
    reply, _ = await admin.call("admin.summary", {"since": "2025-01-01T00:00:00Z", "until": "2025-01-02T00:00:00Z",
                                                  "tz": "../etc/passwd"})
    assert reply["code"] == "bad_request"


async def test_orders_made_before_the_migration_get_their_moments_from_their_timelines(scratch_db):
    """Migration 0014 fills the moments of existing orders from their timelines."""
    conn = await asyncpg.connect(scratch_db)
    try:
        await conn.execute("CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
                           " applied_at timestamptz NOT NULL DEFAULT now())")
        for version, name, sql in migrations():
            if version < 14:
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name)
        oid = uuid.uuid4()
        await conn.execute(
            "INSERT INTO orders (id, consumer_id, created_by, brand_id, sku_id, service_type, description, address_enc,"
            " lat, lng, price_cents, currency, state, created_at) VALUES ($1, 'c', 'c', 'whirlpool', 'WRF535SWHZ',"
            " 'repair', 'old', '\\x00', 0, 0, 13900, 'usd', 'completed', $2)", oid, DAY1)
        timeline = [(None, "awaiting_payment", 0), ("awaiting_payment", "open", 20), ("open", "accepted", 80),
                    ("accepted", "open", 500), ("open", "accepted", 700), ("accepted", "en_route", 800),
                    ("en_route", "in_service", 900), ("in_service", "completed", 4000)]
        await conn.executemany(
            "INSERT INTO order_events (order_id, actor_id, actor_role, from_state, to_state, at)"
            " VALUES ($1, 'x', 'technician', $2, $3, $4)",
            [(oid, before, after, DAY1 + timedelta(seconds=s)) for before, after, s in timeline])
        assert "0014_summary.sql" in await migrate(conn)
        kept = await conn.fetchrow("SELECT opened_at, accepted_at, assigned_at, completed_at, accepts FROM orders")
        assert tuple(kept) == (DAY1 + timedelta(seconds=20), DAY1 + timedelta(seconds=80),
                               DAY1 + timedelta(seconds=700), DAY1 + timedelta(seconds=4000), 2)
    finally:
        await conn.close()
