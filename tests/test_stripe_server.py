"""The Stripe test server driven through the real SDK (async client): each test shows something it adds to
localstripe, as a user of the SDK would notice it."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import stripe
from aiohttp import web

from tests.stripe_server import StripeServer

SECRET = "whsec_test_secret"
CARD = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2034, "cvc": "123"}
MakeClient = Callable[..., stripe.StripeClient]


class Receiver:
    """A webhook endpoint that keeps, in arrival order, the events whose signature checks out."""

    def __init__(self) -> None:
        self.events: list[stripe.Event] = []

    async def handle(self, request: web.Request) -> web.Response:
        try:
            event = stripe.Webhook.construct_event(await request.text(), request.headers.get("Stripe-Signature"),
                                                   SECRET)
        except stripe.SignatureVerificationError:
            return web.Response(status=400)
        self.events.append(event)
        return web.Response()

    def find(self, type: str, object_id: str) -> stripe.Event | None:
        return next((e for e in self.events if e.type == type and e.data.object.id == object_id), None)

    async def wait_for(self, type: str, object_id: str) -> stripe.Event:
        deadline = time.monotonic() + 3
        while (event := self.find(type, object_id)) is None:
            assert time.monotonic() < deadline, f"no {type} for {object_id}: {[e.type for e in self.events]}"
            await asyncio.sleep(0.01)
        return event


@pytest.fixture
async def receiver(stripe_server: StripeServer) -> AsyncIterator[Receiver]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    name = uuid.uuid4().hex
    stripe_server.add_webhook(name, f"http://127.0.0.1:{runner.addresses[0][1]}/", SECRET)
    yield receiver
    stripe_server.remove_webhook(name)
    await runner.cleanup()


@pytest.fixture
async def sdk(stripe_server: StripeServer) -> AsyncIterator[MakeClient]:
    """`sdk(timeout=..., retries=..., server=...)`: SDK clients of a test server, closed after the test."""
    made: list[stripe.HTTPXClient] = []

    def make(timeout: float = 10, retries: int = 0, server: StripeServer = stripe_server) -> stripe.StripeClient:
        made.append(stripe.HTTPXClient(timeout=timeout))
        url = server.url
        return stripe.StripeClient("sk_test_fake", base_addresses={"api": url, "connect": url}, http_client=made[-1],
                                   max_network_retries=retries)

    yield make
    for http in made:
        await http.close_async()


@pytest.fixture
def client(sdk: MakeClient) -> stripe.StripeClient:
    return sdk()


async def saved_card(client: stripe.StripeClient) -> tuple[str, str]:
    """(customer, payment method) through a SetupIntent, as the apps save cards."""
    customer = await client.v1.customers.create_async({"email": "consumer@example.com"})
    method = await client.v1.payment_methods.create_async({"type": "card", "card": CARD})
    setup = await client.v1.setup_intents.create_async({"customer": customer.id})
    setup = await client.v1.setup_intents.confirm_async(setup.id, {"payment_method": method.id})
    assert setup.status == "succeeded"
    return customer.id, method.id


async def paid_charge(client: stripe.StripeClient, amount: int, group: str) -> str:
    customer, method = await saved_card(client)
    intent = await client.v1.payment_intents.create_async({
        "amount": amount, "currency": "usd", "customer": customer, "payment_method": method, "confirm": True,
        "transfer_group": group})
    assert intent.status == "succeeded" and isinstance(intent.latest_charge, str)
    return intent.latest_charge


async def onboarded_account(client: stripe.StripeClient) -> str:
    account = await client.v1.accounts.create_async({
        "type": "express", "capabilities": {"transfers": {"requested": True}}})
    link = await client.v1.account_links.create_async({
        "account": account.id, "type": "account_onboarding", "refresh_url": "https://app.example/again",
        "return_url": "https://app.example/done"})
    async with httpx.AsyncClient() as browser:
        assert (await browser.get(link.url)).status_code == 302
    return account.id


async def test_setup_intent_saves_the_card_on_the_customer(client: stripe.StripeClient) -> None:
    customer, method = await saved_card(client)
    cards = await client.v1.payment_methods.list_async({"customer": customer, "type": "card"})
    assert [(card.id, card.card.last4) for card in cards.data] == [(method, "4242")]
    await client.v1.payment_methods.detach_async(method)
    assert (await client.v1.payment_methods.list_async({"customer": customer, "type": "card"})).data == []


async def test_manual_capture_and_refunds_send_signed_webhooks_in_order(client: stripe.StripeClient,
                                                                        receiver: Receiver) -> None:
    start = int(time.time())
    customer, method = await saved_card(client)
    intent = await client.v1.payment_intents.create_async({
        "amount": 5000, "currency": "usd", "customer": customer, "capture_method": "manual", "transfer_group": "g1"})
    intent = await client.v1.payment_intents.confirm_async(intent.id, {"payment_method": method})
    assert (intent.status, intent.amount_capturable, intent.amount_received) == ("requires_capture", 5000, 0)
    assert intent.transfer_group == "g1" and intent.latest_charge.startswith("ch_")
    with pytest.raises(stripe.InvalidRequestError, match="You must cancel the PaymentIntent"):
        await client.v1.refunds.create_async({"payment_intent": intent.id})

    intent = await client.v1.payment_intents.capture_async(intent.id)
    assert (intent.status, intent.amount_capturable, intent.amount_received) == ("succeeded", 0, 5000)
    await client.v1.refunds.create_async({"payment_intent": intent.id, "amount": 2000})
    with pytest.raises(stripe.InvalidRequestError, match=r"Refund amount \(\$40\.00\) is greater than unrefunded "
                                                          r"amount on charge \(\$30\.00\)"):
        await client.v1.refunds.create_async({"payment_intent": intent.id, "amount": 4000})
    expanded = await client.v1.payment_intents.retrieve_async(intent.id, {"expand": ["latest_charge"]})
    assert (expanded.latest_charge.id, expanded.latest_charge.amount_refunded) == (intent.latest_charge, 2000)

    authorized = await receiver.wait_for("payment_intent.amount_capturable_updated", intent.id)
    succeeded = await receiver.wait_for("payment_intent.succeeded", intent.id)
    refunded = await receiver.wait_for("charge.refunded", intent.latest_charge)
    assert receiver.events.index(authorized) < receiver.events.index(succeeded) < receiver.events.index(refunded)
    assert succeeded.data.object.latest_charge == intent.latest_charge and succeeded.livemode is False
    assert (refunded.data.object.amount_refunded, refunded.data.object.refunded) == (2000, False)
    assert refunded.request.idempotency_key and refunded.pending_webhooks == 1  # this very delivery

    ours = {authorized.id, succeeded.id, refunded.id}
    listed = await client.v1.events.list_async({"created": {"gte": start}, "limit": 100})
    assert [event.id for event in listed.data if event.id in ours] == [refunded.id, succeeded.id, authorized.id]
    assert {event.pending_webhooks for event in listed.data if event.id in ours} == {0}  # all delivered
    newest = await client.v1.events.list_async({"type": "charge.refunded", "limit": 1})
    assert [event.id for event in newest.data] == [refunded.id] and newest.has_more is not None
    older = await client.v1.events.list_async({"created": {"gte": start}, "limit": 1, "starting_after": refunded.id})
    assert [event.id for event in older.data] == [succeeded.id]


async def test_canceling_an_authorization(client: stripe.StripeClient, receiver: Receiver) -> None:
    customer, method = await saved_card(client)
    intent = await client.v1.payment_intents.create_async({
        "amount": 800, "currency": "usd", "customer": customer, "payment_method": method, "confirm": True,
        "capture_method": "manual"})
    intent = await client.v1.payment_intents.cancel_async(intent.id, {"cancellation_reason": "abandoned"})
    assert (intent.status, intent.cancellation_reason, intent.amount_capturable) == ("canceled", "abandoned", 0)
    assert (await receiver.wait_for("payment_intent.canceled", intent.id)).data.object.status == "canceled"


async def test_a_dropped_webhook_is_an_event_never_sent(client: stripe.StripeClient, receiver: Receiver,
                                                       stripe_server: StripeServer) -> None:
    stripe_server.drop("payment_intent.succeeded")
    try:
        charge = await paid_charge(client, 1500, "g2")
    finally:
        stripe_server.drop()
    await client.v1.refunds.create_async({"charge": charge})
    await receiver.wait_for("charge.refunded", charge)  # sent after the dropped one: that one is not coming
    lost = (await client.v1.events.list_async({"type": "payment_intent.succeeded", "limit": 1})).data[0]
    assert lost.data.object.latest_charge == charge and receiver.find(lost.type, lost.data.object.id) is None
    assert [d["dropped"] for d in stripe_server.deliveries() if d["id"] == lost.id] == [True]


async def test_idempotency_keys_replay_the_first_answer(client: stripe.StripeClient,
                                                        stripe_server: StripeServer) -> None:
    key = uuid.uuid4().hex
    first = await client.v1.customers.create_async({"email": "a@example.com"}, {"idempotency_key": key})
    again = await client.v1.customers.create_async({"email": "a@example.com"}, {"idempotency_key": key})
    assert again.id == first.id and again.last_response.headers["Idempotent-Replayed"] == "true"
    with pytest.raises(stripe.IdempotencyError, match="same parameters"):
        await client.v1.customers.create_async({"email": "b@example.com"}, {"idempotency_key": key})
    log = [(r["replayed"], r["status"]) for r in stripe_server.requests() if r["idempotency_key"] == key]
    assert log == [(False, 200), (True, 200), (False, 400)]

    racing = uuid.uuid4().hex
    created = await asyncio.gather(*(client.v1.customers.create_async({"email": "c@example.com"},
                                                                      {"idempotency_key": racing}) for _ in range(5)))
    assert len({customer.id for customer in created}) == 1


async def test_connect_onboarding_transfers_and_reversals(client: stripe.StripeClient, receiver: Receiver) -> None:
    account = await client.v1.accounts.create_async({
        "type": "express", "country": "US", "email": "tech@example.com", "metadata": {"user": "t1"},
        "capabilities": {"transfers": {"requested": True}}})
    assert account.id.startswith("acct_") and account.capabilities.transfers == "inactive"
    assert not account.payouts_enabled and "external_account" in account.requirements.currently_due
    charge = await paid_charge(client, 1000, "g3")
    transfer = {"amount": 700, "currency": "usd", "destination": account.id, "source_transaction": charge,
                "transfer_group": "g3", "metadata": {"order": "o3"}}
    with pytest.raises(stripe.InvalidRequestError, match="capabilities"):
        await client.v1.transfers.create_async(transfer)

    link = await client.v1.account_links.create_async({
        "account": account.id, "type": "account_onboarding", "refresh_url": "https://app.example/again",
        "return_url": "https://app.example/done"})
    async with httpx.AsyncClient() as browser:
        page = await browser.get(link.url)
    assert (page.status_code, page.headers["location"]) == (302, "https://app.example/done")
    account = await client.v1.accounts.retrieve_async(account.id)
    assert account.payouts_enabled and account.details_submitted and account.capabilities.transfers == "active"
    assert (await receiver.wait_for("account.updated", account.id)).data.object.payouts_enabled

    made = await client.v1.transfers.create_async(transfer)
    assert (made.amount, made.amount_reversed, made.reversed, made.source_transaction) == (700, 0, False, charge)
    assert (await receiver.wait_for("transfer.created", made.id)).data.object.metadata.order == "o3"
    with pytest.raises(stripe.InvalidRequestError, match="greater than the amount available"):
        await client.v1.transfers.create_async({**transfer, "amount": 400})

    reversal = await client.v1.transfers.reversals.create_async(made.id, {"amount": 300})
    assert (reversal.object, reversal.amount, reversal.transfer) == ("transfer_reversal", 300, made.id)
    with pytest.raises(stripe.InvalidRequestError, match="greater than unreversed amount"):
        await client.v1.transfers.reversals.create_async(made.id, {"amount": 500})
    made = await client.v1.transfers.retrieve_async(made.id)
    assert (made.amount_reversed, made.reversed, [r.id for r in made.reversals.data]) == (300, False, [reversal.id])
    assert (await receiver.wait_for("transfer.reversed", made.id)).data.object.amount_reversed == 300
    listed = await client.v1.transfers.list_async({"transfer_group": "g3", "destination": account.id})
    assert [t.id for t in listed.data] == [made.id]


async def test_injected_failure_and_stall(sdk: MakeClient, stripe_server: StripeServer) -> None:
    client = sdk()
    account, charge = await onboarded_account(client), await paid_charge(client, 1000, "g4")
    transfer: dict[str, Any] = {"amount": 100, "currency": "usd", "destination": account, "source_transaction": charge}
    stripe_server.fail("/v1/transfers")
    with pytest.raises(stripe.APIError):
        await client.v1.transfers.create_async(transfer)
    stripe_server.fail("/v1/transfers")
    key = uuid.uuid4().hex
    await sdk(retries=2).v1.transfers.create_async(transfer, {"idempotency_key": key})  # the SDK's own retry
    assert [r["status"] for r in stripe_server.requests() if r["idempotency_key"] == key] == [500, 200]
    assert len((await client.v1.transfers.list_async({"destination": account})).data) == 1

    stripe_server.stall("/v1/transfers", seconds=3)
    key = uuid.uuid4().hex
    with pytest.raises(stripe.APIConnectionError):
        await sdk(timeout=0.3).v1.transfers.create_async({**transfer, "transfer_group": key}, {"idempotency_key": key})
    again = await client.v1.transfers.create_async({**transfer, "transfer_group": key}, {"idempotency_key": key})
    assert again.last_response.headers["Idempotent-Replayed"] == "true"
    assert [t.id for t in (await client.v1.transfers.list_async({"transfer_group": key})).data] == [again.id]
    posts = [r for r in stripe_server.requests() if r["path"] == "/v1/transfers" and r["idempotency_key"] == key]
    assert [r["replayed"] for r in posts] == [False, True]
    assert len((await client.v1.transfers.list_async({"destination": account})).data) == 2


async def test_each_server_has_its_own_data_and_reset_forgets_it(sdk: MakeClient) -> None:
    here = await sdk().v1.customers.create_async({"email": "here@example.com"})
    with StripeServer() as other:
        there = sdk(server=other)
        with pytest.raises(stripe.InvalidRequestError):
            await there.v1.customers.retrieve_async(here.id)
        first = await there.v1.customers.create_async({"email": "there@example.com"}, {"idempotency_key": "k1"})
        other.fail("/v1/customers")
        other.reset()
        assert other.requests() == []
        again = await there.v1.customers.create_async({"email": "there@example.com"}, {"idempotency_key": "k1"})
        assert again.id != first.id  # the key, the failure rule and the customer are all forgotten
        with pytest.raises(stripe.InvalidRequestError):
            await there.v1.customers.retrieve_async(first.id)
