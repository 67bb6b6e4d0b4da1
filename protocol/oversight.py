"""Oversight of orders for the back office: the order board (`admin.orders`: search, filters,
keyset pages with a total, CSV export) and one order whole (`admin.order`)."""

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from protocol.ai import AiConversation
from protocol.bounds import END, LINE, MOMENT, check_moments
from protocol.chat import ChatMessage
from protocol.frames import Reply, Request
from protocol.location import Slug
from protocol.orders import Order, OrderId, OrderState, PaymentState, TimelineEntry

# Derived from the transfer and the transfer job: none (no payout scheduled or owed), pending
# (scheduled, running, or waiting for the technician's payouts), transferred, partially_reversed,
# reversed (all of it), failed (the transfer job gave up).
PayoutState = Literal["none", "pending", "transferred", "partially_reversed", "reversed", "failed"]
# `none`: the order needs no payment (the gateway ran without Stripe when it was created).
PaymentFilter = Literal["none", "unpaid", "processing", "authorized", "paid", "failed", "canceled", "refunded",
                        "partially_refunded"]
Sort = Literal["-created_at", "created_at", "-updated_at", "updated_at", "-state_since", "state_since"]
UserId = Annotated[str, LINE, msgspec.Meta(min_length=1, max_length=64)]
SkuId = Annotated[str, LINE, msgspec.Meta(min_length=1, max_length=64)]
Search = Annotated[str, LINE, msgspec.Meta(min_length=1, max_length=64,
                                           description="an order id or its first characters, or an exact SKU")]
BoardCursor = Annotated[str, msgspec.Meta(max_length=200, pattern=r"^[A-Za-z0-9_-]*" + END, description="opaque")]


class OrderRow(msgspec.Struct, kw_only=True):
    """One line of the board: no personal data (no address, no description)."""

    id: str
    state: OrderState
    brand: str
    sku: str
    service_type: str
    consumer_id: str
    technician_id: str | None
    price_cents: int
    currency: str
    payment_state: PaymentState | None  # null: the order needs no payment
    payout_state: PayoutState
    rating: int | None
    created_at: datetime
    updated_at: datetime
    state_since: datetime  # when the order entered its current state (its last transition)


class OrderBoard(Reply):
    orders: list[OrderRow]  # empty with format "csv": the page is in `csv`
    total: int  # every order matching the filters, on every page
    next_cursor: str | None  # pass as `cursor` (with the same filters and sort) for the next page
    csv: str | None = None  # format "csv": a header line and the page's rows (RFC 4180)


class AdminOrders(Request, tag="admin.orders"):
    """Search the orders (admins every brand, merchants their brands'). Every filter given must
    hold; `state`, `payment_state` and `payout_state` match any of their values."""

    q: Search | None = None
    state: Annotated[list[OrderState], msgspec.Meta(min_length=1, max_length=7)] | None = None
    brand: Slug | None = None
    sku: SkuId | None = None
    technician_id: UserId | None = None
    consumer_id: UserId | None = None
    created_from: Annotated[datetime, MOMENT] | None = None  # inclusive
    created_to: Annotated[datetime, MOMENT] | None = None  # exclusive
    payment_state: Annotated[list[PaymentFilter], msgspec.Meta(min_length=1, max_length=9)] | None = None
    payout_state: Annotated[list[PayoutState], msgspec.Meta(min_length=1, max_length=6)] | None = None
    stuck_minutes: Annotated[int, msgspec.Meta(ge=1, le=5_256_000, description="in a state other than completed"
                                                                             " or cancelled for longer")] | None = None
    sort: Sort = "-created_at"
    cursor: BoardCursor | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=200)] = 50
    format: Literal["json", "csv"] = "json"
    reply = OrderBoard

    def __post_init__(self) -> None:
        check_moments(self, "created_from", "created_to")


