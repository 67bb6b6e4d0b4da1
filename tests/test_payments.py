"""Consumers pay through Stripe: saved cards, both payment policies end to end, cancellation,
double payment, and webhooks (bad signature, stale timestamp, duplicate, out of order, lost).
The real stripe SDK talks to the local Stripe server (localstripe plus what it lacks)."""

import asyncio
import hashlib
import hmac
import json
import time
import uuid

import httpx
import pytest

from protocol.client import ErrorReply
from protocol.orders import OrderAccept, OrderCancel, OrderGet, OrderTimeline
from protocol.payments import PaymentGet, PaymentMethodRemove, PaymentMethods, PaymentPay, PaymentRefund, PaymentSetup
from tests.money import (
    FEE_BP,
    WEBHOOK_SECRET,
    app_stripe,
    complete,
    jobs,
    onboarded,
    paid_order,
    paying_gateway,
    payment_reaches,
    posts,
    save_card,
    until,
)
from tests.world import events, order_at, quiet, refused, spot, technician


@pytest.fixture
async def pay_later(make_gateway, stripe_server):
    async with paying_gateway(make_gateway, stripe_server, cancellation_fee_bp=1000) as gw:
        yield gw


@pytest.fixture
async def pay_first(make_gateway, stripe_server):
    async with paying_gateway(make_gateway, stripe_server, payment_policy="pay_at_creation",
                              cancellation_fee_bp=1000) as gw:
        yield gw


@pytest.fixture
def app(stripe_server):
    return app_stripe(stripe_server)


async def payment_state(consumer, order_id):
    return (await consumer.request(OrderGet(order_id=order_id))).order.payment_state


async def test_a_consumer_saves_lists_and_removes_cards(pay_later, signed_in, app):
    consumer, _ = await signed_in("consumer", gw=pay_later)
    assert (await consumer.request(PaymentMethods())).methods == []
    card = await save_card(consumer, app)
    [saved] = (await consumer.request(PaymentMethods())).methods
    assert (saved.id, saved.last4, saved.exp_month, saved.exp_year) == (card, "4242", 12, 2031)
    again = await consumer.request(PaymentSetup())  # same customer the second time
    assert again.customer_id == (await consumer.request(PaymentSetup())).customer_id
    stranger, _ = await signed_in("consumer", gw=pay_later)
    assert (await refused(stranger, PaymentMethodRemove(payment_method_id=card))).code == "not_found"
    await consumer.request(PaymentMethodRemove(payment_method_id=card))
    assert (await consumer.request(PaymentMethods())).methods == []


async def test_authorize_at_creation_capture_at_completion(pay_later, signed_in, app, stripe_server):
    place = spot()
    consumer, _ = await signed_in("consumer", gw=pay_later)
    tech, _ = await technician(signed_in, place, connect={"gw": pay_later})
    card = await save_card(consumer, app)
    order = (await consumer.request(order_at(place))).order
    assert await quiet(tech, "order.available")  # not in the pool before the card is authorized
    assert (await refused(consumer, PaymentGet(order_id=order.id))).code == "not_found"  # nothing to show yet
    payment = (await consumer.request(PaymentPay(order_id=order.id, payment_method_id=card))).payment
    assert (payment.policy, payment.amount_cents, payment.intent_status) == (
        "capture_at_completion", order.price_cents, "requires_capture")
    [status] = await events(consumer, "payment.status")
    assert status.state == "authorized"
    [offered] = await events(tech, "order.available")
    assert offered.order.id == order.id
    intent = await app.v1.payment_intents.retrieve_async(payment.intent_id)
    assert intent.transfer_group == f"order-{order.id}" and intent.metadata["order_id"] == order.id

    await onboarded(tech)
    await complete(tech, order.id)
    await payment_reaches(consumer, "paid")
    assert (await payment_reaches(tech, "paid")).order_id == order.id  # the technician is told too
    assert await payment_state(consumer, order.id) == "paid"
    got = (await consumer.request(PaymentGet(order_id=order.id))).payment
    assert (got.state, got.amount_cents, got.refunded_cents, got.intent_id, got.client_secret) == (
        "paid", order.price_cents, 0, payment.intent_id, None)
    stranger, _ = await signed_in("consumer", gw=pay_later)
    assert (await refused(stranger, PaymentGet(order_id=order.id))).code == "not_found"
    assert (await refused(tech, PaymentGet(order_id=order.id))).code == "forbidden"
    captured = await app.v1.payment_intents.retrieve_async(payment.intent_id)
    assert captured.status == "succeeded" and captured.amount_received == order.price_cents
    # Captured at completion, then paid out after the delay, from that charge.
    transfer_id = await until(lambda: pay_later.services.db.fetchval(
        "SELECT transfer_id FROM transfers WHERE order_id = $1", uuid.UUID(order.id)))
    transfer = await app.v1.transfers.retrieve_async(transfer_id)
    assert transfer.source_transaction == captured.latest_charge
    assert transfer.amount == order.price_cents * (10_000 - FEE_BP) // 10_000
    timeline = (await consumer.request(OrderTimeline(order_id=order.id))).entries
    assert (timeline[1].from_state, timeline[1].to_state, timeline[1].actor_role) == (
        "awaiting_payment", "open", "system")
    # Stripe's events are kept as references only: their payloads carry billing details.
    stored = await pay_later.services.db.fetch("SELECT payload FROM stripe_events WHERE payload::text LIKE $1",
                                               f"%{payment.intent_id}%")
    assert stored and all(json.loads(r["payload"]) == {"object": {"id": payment.intent_id, "object": "payment_intent"}}
                          for r in stored)


