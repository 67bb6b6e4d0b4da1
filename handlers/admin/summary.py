"""`admin.summary`: orders, money, ratings, declines and times to accept and to complete per
brand (and SKU) and per local day, week or month, computed by one SQL statement (storage.summary)."""

import zoneinfo
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from handlers.catalog.scope import check_brand, scope
from handlers.context import Context
from handlers.errors import N_, BadRequest, NotFound
from handlers.routing import Router
from protocol.summary import StateCounts, Summary, SummaryGet, SummaryRow
from storage import catalog, summary

router = Router()
MAX_BUCKETS = 800  # two years of days, with room; 66 years of months
MAX_ROWS = 20_000  # buckets x brands (x SKUs), totals included: a frame of a few megabytes at most
STATES = ("awaiting_payment", "open", "accepted", "en_route", "in_service", "completed", "cancelled")


def zone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise BadRequest(N_("Unknown time zone: give an IANA name such as America/New_York.")) from None


def bucket_count(since: datetime, until: datetime, granularity: str, tz: zoneinfo.ZoneInfo) -> int:
    """How many local buckets [since, until) touches (computed, not listed: a range may be huge)."""
    first, last = since.astimezone(tz).date(), (until.astimezone(tz) - timedelta(microseconds=1)).date()
    if granularity == "day":
        return (last - first).days + 1
    if granularity == "week":
        return ((last - timedelta(days=last.weekday())) - (first - timedelta(days=first.weekday()))).days // 7 + 1
    return (last.year - first.year) * 12 + last.month - first.month + 1


def check_range(req: SummaryGet, tz: zoneinfo.ZoneInfo) -> None:
    if req.until <= req.since:
        raise BadRequest(N_("The range must end after it starts."))
    if bucket_count(req.since, req.until, req.granularity, tz) > MAX_BUCKETS:
        raise BadRequest(N_("At most {limit} buckets: shorten the range or choose a longer granularity."),
                         limit=MAX_BUCKETS)


def seconds(value: Any) -> float | None:
    return None if value is None else float(value)


def to_row(r: asyncpg.Record, tz: zoneinfo.ZoneInfo) -> SummaryRow:
    accepts, declines = r["accepts"], r["declines"]
    return SummaryRow(
        bucket=r["bucket"].astimezone(tz) if r["level"] == 0 else None,
        brand=r["brand_id"] if r["level"] < 3 else None, sku=r["sku_id"] if r["level"] < 3 else None,
        orders=StateCounts(total=r["total"], **{s: r[s] for s in STATES}),
        revenue_cents=r["revenue_cents"], refunds_cents=r["refunds_cents"], fees_cents=r["fees_cents"],
        payouts_cents=r["payouts_cents"], ratings=r["ratings"], avg_rating=r["avg_rating"], accepts=accepts,
        declines=declines, decline_rate=declines / (accepts + declines) if accepts + declines else None,
        accept_p50_s=seconds(r["accept_p50_s"]), accept_p90_s=seconds(r["accept_p90_s"]),
        complete_p50_s=seconds(r["complete_p50_s"]), complete_p90_s=seconds(r["complete_p90_s"]))


@router.route(SummaryGet, roles=["merchant", "admin"])
async def get(ctx: Context, req: SummaryGet) -> Summary:
    """Merchants: their brands only; another brand is `not_found` like an unknown one."""
    tz = zone(req.tz)
    check_range(req, tz)
    db = ctx.services.db
    brands = await scope(ctx)
    if req.brand is not None:
        check_brand(brands, req.brand)
        if not await catalog.known_brands(db, [req.brand]):
            raise NotFound(N_("No such brand."))
        brands = [req.brand]
    if req.sku is not None:
        owner = await summary.sku_brand(db, req.sku)
        if owner is None or (brands is not None and owner not in brands):
            raise NotFound(N_("No such SKU."))
    try:
        rows = await summary.summary(db, brands=brands, sku=req.sku, since=req.since, until=req.until,
                                     granularity=req.granularity, tz=req.tz, by_sku=req.group_by_sku,
                                     limit=MAX_ROWS + 1)
        starts = await summary.buckets(db, req.since, req.until, req.granularity, req.tz)
    except asyncpg.InvalidParameterValueError:  # a zone Python knows and PostgreSQL does not
        raise BadRequest(N_("Unknown time zone: give an IANA name such as America/New_York.")) from None
    if len(rows) > MAX_ROWS:
        raise BadRequest(N_("The summary would have more than {limit} rows: shorten the range, choose a longer "
                            "granularity or name a brand."), limit=MAX_ROWS)
    converted = [to_row(r, tz) for r in rows]
    return Summary(granularity=req.granularity, tz=req.tz, since=req.since, until=req.until,
                   buckets=[b.astimezone(tz) for b in starts],
                   rows=[row for r, row in zip(rows, converted, strict=True) if r["level"] == 0],
                   totals=[row for r, row in zip(rows, converted, strict=True) if r["level"] == 2],
                   total=converted[-1])
