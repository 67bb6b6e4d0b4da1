"""Moderation by staff (admins): cancel an order with the refund the payment rules give, reassign
it to a technician or back to the pool, hide a chat message, retry a failed money job."""

from typing import Annotated, Literal

import msgspec

from protocol.bounds import END, LINE
from protocol.chat import ChatMessage
from protocol.frames import Event, Reply, Request
from protocol.orders import Order, OrderId, OrderState, PaymentState, Reason
from protocol.payments import MoneyJob

UserId = Annotated[str, LINE, msgspec.Meta(min_length=1, max_length=64)]
JobId = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{1,18}" + END, description="a money job's id (payment.audit)")]
Settlement = Literal["none", "void", "release", "capture_fee", "refund"]


# -- cancel with the refund the rules give ----------------------------------------------------
class CancelTerms(msgspec.Struct, kw_only=True):
    """What cancelling the order does with its money, by the payment rules (MoneyRules): a fee is
    kept once a technician was assigned (`cancellation_fee_bp` of the price), the rest goes back.
    `settlement`: none (no payment, or nothing left to give back), void (an intent never paid is
    cancelled), release (the card's authorization is cancelled whole), capture_fee (only the fee is
    captured from the authorization, the rest released), refund (a captured payment is refunded
    less the fee and less what was refunded already)."""

    order_id: str
    state: OrderState  # the state the order is (or was) cancelled from
    payment_state: PaymentState | None
    settlement: Settlement
    currency: str
    price_cents: int
    fee_cents: int  # kept from the consumer: captured from the authorization, or not refunded
    refund_cents: int  # refunded from a captured payment
    released_cents: int  # of the authorization, never captured


class CancelPreviewed(Reply):
    terms: CancelTerms


class CancelPreview(Request, tag="admin.cancel.preview"):
    """The terms `admin.cancel` would apply now; changes nothing."""

    order_id: OrderId
    reply = CancelPreviewed


class Cancelled(Reply):
    order: Order
    terms: CancelTerms  # what was applied (the money jobs run it within seconds)


class Cancel(Request, tag="admin.cancel"):
    """Cancel the order (any state before completion) and settle its payment by the terms
    `admin.cancel.preview` shows. The parties receive `order.status` as for `order.cancel`."""

    order_id: OrderId
    reason: Reason | None = None
    reply = Cancelled


# -- reassign ---------------------------------------------------------------------------------
class Reassigned(Reply):
    order: Order
    previous_technician_id: str | None


class Reassign(Request, tag="admin.reassign"):
    """Give the order to a named on-duty technician (from open, accepted or en_route: it becomes
    accepted, theirs), or with `technician_id: null` put it back in the pool (from accepted or
    en_route: it becomes open and is announced to the technicians around it but the previous one).
    The consumer, the previous technician and the new one receive `order.status`."""

    order_id: OrderId
    technician_id: UserId | None
    reason: Reason | None = None
    reply = Reassigned


class Candidate(msgspec.Struct, kw_only=True):
    technician_id: str
    distance_mi: float
    fits: bool  # the technician's feed filters (brands, services) take this order
    declined: bool  # they declined this order before


class Candidates(Reply):
    order_id: str
    technicians: list[Candidate]  # nearest first


class ReassignCandidates(Request, tag="admin.reassign.candidates"):
    """The on-duty technicians within the dispatch radius of the order, nearest first (the order's
    current technician left out): whom `admin.reassign` can give it to."""

    order_id: OrderId
    limit: Annotated[int, msgspec.Meta(ge=1, le=100)] = 20
    reply = Candidates


# -- hide a chat message ----------------------------------------------------------------------
class MessageHidden(Reply):
    message: ChatMessage  # as admins read it: the text kept, `hidden: true`


class MessageHide(Request, tag="admin.message.hide"):
    """Hide a person's message in the order's chat. The text is kept (sealed) for audit: admins
    still read it with `hidden: true`; members see the message with `hidden: true` and no text or
    attachments, in `chat.history`, `chat.sync` and `chat.rooms`; live members receive `chat.hidden`.
    Hiding a hidden message changes nothing and answers it again."""

    order_id: OrderId
    seq: Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]
    reason: Annotated[str, LINE, msgspec.Meta(min_length=1, max_length=500)]
    reply = MessageHidden


class ChatHiddenEvent(Event, tag="chat.hidden"):
    """A message of the room was hidden by staff: show it as hidden."""

    order_id: str
    seq: int


# -- retry a failed money job ----------------------------------------------------------------
class JobRetried(Reply):
    order_id: str
    job: MoneyJob  # its new state: pending, due now, attempts counted afresh


class JobRetry(Request, tag="admin.job.retry"):
    """Run a failed money job again. It replays the Stripe request it decided (same idempotency key,
    so money moves at most once), or decides afresh when Stripe had refused it outright."""

    job_id: JobId
    reply = JobRetried

