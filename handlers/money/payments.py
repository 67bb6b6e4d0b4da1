"""Consumers pay (Stripe): saved cards, an order's PaymentIntent, refunds; and the one path by
which a payment's state changes, Stripe's events (from webhooks or the reconciler).

An event is stored first (deduplicated by its id), then applied in one transaction that locks
the order's payment, reads the PaymentIntent afresh from Stripe and records what it says. So a
duplicate is applied once, and an old event delivered late cannot undo a newer state."""

import json
import logging
from typing import Any

import asyncpg
import stripe
from stripe.params import CustomerCreateParams

from handlers.admin import feed
from handlers.context import Context
from handlers.errors import N_, Conflict, NotFound, Unavailable
from handlers.money.stripe_api import StripeAccess, calling_stripe, payment_state
from handlers.orders.orders import push_offline, tell_parties
from handlers.orders.pool import announce
from handlers.orders.views import state_conflict, visible_order
from handlers.routing import Router
from handlers.services import Services
from protocol.frames import Empty
from protocol.payments import (
    Audit,
    MethodList,
    MoneyJob,
    Payment,
    PaymentAudit,
    PaymentGet,
    PaymentMethodRemove,
    PaymentMethods,
    PaymentPay,
    PaymentRefund,
    PaymentReply,
    PaymentSetup,
    PaymentStatus,
    PayoutView,
    SavedMethod,
    SetupReply,
)
from storage import orders, payments, users

log = logging.getLogger(__name__)
router = Router()
SYSTEM_ACTOR = "stripe"


def stripe_of(services: Services) -> StripeAccess:
    if services.stripe is None:
        raise Unavailable(N_("Payments are not available on this server."))
    return services.stripe


async def ensure_customer(ctx: Context, access: StripeAccess) -> str:
    """The consumer's Stripe customer, created on first need (once: the idempotency key is the user)."""
    assert ctx.identity is not None
    user_id, db = ctx.identity.user_id, ctx.services.db
    found = await payments.customer_id(db, user_id)
    if found:
        return found
    params: CustomerCreateParams = {"metadata": {"user_id": user_id}}
    if email := await users.email_of(db, ctx.services.cipher, user_id):
        params["email"] = email
    with calling_stripe():
        customer = await access.client.v1.customers.create_async(params, {"idempotency_key": f"customer-{user_id}"})
    return await payments.keep_customer_id(db, user_id, customer.id)


@router.route(PaymentSetup, roles=["consumer"])
async def setup(ctx: Context, req: PaymentSetup) -> SetupReply:
    access = stripe_of(ctx.services)
    customer = await ensure_customer(ctx, access)
    with calling_stripe():
        intent = await access.client.v1.setup_intents.create_async(
            {"customer": customer, "usage": "off_session"})
    assert intent.client_secret is not None
    return SetupReply(setup_intent_id=intent.id, client_secret=intent.client_secret, customer_id=customer)


@router.route(PaymentMethods, roles=["consumer"])
async def methods(ctx: Context, req: PaymentMethods) -> MethodList:
    assert ctx.identity is not None
    access = stripe_of(ctx.services)
    customer = await payments.customer_id(ctx.services.db, ctx.identity.user_id)
    if customer is None:
        return MethodList(methods=[])
    with calling_stripe():
        page = await access.client.v1.payment_methods.list_async({"customer": customer, "type": "card",
                                                                  "limit": 100})
    return MethodList(methods=[SavedMethod(id=m.id, brand=m.card.brand, last4=m.card.last4,
                                           exp_month=m.card.exp_month, exp_year=m.card.exp_year)
                               for m in page.data if m.card is not None])


async def own_method(ctx: Context, access: StripeAccess, method_id: str) -> str:
    """The caller's customer id when `method_id` is one of their saved methods; else not_found."""
    assert ctx.identity is not None
    customer = await payments.customer_id(ctx.services.db, ctx.identity.user_id)
    with calling_stripe():
        try:
            method = await access.client.v1.payment_methods.retrieve_async(method_id)
        except stripe.InvalidRequestError:  # no such method: the same answer as someone else's
            method = None
    if customer is None or method is None or method.customer != customer:
        raise NotFound(N_("No such payment method."))
    return customer


@router.route(PaymentMethodRemove, roles=["consumer"])
async def remove_method(ctx: Context, req: PaymentMethodRemove) -> Empty:
    access = stripe_of(ctx.services)
    await own_method(ctx, access, req.payment_method_id)
    with calling_stripe():
        await access.client.v1.payment_methods.detach_async(req.payment_method_id)
    return Empty()


