"""Money: consumers' cards and payments (Stripe), technicians' payouts (Stripe Connect).

Card data never travels here: apps collect it with Stripe's own SDKs, using the client secrets
these operations return; the gateway only sees Stripe ids."""

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from protocol.bounds import END, LINE
from protocol.frames import Event, Reply, Request
from protocol.orders import OrderId, PaymentState

StripeId = Annotated[str, msgspec.Meta(min_length=3, max_length=255, pattern=r"^[A-Za-z0-9_]+" + END)]


class SetupReply(Reply):
    setup_intent_id: str
    client_secret: str
    customer_id: str


class PaymentSetup(Request, tag="payment.setup"):
    """Start saving a card: returns a SetupIntent's client secret for the app's Stripe SDK
    (the consumer's Stripe customer is created on first need)."""

    reply = SetupReply


class SavedMethod(msgspec.Struct, kw_only=True):
    id: str
    brand: str
    last4: str
    exp_month: int
    exp_year: int


class MethodList(Reply):
    methods: list[SavedMethod]


class PaymentMethods(Request, tag="payment.methods"):
    """The consumer's saved cards: brand, last four digits and expiry only."""

    reply = MethodList


class PaymentMethodRemove(Request, tag="payment.method.remove"):
    payment_method_id: StripeId


class Payment(msgspec.Struct, kw_only=True):
    """An order's payment. `client_secret` lets the app confirm it with Stripe's SDK (3-D Secure
    included); it is given to the paying consumer only."""

    order_id: str
    intent_id: str
    state: PaymentState
    policy: Literal["pay_at_creation", "capture_at_completion"]
    amount_cents: int
    currency: str
    refunded_cents: int = 0
    intent_status: str | None = None
    client_secret: str | None = None
    last_error: str | None = None


class PaymentReply(Reply):
    payment: Payment


class PaymentPay(Request, tag="payment.pay"):
    """Create the order's PaymentIntent, or return the existing one (the price comes from the
    order). With `payment_method_id` (a saved card) the gateway also confirms it; without, the
    app confirms it with the returned client secret. Its state changes arrive as `payment.status`."""

    order_id: OrderId
    payment_method_id: StripeId | None = None
    reply = PaymentReply


class PaymentGet(Request, tag="payment.get"):
    """The order's payment as the gateway last heard from Stripe: state, amounts, refunds, the
    last error. For the order's consumer and admins; no client secret (see `payment.pay`)."""

    order_id: OrderId
    reply = PaymentReply


class PaymentRefund(Request, tag="payment.refund"):
    """Admin: refund an order's payment, fully or `amount_cents` of it. Runs as a scheduled job;
    the refund shows in `payment.status` once Stripe confirms it."""

    order_id: OrderId
    amount_cents: Annotated[int, msgspec.Meta(ge=1, le=99_999_999, description="Stripe's largest charge at most")] \
        | None = None
    reason: Annotated[str, LINE, msgspec.Meta(max_length=500)] | None = None
    reply = PaymentReply


class MoneyJob(msgspec.Struct, kw_only=True):
    """One scheduled call that moves money: capture, cancel, refund, transfer or reversal."""

    kind: Literal["capture", "cancel", "refund", "transfer", "reversal"]
    step: int
    state: Literal["pending", "running", "waiting", "done", "skipped", "failed"]
    attempts: int
    due_at: datetime
    updated_at: datetime
    amount_cents: int | None = None  # what it asked Stripe for (once decided)
    result: str | None = None  # the Stripe object it made or changed
    last_error: str | None = None
    note: str | None = None
    id: str | None = None  # what admin.job.retry takes


class PayoutView(msgspec.Struct, kw_only=True):
    transfer_id: str
    technician_id: str
    amount_cents: int
    reversed_cents: int
    currency: str


class Audit(Reply):
    order_id: str
    payment: Payment | None = None
    payout: PayoutView | None = None
    jobs: list[MoneyJob] = []


class PaymentAudit(Request, tag="payment.audit"):
    """Admin: an order's money trail: its payment as last reported by Stripe, the payout to its
    technician, and every scheduled Stripe call with its outcome and errors."""

    order_id: OrderId
    reply = Audit


class PaymentStatus(Event, tag="payment.status"):
    """An order's payment state changed (sent to its consumer and technician)."""

    order_id: str
    state: PaymentState
    amount_cents: int
    refunded_cents: int
    currency: str


class Onboarding(Reply):
    account_id: str
    url: str
    expires_at: datetime


class PayoutOnboard(Request, tag="payout.onboard"):
    """Technician: create the Stripe Express account (once) and get a link to Stripe's hosted
    onboarding; open it in a browser. Links expire: ask again for a fresh one."""

    reply = Onboarding


class PayoutItem(msgspec.Struct, kw_only=True):
    order_id: str
    state: Literal["pending", "running", "waiting", "done", "skipped", "failed"]
    due_at: datetime
    attempts: int
    amount_cents: int | None = None
    transfer_id: str | None = None
    last_error: str | None = None


class PayoutReport(Reply):
    account_id: str | None
    payouts_enabled: bool
    details_submitted: bool
    currently_due: list[str] = []
    paid_cents: int = 0
    reversed_cents: int = 0
    transfers: list[PayoutItem] = []


class PayoutStatus(Request, tag="payout.status"):
    """Technician: whether payouts are enabled, what Stripe still needs, and the transfers of
    completed jobs (`waiting`: for payouts to be enabled; `failed`: retries exhausted)."""

    reply = PayoutReport
