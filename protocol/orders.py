"""Orders: creation, the job's life from `open` to `completed`, the pool of open orders."""

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from protocol.auth import Email, Phone
from protocol.bounds import END, LINE, MOMENT, TEXT, check_moments
from protocol.frames import Event, Reply, Request
from protocol.location import Latitude, Longitude, Slug

OrderState = Literal["awaiting_payment", "open", "accepted", "en_route", "in_service", "completed", "cancelled"]
PaymentState = Literal["unpaid", "processing", "authorized", "paid", "failed", "canceled", "refunded",
                       "partially_refunded"]
OrderId = Annotated[str, LINE, msgspec.Meta(min_length=1, max_length=64)]
AttachmentIds = Annotated[list[Annotated[str, LINE, msgspec.Meta(max_length=64)]], msgspec.Meta(max_length=10)]
Cursor = Annotated[str, LINE, msgspec.Meta(max_length=200)]
OffsetCursor = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{1,5}" + END, description="opaque")]
Reason = Annotated[str, LINE, msgspec.Meta(max_length=500)]
Note = Annotated[str, TEXT, msgspec.Meta(max_length=2000)]


PersonName = Annotated[str, LINE, msgspec.Meta(min_length=1, max_length=120)]


class Customer(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A merchant's customer, as the merchant gives them in `order.create`."""

    name: PersonName
    phone: Phone
    email: Email


class OrderCustomer(msgspec.Struct, kw_only=True):
    """The contact a merchant gave for the order: name, phone and e-mail for the order's merchants,
    admins and its consumer; name and phone for its technician (`email` null); nobody else."""

    name: str
    phone: str
    email: str | None = None


class Order(msgspec.Struct, kw_only=True):
    """An order as its parties see it. `address` is shown to the consumer, the assigned technician,
    the order's merchants and admins; technicians browsing the pool see distance and an
    approximate position (about 1 km) instead."""

    id: str
    state: OrderState
    brand: str
    sku: str
    service_type: str
    description: str
    lat: float
    lng: float
    address: str | None = None
    attachments: list[str] = []
    window_start: datetime | None = None
    window_end: datetime | None = None
    price_cents: int
    currency: str
    consumer_id: str | None = None
    technician_id: str | None = None
    customer: OrderCustomer | None = None  # merchants' orders: the customer's contact (see OrderCustomer)
    completion_attachments: list[str] = []
    completion_note: str | None = None
    rating: int | None = None
    rating_comment: str | None = None
    payment_state: PaymentState | None = None  # see payment.status; null when the order needs no payment
    created_at: datetime
    updated_at: datetime


class OrderReply(Reply):
    order: Order


class OrderCreated(Reply):
    """The new order. `claim_code` only when a merchant's order invited a new consumer account (or
    renewed an unclaimed one's code): the merchant hands it to the customer, who sets a password
    with `auth.claim` before `claim_expires_at`. It is shown once and stored only as a hash."""

    order: Order
    claim_code: str | None = None
    claim_expires_at: datetime | None = None


class OrderCreate(Request, tag="order.create"):
    """A consumer orders a repair; a merchant orders for a customer of one of its brands, giving
    either `customer` (linked by e-mail to their consumer account, or invited) or `consumer_id`.
    The price comes from the catalog for the SKU and service type."""

    brand: Slug
    sku: Annotated[str, LINE, msgspec.Meta(min_length=1, max_length=64, description="model number")]
    service_type: Slug
    description: Annotated[str, TEXT, msgspec.Meta(min_length=1, max_length=2000)]
    address: Annotated[str, TEXT, msgspec.Meta(min_length=1, max_length=300)]
    lat: Latitude
    lng: Longitude
    attachments: AttachmentIds = []
    window_start: Annotated[datetime, MOMENT] | None = None
    window_end: Annotated[datetime, MOMENT] | None = None
    consumer_id: Annotated[str, LINE, msgspec.Meta(max_length=64)] | None = None
    customer: Customer | None = None
    reply = OrderCreated

    def __post_init__(self) -> None:
        check_moments(self, "window_start", "window_end")


class OrderGet(Request, tag="order.get"):
    order_id: OrderId
    reply = OrderReply


class OrderPage(Reply):
    orders: list[Order]
    next_cursor: str | None = None


class OrderList(Request, tag="order.list"):
    """The caller's own orders, newest first: a consumer's orders, a technician's jobs, a merchant's
    brands' orders, every order for admins. Pass `next_cursor` back as `cursor` for the next page."""

    state: OrderState | None = None
    cursor: Cursor | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=100)] = 20
    reply = OrderPage


class OrderAccept(Request, tag="order.accept"):
    """Take an open order. When several technicians accept at once exactly one wins; the others
    get `conflict` with the current state."""

    order_id: OrderId
    reply = OrderReply


class OrderDecline(Request, tag="order.decline"):
    """Hide an open order from this technician's feed and announcements."""

    order_id: OrderId


class OrderRelease(Request, tag="order.release"):
    """Give an accepted order back before departing: it returns to the pool and is announced again."""

    order_id: OrderId
    reason: Reason | None = None
    reply = OrderReply


class OrderDepart(Request, tag="order.depart"):
    order_id: OrderId
    reply = OrderReply


class OrderStart(Request, tag="order.start"):
    order_id: OrderId
    reply = OrderReply


class OrderComplete(Request, tag="order.complete"):
    order_id: OrderId
    attachments: AttachmentIds = []
    note: Note | None = None
    reply = OrderReply


class OrderCancel(Request, tag="order.cancel"):
    """Consumers cancel their orders before service starts; admins at any time before completion."""

    order_id: OrderId
    reason: Reason | None = None
    reply = OrderReply


class OrderRate(Request, tag="order.rate"):
    """The consumer rates a completed order, once."""

    order_id: OrderId
    stars: Annotated[int, msgspec.Meta(ge=1, le=5)]
    comment: Note | None = None
    reply = OrderReply


class TimelineEntry(msgspec.Struct, kw_only=True):
    at: datetime
    actor_id: str
    actor_role: str
    from_state: OrderState | None
    to_state: OrderState
    details: dict[str, str | int | float | bool | list[str] | None] = {}


class Timeline(Reply):
    order_id: str
    entries: list[TimelineEntry]


class OrderTimeline(Request, tag="order.timeline"):
    """Every transition of the order, oldest first."""

    order_id: OrderId
    reply = Timeline


class NearbyOrder(msgspec.Struct, kw_only=True):
    order: Order
    distance_mi: float


class NearbyPage(Reply):
    orders: list[NearbyOrder]
    next_cursor: str | None = None


class OrderNearby(Request, tag="order.nearby"):
    """Open orders around the technician's last position (or `lat`/`lng`), nearest first, without
    the ones the technician declined. `radius_mi` defaults to 50 and is capped by configuration."""

    lat: Latitude | None = None
    lng: Longitude | None = None
    radius_mi: Annotated[float, msgspec.Meta(gt=0, le=500)] | None = None
    brand: Slug | None = None
    service_type: Slug | None = None
    cursor: OffsetCursor | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=50)] = 20
    reply = NearbyPage


class OrderAvailable(Event, tag="order.available"):
    """An order opened (created, released, reassigned) within range of an on-duty technician whose
    filters it matches."""

    order: Order
    distance_mi: float


class OrderUnavailable(Event, tag="order.unavailable"):
    """An order left the pool (accepted, cancelled): remove it from the feed."""

    order_id: str
    state: OrderState


class OrderStatus(Event, tag="order.status"):
    """A transition of an order, sent to its consumer and its technician."""

    order: Order
    previous_state: OrderState | None
    actor_role: str