def payment_view(row: asyncpg.Record, state: str, intent: Any = None) -> Payment:
    return Payment(order_id=str(row["order_id"]), intent_id=row["intent_id"], state=state,  # type: ignore[arg-type]
                   policy=row["policy"], amount_cents=row["amount_cents"], currency=row["currency"],
                   refunded_cents=row["refunded_cents"], last_error=row["last_error"],
                   intent_status=intent.status if intent is not None else None,
                   client_secret=intent.client_secret if intent is not None else None)


@router.route(PaymentPay, roles=["consumer"])
async def pay(ctx: Context, req: PaymentPay) -> PaymentReply:
    """Once per order: the intent's idempotency key is the order, so two racing calls (or a retry
    after a lost reply) get the same PaymentIntent and the consumer is charged at most once."""
    assert ctx.identity is not None
    access, db, rules = stripe_of(ctx.services), ctx.services.db, ctx.services.money_rules
    order, _ = await visible_order(ctx, req.order_id)
    if order["consumer_id"] != ctx.identity.user_id:
        raise NotFound(N_("No such order."))
    if order["payment_state"] is None:
        raise Conflict(N_("This order needs no payment."))
    # Paying is for an order that waits for it; a retry after a lost reply gets the payment back.
    waiting = order["state"] == "awaiting_payment"
    row = await payments.payment(db, order["id"])
    if row is None and not waiting:
        raise state_conflict(order)
    if row is None:
        customer = await ensure_customer(ctx, access)
        with calling_stripe():
            intent = await access.client.v1.payment_intents.create_async(
                {"amount": order["price_cents"], "currency": order["currency"].lower(), "customer": customer,
                 "capture_method": "manual" if rules.payment_policy == "capture_at_completion" else "automatic",
                 "transfer_group": f"order-{order['id']}",
                 "metadata": {"order_id": str(order["id"]), "consumer_id": ctx.identity.user_id}},
                {"idempotency_key": f"intent-{order['id']}"})
        row = await payments.keep_payment(db, order["id"], intent.id, rules.payment_policy, order["price_cents"],
                                          order["currency"])
    with calling_stripe():
        intent = await access.client.v1.payment_intents.retrieve_async(row["intent_id"])
    confirmable = intent.status in ("requires_payment_method", "requires_confirmation")
    if req.payment_method_id is not None and not waiting and (confirmable or order["state"] == "cancelled"):
        raise state_conflict(order)
    if req.payment_method_id is not None and confirmable:
        await own_method(ctx, access, req.payment_method_id)
        # One confirmation per card and attempt: a retry after a lost reply replays it; a new try of
        # the same card after a decline (the intent then names the declined charge) is a new one.
        attempt = intent.latest_charge if isinstance(intent.latest_charge, str) else "first"
        with calling_stripe():
            intent = await access.client.v1.payment_intents.confirm_async(
                intent.id, {"payment_method": req.payment_method_id},
                {"idempotency_key": f"confirm-{order['id']}-{req.payment_method_id}-{attempt}"})
    return PaymentReply(payment=payment_view(row, order["payment_state"], intent))


@router.route(PaymentGet, roles=["consumer", "admin"])
async def get(ctx: Context, req: PaymentGet) -> PaymentReply:
    assert ctx.identity is not None
    order, _ = await visible_order(ctx, req.order_id)
    row = await payments.payment(ctx.services.db, order["id"])
    if row is None or (ctx.identity.role == "consumer" and order["consumer_id"] != ctx.identity.user_id):
        raise NotFound(N_("This order has no payment yet."))
    return PaymentReply(payment=payment_view(row, order["payment_state"]))


@router.route(PaymentRefund, roles=["admin"])
async def refund(ctx: Context, req: PaymentRefund) -> PaymentReply:
    """Schedule a refund (a job: it survives a crash and retries). A refund after the technician
    was paid out also reverses their share of it."""
    stripe_of(ctx.services)
    db = ctx.services.db
    order, _ = await visible_order(ctx, req.order_id)
    row = await payments.payment(db, order["id"])
    if row is None or order["payment_state"] not in ("paid", "partially_refunded"):
        raise Conflict(N_("There is no captured payment to refund."), current_state=order["payment_state"])
    async with db.acquire() as conn, conn.transaction():
        await conn.execute("SELECT 1 FROM payments WHERE order_id = $1 FOR UPDATE", order["id"])
        jobs = [j for j in await payments.jobs_of(conn, order["id"]) if j["kind"] == "refund"]
        unfinished = [j for j in jobs if j["state"] in ("pending", "running")]
        if any(j["amount_cents"] is None and j["request"] is None for j in unfinished):
            raise Conflict(N_("A refund of this order is being worked out. Please try again shortly."))
        pending = sum(_asked(j) or 0 for j in unfinished)
        left = row["captured_cents"] - row["refunded_cents"] - pending
        amount = req.amount_cents or left
        if amount > left or amount <= 0:
            raise Conflict(N_("At most {left} can still be refunded."), left=max(left, 0))
        await payments.schedule(conn, "refund", order["id"], step=1 + max((j["step"] for j in jobs), default=0),
                                amount=amount, note=req.reason)
    return PaymentReply(payment=payment_view(row, order["payment_state"]))


