"""Technicians' positions and duty state."""

from datetime import datetime
from typing import Annotated

import msgspec

from protocol.bounds import END, MAX_LATITUDE, MOMENT, check_moments
from protocol.frames import Reply, Request

Latitude = Annotated[float, msgspec.Meta(ge=-MAX_LATITUDE, le=MAX_LATITUDE,
                                         description="WGS 84 degrees, within what Redis GEO holds")]
Longitude = Annotated[float, msgspec.Meta(ge=-180.0, le=180.0, description="WGS 84 degrees")]
Slug = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[a-z0-9_-]+" + END)]


class LocationAck(Reply):
    """The position is stored (visible to matching) when this reply is sent."""

    on_duty: bool
    server_time: datetime


class LocationUpdate(Request, tag="location.update"):
    """A technician's GPS fix. Fire-and-forget: no reply unless the frame has an `id`.

    Positions of on-duty technicians feed matching; a position older than the staleness limit
    (5 minutes by default) no longer counts."""

    lat: Latitude
    lng: Longitude
    accuracy: Annotated[float, msgspec.Meta(ge=0, le=100_000, description="metres")] | None = None
    heading: Annotated[float, msgspec.Meta(ge=0, le=360, description="degrees from north")] | None = None
    speed: Annotated[float, msgspec.Meta(ge=0, le=150, description="metres per second")] | None = None
    device_time: Annotated[datetime, MOMENT] | None = None
    reply = LocationAck
    silent_without_id = True

    def __post_init__(self) -> None:
        if self.device_time is not None:
            check_moments(self, "device_time")


class DutyState(Reply):
    on_duty: bool
    brands: list[str]
    services: list[str]


class Duty(Request, tag="tech.duty"):
    """Go on or off duty; only on-duty technicians are matched. `brands` and `services` filter the
    feed (empty or absent: everything); absent fields keep their previous value."""

    on_duty: bool
    brands: Annotated[list[Slug], msgspec.Meta(max_length=50)] | None = None
    services: Annotated[list[Slug], msgspec.Meta(max_length=20)] | None = None
    reply = DutyState


class Stats(Reply):
    earnings_cents: int  # transferred to the technician's Stripe account, less reversals
    currency: str
    jobs_completed: int
    average_rating: float | None
    ratings: int
    pending_cents: int = 0  # their share of completed jobs not transferred yet


class TechStats(Request, tag="tech.stats"):
    """The technician's totals: earnings (executed payouts), pending payouts, jobs done, average rating."""

    reply = Stats