async def test_pay_at_creation_opens_the_order_once_paid(pay_first, signed_in, app):
    consumer, tech, order_id, _ = await paid_order(pay_first, signed_in, app)
    assert await payment_state(consumer, order_id) == "paid"
    await complete(tech, order_id)
    transfer_job = await until(lambda: _job(pay_first, order_id, "transfer"))
    assert transfer_job["kind"] == "transfer" and not [j for j in await jobs(pay_first, order_id)
                                                        if j["kind"] == "capture"]


async def _job(gw, order_id, kind):
    return next((j for j in await jobs(gw, order_id) if j["kind"] == kind), None)


async def test_a_declined_card_leaves_the_order_waiting(pay_first, signed_in, app):
    consumer, _ = await signed_in("consumer", gw=pay_first)
    card = await save_card(consumer, app, number="4000000000000341")  # attaches, declines on charge
    order = (await consumer.request(order_at(spot()))).order
    with pytest.raises(ErrorReply) as declined:
        await consumer.request(PaymentPay(order_id=order.id, payment_method_id=card))
    assert declined.value.code == "payment_declined"
    [status] = await events(consumer, "payment.status")
    assert status.state == "failed"
    assert (await consumer.request(OrderGet(order_id=order.id))).order.state == "awaiting_payment"
    good = await save_card(consumer, app)
    await consumer.request(PaymentPay(order_id=order.id, payment_method_id=good))
    await payment_reaches(consumer, "paid")
    assert (await consumer.request(OrderGet(order_id=order.id))).order.state == "open"


async def test_cancelling_before_service_releases_the_authorization(pay_later, signed_in, app):
    consumer, _, order_id, _ = await paid_order(pay_later, signed_in, app)
    await consumer.request(OrderCancel(order_id=order_id))
    await payment_reaches(consumer, "canceled")
    assert [(j["kind"], j["state"]) for j in await jobs(pay_later, order_id)] == [("cancel", "done")]