# -- one order whole ----------------------------------------------------------------------------
class ChatEvent(msgspec.Struct, kw_only=True):
    """A system message of the order's room (the order's progress as its parties saw it)."""

    seq: int
    code: str | None  # the state it narrates, or what staff did (reassigned, returned)
    text: str | None  # in the caller's language
    sent_at: datetime


class PaymentInfo(msgspec.Struct, kw_only=True):
    policy: str  # pay_at_creation or capture_at_completion
    amount_cents: int
    currency: str
    captured_cents: int
    refunded_cents: int
    last_error: str | None
    intent_id: str | None  # Stripe ids: admins only (null for merchants)
    charge_id: str | None
    created_at: datetime
    updated_at: datetime


class StripeEvent(msgspec.Struct, kw_only=True):
    id: str
    type: str
    created: datetime  # when Stripe created it
    source: str  # webhook or reconcile
    received_at: datetime
    applied_at: datetime | None  # null: stored, not applied yet


class TransferInfo(msgspec.Struct, kw_only=True):
    technician_id: str
    transfer_id: str | None  # admins only
    amount_cents: int
    reversed_cents: int  # what reversals (money jobs of kind "reversal") took back
    currency: str
    created_at: datetime


class MoneyJob(msgspec.Struct, kw_only=True):
    id: int
    kind: str  # capture, cancel, refund, transfer, reversal
    step: int
    state: str  # pending, running, waiting, done, skipped, failed
    attempts: int
    amount_cents: int | None
    last_error: str | None
    due_at: datetime
    result: str | None  # the Stripe object the job made or changed
    note: str | None
    created_at: datetime
    updated_at: datetime


class Photo(msgspec.Struct, kw_only=True):
    attachment_id: str
    content_type: str | None  # null: the attachment row is gone
    size: int | None
    url: str  # GET with the session's token as a bearer (see Attachments)


class OrderFile(Reply):
    order: Order
    payout_state: PayoutState
    state_since: datetime
    timeline: list[TimelineEntry]
    chat_events: list[ChatEvent]
    payment: PaymentInfo | None  # null: no payment was started
    stripe_events: list[StripeEvent]  # admins only (empty for merchants)
    transfer: TransferInfo | None
    money_jobs: list[MoneyJob]
    completion_photos: list[Photo]
    ai: AiConversation | None = None  # admins only: the AI assistant's conversation the order came from
    transcript: list[ChatMessage] | None = None  # admins only: the room's newest messages, oldest first
    transcript_more: bool = False  # older messages exist: page back with chat.history


class AdminOrder(Request, tag="admin.order"):
    """One order whole. Admins get the chat transcript too (each read is written to the audit log)."""

    order_id: OrderId
    reply = OrderFile


# -- the live map -------------------------------------------------------------------------------
class MapTechnician(msgspec.Struct, kw_only=True):
    """An on-duty technician's last position. Merchants see only technicians on their brands' orders."""

    id: str
    lat: float
    lng: float
    seen_at: datetime  # the last position update; older than POSITION_STALE_S: no longer matched


class MapOrder(msgspec.Struct, kw_only=True):
    """An order not yet completed or cancelled, where it is (no address, no description)."""

    id: str
    state: OrderState
    brand: str
    sku: str
    service_type: str
    technician_id: str | None
    lat: float
    lng: float
    created_at: datetime


class OpsMap(Reply):
    technicians: list[MapTechnician]  # most recently seen first
    orders: list[MapOrder]  # newest first
    radius_mi: float  # an open order is announced to on-duty technicians within this distance
    stale_after_s: float  # POSITION_STALE_S
    more: bool  # more technicians or orders than `limit`: the newest were kept


class AdminMap(Request, tag="admin.map"):
    """What the back office's live map draws: on-duty technicians and the orders in progress (admins
    every brand, merchants their brands' orders and those orders' technicians). Follow changes
    with `admin.watch`."""

    brand: Slug | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=2000)] = 500
    reply = OpsMap
