"""Shared pieces of the payment tests: a gateway wired to the local Stripe server, the app's side
of Stripe (what the phone's Stripe SDK would do), and an order walked to a given point."""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import stripe

from gateway.server import Gateway
from protocol.client import Client
from protocol.orders import OrderAccept, OrderComplete, OrderDepart, OrderStart
from protocol.payments import PaymentPay, PaymentSetup, PayoutOnboard
from tests.stripe_server import StripeServer
from tests.world import events, order_at, spot, technician

API_KEY = "sk_test_dispatch_gateway"
WEBHOOK_SECRET = "whsec_dispatch_gateway_tests"
FEE_BP = 1500  # the platform's share (the gateway's default)


def stripe_settings(server: StripeServer, **overrides: Any) -> dict[str, Any]:
    return {"stripe_api_key": API_KEY, "stripe_api_base": server.url, "stripe_webhook_secret": WEBHOOK_SECRET,
            "payout_delay_s": 0.3, "money_poll_s": 0.05, "money_retry_base_s": 0.1, "money_max_attempts": 4,
            "reconcile_interval_s": 3600, **overrides}


@contextlib.asynccontextmanager
async def paying_gateway(make_gateway: Callable[..., Any], server: StripeServer,
                         **overrides: Any) -> AsyncIterator[Gateway]:
    """A gateway with Stripe on, its webhook endpoint registered with the Stripe server."""
    async with make_gateway(**stripe_settings(server, **overrides)) as gw:
        name = f"gw-{uuid.uuid4().hex[:8]}"
        server.add_webhook(name, f"http://127.0.0.1:{gw.http_port}/stripe/webhook", WEBHOOK_SECRET)
        try:
            yield gw
        finally:
            server.remove_webhook(name)


def app_stripe(server: StripeServer) -> stripe.StripeClient:
    """What the phone's Stripe SDK does with a client secret, played with the server-side SDK."""
    return stripe.StripeClient(API_KEY, base_addresses={"api": server.url}, http_client=stripe.HTTPXClient())


async def save_card(consumer: Client, app: stripe.StripeClient, number: str = "4242424242424242") -> str:
    setup = await consumer.request(PaymentSetup())
    method = await app.v1.payment_methods.create_async(
        {"type": "card", "card": {"number": number, "exp_month": 12, "exp_year": 2031, "cvc": "123"}})
    await app.v1.setup_intents.confirm_async(setup.setup_intent_id, {"payment_method": method.id})
    return method.id


async def until(probe: Callable[[], Awaitable[Any]], timeout: float = 15.0) -> Any:
    """Poll until `probe` returns something truthy; return it."""
    async with asyncio.timeout(timeout):
        while not (found := await probe()):
            await asyncio.sleep(0.05)
    return found


async def onboarded(tech: Client) -> str:
    """The technician goes through Stripe's hosted onboarding; returns the account id."""
    link = await tech.request(PayoutOnboard())
    async with httpx.AsyncClient(follow_redirects=True) as browser:
        page = await browser.get(link.url)
    assert page.status_code == 200 and "return to the app" in page.text
    return str(link.account_id)


async def paid_order(gw: Gateway, signed_in: Callable[..., Any], app: stripe.StripeClient,
                     place: tuple[float, float] | None = None, **order: Any) -> tuple[Client, Client, str, str]:
    """A consumer's order, paid (or authorized) with a saved card, open in the pool with an
    on-duty technician beside it. Returns (consumer, technician, order id, technician id)."""
    place = place or spot()
    consumer, _ = await signed_in("consumer", gw=gw)
    tech, tech_id = await technician(signed_in, place, connect={"gw": gw})
    card = await save_card(consumer, app)
    made = (await consumer.request(order_at(place, **order))).order
    assert made.state == "awaiting_payment" and made.payment_state == "unpaid"
    await consumer.request(PaymentPay(order_id=made.id, payment_method_id=card))
    await events(tech, "order.available")
    return consumer, tech, made.id, tech_id


async def complete(tech: Client, order_id: str) -> None:
    for step in (OrderAccept, OrderDepart, OrderStart):
        await tech.request(step(order_id=order_id))
    await tech.request(OrderComplete(order_id=order_id))


def posts(server: StripeServer, path: str) -> list[dict[str, Any]]:
    """The API calls that did something (idempotent replays left out)."""
    return [r for r in server.requests() if r["method"] == "POST" and r["path"] == path and not r["replayed"]
            and r["status"] == 200]


async def jobs(gw: Gateway, order_id: str) -> list[dict[str, Any]]:
    rows = await gw.services.db.fetch("SELECT * FROM money_jobs WHERE order_id = $1 ORDER BY id",
                                      uuid.UUID(order_id))
    return [dict(r) for r in rows]


async def payment_reaches(client: Client, state: str, timeout: float = 15.0) -> Any:
    """The first `payment.status` event with this state (earlier ones skipped)."""
    async with asyncio.timeout(timeout):
        while (event := (await events(client, "payment.status", timeout=timeout))[0]).state != state:
            pass
    return event