async def test_cancelling_a_paid_order_refunds_it_less_the_fee_once_accepted(pay_first, signed_in, app):
    consumer, tech, order_id, _ = await paid_order(pay_first, signed_in, app)
    await tech.request(OrderAccept(order_id=order_id))
    await consumer.request(OrderCancel(order_id=order_id))
    status = await payment_reaches(consumer, "partially_refunded")
    price = status.amount_cents
    assert (status.state, status.refunded_cents) == ("partially_refunded", price - price * 1000 // 10_000)

    early, _, unaccepted, _ = await paid_order(pay_first, signed_in, app)
    await early.request(OrderCancel(order_id=unaccepted))
    status = await payment_reaches(early, "refunded")
    assert (status.state, status.refunded_cents) == ("refunded", status.amount_cents)


async def test_paying_twice_at_once_makes_one_payment(pay_later, signed_in, app, stripe_server):
    consumer, _ = await signed_in("consumer", gw=pay_later)
    order = (await consumer.request(order_at(spot()))).order
    before = len(posts(stripe_server, "/v1/payment_intents"))
    first, second = await asyncio.gather(consumer.request(PaymentPay(order_id=order.id)),
                                         consumer.request(PaymentPay(order_id=order.id)))
    again = await consumer.request(PaymentPay(order_id=order.id))
    assert first.payment.intent_id == second.payment.intent_id == again.payment.intent_id
    assert len(posts(stripe_server, "/v1/payment_intents")) == before + 1
    assert first.payment.client_secret and first.payment.state == "unpaid"


async def test_only_the_orders_consumer_pays(pay_later, signed_in):
    consumer, _ = await signed_in("consumer", gw=pay_later)
    order = (await consumer.request(order_at(spot()))).order
    other, _ = await signed_in("consumer", gw=pay_later)
    with pytest.raises(ErrorReply) as refused:
        await other.request(PaymentPay(order_id=order.id))
    assert refused.value.code == "not_found"


async def test_without_stripe_payments_are_unavailable_and_orders_open_at_once(gateway, signed_in):
    consumer, _ = await signed_in("consumer")
    with pytest.raises(ErrorReply) as refused:
        await consumer.request(PaymentSetup())
    assert refused.value.code == "unavailable"
    order = (await consumer.request(order_at(spot()))).order
    assert (order.state, order.payment_state) == ("open", None)


# -- webhooks ---------------------------------------------------------------------------------
def signed(event: dict, secret: str = WEBHOOK_SECRET, at: int | None = None) -> tuple[bytes, dict[str, str]]:
    payload = json.dumps(event).encode()
    at = at or int(time.time())
    signature = hmac.new(secret.encode(), f"{at}.".encode() + payload, hashlib.sha256).hexdigest()
    return payload, {"Stripe-Signature": f"t={at},v1={signature}", "Content-Type": "application/json"}


def fake_event(kind: str, obj: dict, created: int | None = None) -> dict:
    return {"id": f"evt_test_{uuid.uuid4().hex[:16]}", "object": "event", "type": kind, "api_version": "2024-06-20",
            "created": created or int(time.time()), "livemode": False, "data": {"object": obj}}


async def stored(gw, event_id):
    return await gw.services.db.fetchrow("SELECT * FROM stripe_events WHERE id = $1", event_id)


async def test_webhooks_with_a_bad_signature_or_an_old_timestamp_are_refused(pay_later):
    url = f"http://127.0.0.1:{pay_later.http_port}/stripe/webhook"
    event = fake_event("payment_intent.succeeded", {"id": "pi_nope", "object": "payment_intent"})
    async with httpx.AsyncClient() as http:
        forged = await http.post(url, content=signed(event, secret="whsec_someone_else")[0],
                                 headers=signed(event, secret="whsec_someone_else")[1])
        payload, headers = signed(event, at=int(time.time()) - 3600)
        stale = await http.post(url, content=payload, headers=headers)
        unsigned = await http.post(url, content=json.dumps(event).encode())
        metrics = (await http.get(f"http://127.0.0.1:{pay_later.http_port}/metrics")).text
        health = await http.get(f"http://127.0.0.1:{pay_later.http_port}/healthz")
    assert (health.status_code, health.json()["postgres"], health.json()["redis"]) == (200, "ok", "ok")
    assert (forged.status_code, stale.status_code, unsigned.status_code) == (400, 400, 400)
    assert await stored(pay_later, event["id"]) is None  # nothing recorded
    assert 'gateway_stripe_webhooks_total{outcome="refused"} 3.0' in metrics


async def test_a_duplicate_and_an_out_of_order_event_change_nothing(pay_first, signed_in, app):
    consumer, _, order_id, _ = await paid_order(pay_first, signed_in, app)
    await payment_reaches(consumer, "paid")
    intent_id = (await consumer.request(PaymentPay(order_id=order_id))).payment.intent_id
    url = f"http://127.0.0.1:{pay_first.http_port}/stripe/webhook"
    late = fake_event("payment_intent.payment_failed", {"id": intent_id, "object": "payment_intent",
                                                        "status": "requires_payment_method"},
                      created=int(time.time()) - 60)
    async with httpx.AsyncClient() as http:
        first = await http.post(url, content=signed(late)[0], headers=signed(late)[1])
        again = await http.post(url, content=signed(late)[0], headers=signed(late)[1])
    assert (first.status_code, again.status_code) == (200, 200)
    assert (first.json()["duplicate"], again.json()["duplicate"]) == (False, True)
    assert (await stored(pay_first, late["id"]))["applied_at"] is not None
    # Applied, but Stripe says the intent succeeded: an old failure cannot undo the payment.
    assert await payment_state(consumer, order_id) == "paid"
    assert await quiet(consumer, "payment.status", wait=0.3)


async def test_a_lost_webhook_is_applied_by_the_reconciler(make_gateway, stripe_server, signed_in, app):
    async with paying_gateway(make_gateway, stripe_server, payment_policy="pay_at_creation",
                              reconcile_interval_s=0.5, reconcile_lookback_s=120) as gw:
        stripe_server.drop("payment_intent.succeeded")
        try:
            consumer, _ = await signed_in("consumer", gw=gw)
            card = await save_card(consumer, app)
            order = (await consumer.request(order_at(spot()))).order
            await consumer.request(PaymentPay(order_id=order.id, payment_method_id=card))
            await payment_reaches(consumer, "paid")
        finally:
            stripe_server.drop()
        assert (await consumer.request(OrderGet(order_id=order.id))).order.state == "open"
        dropped = [d for d in stripe_server.deliveries() if d["type"] == "payment_intent.succeeded" and d["dropped"]]
        assert dropped and (await stored(gw, dropped[-1]["id"]))["source"] == "reconcile"


async def test_cancelling_after_acceptance_captures_only_the_fee(pay_later, signed_in, app):
    consumer, tech, order_id, _ = await paid_order(pay_later, signed_in, app)
    await tech.request(OrderAccept(order_id=order_id))
    await consumer.request(OrderCancel(order_id=order_id))
    [job] = [j for j in await until(lambda: _settled_jobs(pay_later, order_id))]
    price = (await consumer.request(OrderGet(order_id=order_id))).order.price_cents
    assert (job["kind"], job["amount_cents"]) == ("capture", price * 1000 // 10_000)
    pay = await until(lambda: _captured(pay_later, order_id))
    assert pay["captured_cents"] - pay["refunded_cents"] == price * 1000 // 10_000  # the consumer pays the fee


async def _settled_jobs(gw, order_id):
    found = await jobs(gw, order_id)
    return found if found and all(j["state"] == "done" for j in found) else None


async def _captured(gw, order_id):
    return await gw.services.db.fetchrow("SELECT * FROM payments WHERE order_id = $1 AND captured_cents > 0",
                                         uuid.UUID(order_id))


async def test_cancelling_after_a_partial_refund_refunds_the_rest(pay_first, signed_in, app):
    consumer, _, order_id, _ = await paid_order(pay_first, signed_in, app)
    admin, _ = await signed_in("admin", gw=pay_first)
    await admin.request(PaymentRefund(order_id=order_id, amount_cents=1000, reason="goodwill"))
    await payment_reaches(consumer, "partially_refunded")
    await consumer.request(OrderCancel(order_id=order_id))  # nobody had accepted it: no fee
    status = await payment_reaches(consumer, "refunded")
    assert status.refunded_cents == status.amount_cents
    refunds = [j for j in await jobs(pay_first, order_id) if j["kind"] == "refund"]
    assert sorted(json.loads(j["request"])["amount"] for j in refunds) == sorted([1000, status.amount_cents - 1000])


async def test_a_cancelled_order_cannot_be_paid_afterwards(pay_later, signed_in, app):
    consumer, _ = await signed_in("consumer", gw=pay_later)
    card = await save_card(consumer, app)
    order = (await consumer.request(order_at(spot()))).order
    intent = (await consumer.request(PaymentPay(order_id=order.id))).payment  # created, not confirmed
    await consumer.request(OrderCancel(order_id=order.id))
    await payment_reaches(consumer, "canceled")  # the unconfirmed intent is cancelled at Stripe
    with pytest.raises(ErrorReply) as refused:
        await consumer.request(PaymentPay(order_id=order.id, payment_method_id=card))
    assert refused.value.code == "conflict"
    assert (await app.v1.payment_intents.retrieve_async(intent.intent_id)).status == "canceled"