def _asked(job: asyncpg.Record) -> int | None:
    if job["request"] is None:
        return job["amount_cents"]  # type: ignore[no-any-return]
    request = json.loads(job["request"])
    return request.get("amount", request.get("amount_to_capture"))  # type: ignore[no-any-return]


def job_view(job: asyncpg.Record) -> MoneyJob:
    return MoneyJob(kind=job["kind"], step=job["step"], state=job["state"], attempts=job["attempts"],
                    due_at=job["due_at"], updated_at=job["updated_at"], result=job["result"],
                    last_error=job["last_error"], note=job["note"], amount_cents=_asked(job), id=str(job["id"]))


@router.route(PaymentAudit, roles=["admin"])
async def audit(ctx: Context, req: PaymentAudit) -> Audit:
    db = ctx.services.db
    order, _ = await visible_order(ctx, req.order_id)
    row, done = await payments.payment(db, order["id"]), await payments.transfer(db, order["id"])
    jobs = [job_view(j) for j in await payments.jobs_of(db, order["id"])]
    payout = PayoutView(transfer_id=done["transfer_id"], technician_id=done["technician_id"],
                        amount_cents=done["amount_cents"], reversed_cents=done["reversed_cents"],
                        currency=done["currency"]) if done else None
    return Audit(order_id=str(order["id"]), payment=payment_view(row, order["payment_state"]) if row else None,
                 payout=payout, jobs=jobs)


# -- applying Stripe's events (see handlers.money.stripe_events) -------------------------------------
async def refresh_payment(ctx: Context, access: StripeAccess, event_id: str, intent_id: str) -> bool:
    services, rules = ctx.services, ctx.services.money_rules
    async with access.applying, services.db.acquire() as conn, conn.transaction():
        if not await payments.claim_event(conn, event_id):
            return False
        pay = await payments.lock_payment(conn, intent_id)
        if pay is None:  # not one of ours
            await payments.mark_applied(conn, event_id)
            return True
        with calling_stripe():
            intent = await access.client.v1.payment_intents.retrieve_async(intent_id, {"expand": ["latest_charge"]})
        state, charge, captured, refunded, error = payment_state(intent)
        await payments.record_payment(conn, pay["order_id"], state=state, charge=charge, captured=captured,
                                      refunded=refunded, error=error)
        opened = None
        enough = ("paid",) if pay["policy"] == "pay_at_creation" else ("authorized", "paid")
        if pay["order_state"] == "awaiting_payment" and state in enough:
            opened = await orders.move(conn, pay["order_id"], from_states=("awaiting_payment",), to_state="open",
                                       actor_id=SYSTEM_ACTOR, actor_role="system", details={"payment": state})
            if opened is not None:
                await push_offline(ctx, conn, opened)
        if refunded > pay["refunded_cents"] and await payments.transfer(conn, pay["order_id"]):
            await payments.schedule(conn, "reversal", pay["order_id"], step=refunded)
        await payments.schedule_settlement(conn, pay["order_id"], transfer_delay_s=rules.payout_delay_s,
                                           cancel_fee_bp=rules.cancellation_fee_bp)
        await payments.mark_applied(conn, event_id)
    if state != pay["payment_state"] or refunded != pay["refunded_cents"]:
        event = PaymentStatus(order_id=str(pay["order_id"]), state=state,  # type: ignore[arg-type]
                              amount_cents=pay["amount_cents"], refunded_cents=refunded, currency=pay["currency"])
        people = [p for p in (pay["consumer_id"], pay["technician_id"]) if p]
        await ctx.deliver_many([(people, event)])
        await feed.publish(ctx, "payment", brand=pay["brand_id"], order_id=str(pay["order_id"]), state=state,
                           previous_state=pay["payment_state"], amount_cents=pay["amount_cents"])
    if opened is not None:
        await announce(ctx, opened)
        await tell_parties(ctx, opened)
    return True
