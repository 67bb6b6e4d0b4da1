"""The back office's summaries: orders, money, ratings, declines and times to accept and to
complete, per brand (and SKU) and per day, week or month of a date range, in a time zone."""

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from protocol.bounds import END, MOMENT, check_moments
from protocol.catalog import SkuId
from protocol.frames import Reply, Request
from protocol.location import Slug

Granularity = Literal["day", "week", "month"]
# An IANA time zone name ("America/New_York", "UTC"); the gateway checks it names a known zone.
TimeZone = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_+/-]+" + END,
                                             description="IANA time zone name")]


class StateCounts(msgspec.Struct, kw_only=True):
    """Orders created in the bucket, counted by the state they are in now."""

    total: int
    awaiting_payment: int
    open: int
    accepted: int
    en_route: int
    in_service: int
    completed: int
    cancelled: int


class SummaryRow(msgspec.Struct, kw_only=True):
    """One bucket of one brand (and SKU), or a total (`bucket` null: the whole range; `brand` null:
    every brand in the reply). Every figure is of the orders created in the bucket, as they stand now."""

    bucket: datetime | None  # the bucket's first moment, in the request's time zone
    brand: str | None
    sku: str | None  # null unless grouped by SKU
    orders: StateCounts
    revenue_cents: int  # captured from consumers
    refunds_cents: int  # refunded to them
    fees_cents: int  # what the platform kept of orders whose money is settled
    payouts_cents: int  # transferred to technicians, less reversals
    ratings: int
    avg_rating: float | None
    accepts: int  # acceptances by technicians (an order released and taken again counts twice)
    declines: int  # technicians who declined the order
    decline_rate: float | None  # declines / (declines + accepts); null when neither
    accept_p50_s: float | None  # seconds from open to the first acceptance
    accept_p90_s: float | None
    complete_p50_s: float | None  # seconds from the completing technician's acceptance to completion
    complete_p90_s: float | None


class Summary(Reply):
    granularity: Granularity
    tz: str
    since: datetime
    until: datetime
    buckets: list[datetime]  # every bucket's first moment, in order: a bucket without rows had no orders
    rows: list[SummaryRow]  # by bucket, brand, SKU; buckets without orders left out
    totals: list[SummaryRow]  # per brand (and SKU) over the whole range
    total: SummaryRow  # every row of the reply together


class SummaryGet(Request, tag="admin.summary"):
    """Summaries of orders created from `since` (included) until `until` (excluded), per local
    day, week (from Monday) or month of `tz`. Admins: every brand unless `brand` is given;
    merchants: their brands, or one of them."""

    since: Annotated[datetime, MOMENT]
    until: Annotated[datetime, MOMENT]
    granularity: Granularity = "day"
    tz: TimeZone = "UTC"
    brand: Slug | None = None
    sku: SkuId | None = None
    group_by_sku: bool = False
    reply = Summary

    def __post_init__(self) -> None:
        check_moments(self, "since", "until")
