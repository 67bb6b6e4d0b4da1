"""Technicians are paid through Stripe Connect: onboarding, the delayed transfer of a completed
job (amount less the platform fee, from the order's charge), waiting for payouts to be enabled,
a transfer that fails then succeeds, a refund that reverses the transfer, and gateway processes
killed between scheduling and executing a transfer (exactly one transfer afterwards)."""

import asyncio
import json
import uuid

import pytest

from protocol.auth import Auth
from protocol.client import Client, ErrorReply
from protocol.location import Duty, LocationUpdate, TechStats
from protocol.orders import OrderGet
from protocol.payments import PaymentAudit, PaymentPay, PaymentRefund, PayoutStatus
from storage import payments as payments_storage
from tests.conftest import SECRET, mint
from tests.money import (
    API_KEY,
    FEE_BP,
    WEBHOOK_SECRET,
    app_stripe,
    complete,
    onboarded,
    paid_order,
    paying_gateway,
    payment_reaches,
    posts,
    save_card,
    until,
)
from tests.processes import GatewayProcess
from tests.world import brand_with_sku, order_at, spot


@pytest.fixture
async def gw(make_gateway, stripe_server):
    async with paying_gateway(make_gateway, stripe_server, payment_policy="pay_at_creation") as served:
        yield served


@pytest.fixture
def app(stripe_server):
    return app_stripe(stripe_server)


async def transfer_of(gw, order_id):
    return await gw.services.db.fetchrow("SELECT * FROM transfers WHERE order_id = $1", uuid.UUID(order_id))


async def test_onboarding_then_payout_after_the_delay(gw, signed_in, app, stripe_server):
    consumer, tech, order_id, _ = await paid_order(gw, signed_in, app)
    before = await tech.request(PayoutStatus())
    assert (before.account_id, before.payouts_enabled) == (None, False)
    account = await onboarded(tech)
    status = await until(lambda: _enabled(tech))
    assert (status.account_id, status.details_submitted) == (account, True)

    await complete(tech, order_id)
    queued = await tech.request(PayoutStatus())
    assert [(t.order_id, t.state) for t in queued.transfers] == [(order_id, "pending")]  # the delay runs
    runs = payments_storage.JOB_RUNS.labels("transfer", "done")
    transfers_done = runs._value.get()
    done = await until(lambda: transfer_of(gw, order_id))
    await until(lambda: _counted(runs, transfers_done))  # /metrics counts the job's run
    price = (await consumer.request(OrderGet(order_id=order_id))).order.price_cents
    share = price * (10_000 - FEE_BP) // 10_000
    transfer = await app.v1.transfers.retrieve_async(done["transfer_id"])
    intent = await app.v1.payment_intents.retrieve_async(
        await gw.services.db.fetchval("SELECT intent_id FROM payments WHERE order_id = $1", uuid.UUID(order_id)))
    assert (transfer.amount, transfer.destination, transfer.transfer_group) == (share, account, f"order-{order_id}")
    assert transfer.source_transaction == intent.latest_charge
    stats = await tech.request(TechStats())
    assert (stats.earnings_cents, stats.pending_cents) == (share, 0)
    report = await until(lambda: _state_is(tech, "done"))
    assert (report.paid_cents, report.transfers[0].transfer_id) == (share, transfer.id)


async def payouts_on(tech):
    """The technician onboards and Stripe enables their payouts; returns the account id."""
    account = await onboarded(tech)
    await until(lambda: _enabled(tech))
    return account


async def _enabled(tech):
    status = await tech.request(PayoutStatus())
    return status if status.payouts_enabled else None


async def test_a_payout_waits_until_the_technician_can_receive_it(gw, signed_in, app):
    _, tech, order_id, _ = await paid_order(gw, signed_in, app)
    await complete(tech, order_id)
    waiting = await until(lambda: _state_is(tech, "waiting"))
    assert waiting.transfers[0].attempts == 0 and waiting.payouts_enabled is False
    await onboarded(tech)  # account.updated releases it
    assert await until(lambda: transfer_of(gw, order_id))


async def _state_is(tech, state):
    status = await tech.request(PayoutStatus())
    return status if status.transfers and status.transfers[0].state == state else None


async def test_a_transfer_that_fails_once_is_retried_and_made_once(gw, signed_in, app, stripe_server):
    _, tech, order_id, _ = await paid_order(gw, signed_in, app)
    await payouts_on(tech)
    stripe_server.fail("/v1/transfers", times=3)  # the SDK's own two retries fail too: the job's first run fails
    await complete(tech, order_id)
    done = await until(lambda: _state_is(tech, "done"))
    [item] = done.transfers
    assert item.attempts == 2 and item.last_error is None
    made = [r for r in posts(stripe_server, "/v1/transfers") if order_id in (r["idempotency_key"] or "")]
    assert len(made) == 1


async def test_a_refund_after_the_payout_reverses_the_transfer(gw, signed_in, app, stripe_server):
    consumer, tech, order_id, _ = await paid_order(gw, signed_in, app)
    await payouts_on(tech)
    await complete(tech, order_id)
    done = await until(lambda: transfer_of(gw, order_id))
    admin, _ = await signed_in("admin", gw=gw)
    await admin.request(PaymentRefund(order_id=order_id, reason="water damage after the visit"))
    refunded = await payment_reaches(consumer, "refunded")
    assert refunded.refunded_cents == refunded.amount_cents
    reversed_transfer = await until(lambda: _reversed_by(app, done["transfer_id"], done["amount_cents"]))
    assert reversed_transfer.amount_reversed == done["amount_cents"]
    report = await until(lambda: _reversal_recorded(tech))
    assert report.reversed_cents == done["amount_cents"]
    assert (await tech.request(TechStats())).earnings_cents == 0
    trail = await admin.request(PaymentAudit(order_id=order_id))  # every cent traceable
    assert [(j.kind, j.state) for j in trail.jobs] == [("transfer", "done"), ("refund", "done"), ("reversal", "done")]
    transfer_job, refund_job, reversal_job = trail.jobs
    assert (transfer_job.amount_cents, transfer_job.result) == (done["amount_cents"], done["transfer_id"])
    assert (refund_job.amount_cents, refund_job.note) == (refunded.amount_cents, "water damage after the visit")
    assert reversal_job.amount_cents == done["amount_cents"] and reversal_job.result.startswith("trr_")
    assert (trail.payment.state, trail.payout.reversed_cents) == ("refunded", done["amount_cents"])


async def test_partial_refunds_take_back_the_technicians_share_of_each(gw, signed_in, app):
    _, tech, order_id, _ = await paid_order(gw, signed_in, app)
    await payouts_on(tech)
    await complete(tech, order_id)
    done = await until(lambda: transfer_of(gw, order_id))
    admin, _ = await signed_in("admin", gw=gw)
    await admin.request(PaymentRefund(order_id=order_id, amount_cents=2000))
    await admin.request(PaymentRefund(order_id=order_id, amount_cents=3000))  # queued behind the first
    await until(lambda: _refunded(gw, order_id, 5000))
    price, share = await gw.services.db.fetchval("SELECT captured_cents FROM payments WHERE order_id = $1",
                                                 uuid.UUID(order_id)), done["amount_cents"]
    expected = share * 5000 // price
    transfer = await until(lambda: _reversed_by(app, done["transfer_id"], expected))
    await asyncio.sleep(0.5)  # and nothing more follows
    transfer = await app.v1.transfers.retrieve_async(done["transfer_id"])
    assert transfer.amount_reversed == expected
    stats = await until(lambda: _earning(tech, share - expected))
    assert stats.earnings_cents == share - expected


async def test_the_platform_fee_rounds_up_and_a_reversal_down(gw, signed_in, app):
    """Cents never split: the technician's share is rounded down (so the platform's fee up), and a
    reversal takes back its proportional part of a refund rounded down (the technician keeps the
    odd cent). 119.99 at 15%: a share of 101.9915 -> 101.99, the fee 18.00; a refund of 30.00 then
    reverses 101.99 x 30.00 / 119.99 = 25.4996... -> 25.49 (not 25.50)."""
    admin, _ = await signed_in("admin", gw=gw)
    brand, sku = await brand_with_sku(admin, price_cents=11999)
    _, tech, order_id, _ = await paid_order(gw, signed_in, app, brand=brand, sku=sku)
    await payouts_on(tech)
    await complete(tech, order_id)
    done = await until(lambda: transfer_of(gw, order_id))
    assert FEE_BP == 1500 and done["amount_cents"] == 10199
    assert (await app.v1.transfers.retrieve_async(done["transfer_id"])).amount == 10199
    await admin.request(PaymentRefund(order_id=order_id, amount_cents=3000))
    transfer = await until(lambda: _reversed_by(app, done["transfer_id"], 1))
    assert transfer.amount_reversed == 2549
    stats = await until(lambda: _earning(tech, 10199 - 2549))
    assert stats.earnings_cents == 7650


async def _counted(counter, before):
    return counter._value.get() > before


async def _refunded(gw, order_id, cents):
    return await gw.services.db.fetchval("SELECT refunded_cents >= $2 FROM payments WHERE order_id = $1",
                                         uuid.UUID(order_id), cents)


async def _reversed_by(app, transfer_id, cents):
    transfer = await app.v1.transfers.retrieve_async(transfer_id)
    return transfer if transfer.amount_reversed >= cents else None


async def _earning(tech, cents):
    stats = await tech.request(TechStats())
    return stats if stats.earnings_cents == cents else None


async def test_a_lost_account_update_is_applied_by_the_reconciler(make_gateway, stripe_server, signed_in, app):
    async with paying_gateway(make_gateway, stripe_server, payment_policy="pay_at_creation",
                              reconcile_interval_s=0.5, reconcile_lookback_s=120) as served:
        _, tech, order_id, _ = await paid_order(served, signed_in, app)
        await complete(tech, order_id)
        await until(lambda: _state_is(tech, "waiting"))
        stripe_server.drop("account.updated")
        try:
            await onboarded(tech)
            assert await until(lambda: transfer_of(served, order_id))  # released without the webhook
        finally:
            stripe_server.drop()


async def _reversal_recorded(tech):
    status = await tech.request(PayoutStatus())
    return status if status.reversed_cents else None


async def test_refunds_beyond_the_payment_are_refused(gw, signed_in, app):
    _, _, order_id, _ = await paid_order(gw, signed_in, app)
    admin, _ = await signed_in("admin", gw=gw)
    with pytest.raises(ErrorReply) as refused:
        await admin.request(PaymentRefund(order_id=order_id, amount_cents=10_000_000))
    assert refused.value.code == "conflict"


# -- processes killed around a transfer --------------------------------------------------------
def money_process(servers, tmp_path, stripe_server, **env):
    settings = {"STRIPE_API_KEY": API_KEY, "STRIPE_API_BASE": stripe_server.url,
                "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET, "PAYMENT_POLICY": "pay_at_creation",
                "MONEY_POLL_S": "0.05", "MONEY_LEASE_S": "1", "MONEY_RETRY_BASE_S": "0.1", **env}
    return GatewayProcess("--database-url", servers[0], "--redis-url", servers[1], "--secret", SECRET,
                          "--data-dir", str(tmp_path), env=settings)


async def session(process, gateway, role):
    user_id, token = mint(gateway, role)
    client = await Client.connect(process.url)
    await client.request(Auth(token=token))
    return client, user_id


async def completed_on(process, gateway, stripe_server, app):
    """On `process`: a paid order, completed by an onboarded technician. Returns (order id, clients)."""
    name = f"proc-{uuid.uuid4().hex[:8]}"
    stripe_server.add_webhook(name, f"http://127.0.0.1:{process.http_port}/stripe/webhook", WEBHOOK_SECRET)
    place = spot()
    consumer, _ = await session(process, gateway, "consumer")
    tech, _ = await session(process, gateway, "technician")
    await tech.request(Duty(on_duty=True))
    await tech.request(LocationUpdate(lat=place[0], lng=place[1]))  # within reach of the order
    card = await save_card(consumer, app)
    order = (await consumer.request(order_at(place))).order
    await consumer.request(PaymentPay(order_id=order.id, payment_method_id=card))
    await payment_reaches(consumer, "paid")
    await payouts_on(tech)
    await complete(tech, order.id)
    stripe_server.remove_webhook(name)
    return order.id, (consumer, tech)


async def transfers_in_stripe(app, order_id):
    page = await app.v1.transfers.list_async({"transfer_group": f"order-{order_id}"})
    return list(page.data)


async def test_a_process_killed_before_the_transfer_runs_leaves_it_to_another(
        gateway, servers, tmp_path, stripe_server, app):
    first = await money_process(servers, tmp_path, stripe_server, PAYOUT_DELAY_S="2").start()
    order_id, clients = await completed_on(first, gateway, stripe_server, app)
    first.process.kill()  # scheduled, not yet due
    await first.process.wait()
    for client in clients:
        await client.close()
    assert await transfers_in_stripe(app, order_id) == []
    async with money_process(servers, tmp_path, stripe_server, PAYOUT_DELAY_S="2"):
        await until(lambda: transfer_of(gateway, order_id), timeout=20)
        await asyncio.sleep(0.5)
    assert len(await transfers_in_stripe(app, order_id)) == 1


async def test_a_process_killed_during_the_transfer_call_makes_one_transfer(
        gateway, servers, tmp_path, stripe_server, app):
    first = await money_process(servers, tmp_path, stripe_server, PAYOUT_DELAY_S="0").start()
    stripe_server.stall("/v1/transfers", seconds=30, method="POST")
    order_id, clients = await completed_on(first, gateway, stripe_server, app)
    await until(lambda: transfers_in_stripe(app, order_id))  # Stripe made it; the answer is held back
    first.process.kill()
    await first.process.wait()
    for client in clients:
        await client.close()
    assert await transfer_of(gateway, order_id) is None  # the dead process never recorded it
    async with money_process(servers, tmp_path, stripe_server, PAYOUT_DELAY_S="0"):
        recorded = await until(lambda: transfer_of(gateway, order_id), timeout=20)
    [made] = await transfers_in_stripe(app, order_id)
    assert recorded["transfer_id"] == made.id


async def test_a_refund_between_a_dead_transfer_call_and_its_retry_is_reversed(
        gateway, servers, tmp_path, stripe_server, app):
    """The transfer's amount was decided and sent when the process died; the order is refunded
    before another process retries. The retry replays the same transfer (Stripe made it), records
    it, and the refund takes it back: nothing paid out for a refunded job, every cent accounted."""
    first = await money_process(servers, tmp_path, stripe_server, PAYOUT_DELAY_S="0").start()
    stripe_server.stall("/v1/transfers", seconds=30, method="POST")
    order_id, clients = await completed_on(first, gateway, stripe_server, app)
    [made] = await until(lambda: transfers_in_stripe(app, order_id))
    first.process.kill()
    await first.process.wait()
    for client in clients:
        await client.close()
    async with money_process(servers, tmp_path, stripe_server, PAYOUT_DELAY_S="0") as second:
        name = f"proc-{uuid.uuid4().hex[:8]}"
        stripe_server.add_webhook(name, f"http://127.0.0.1:{second.http_port}/stripe/webhook", WEBHOOK_SECRET)
        try:
            admin, _ = await session(second, gateway, "admin")
            await admin.request(PaymentRefund(order_id=order_id, reason="job redone by another company"))
            await until(lambda: _reversed_by(app, made.id, made.amount), timeout=20)
            recorded = await until(lambda: _fully_reversed(gateway, order_id), timeout=20)
            await admin.close()
        finally:
            stripe_server.remove_webhook(name)
    assert recorded["transfer_id"] == made.id and len(await transfers_in_stripe(app, order_id)) == 1


async def _fully_reversed(gw, order_id):
    row = await transfer_of(gw, order_id)
    return row if row and row["reversed_cents"] == row["amount_cents"] else None


async def test_a_reversal_waiting_to_retry_is_counted_by_the_next_one(make_gateway, stripe_server, signed_in, app):
    """Refund 2000: its reversal is decided, then Stripe fails it and it waits to retry. Refund
    3000 more: the second reversal counts the first one's amount, so together they take back the
    share of 5000, not more."""
    async with paying_gateway(make_gateway, stripe_server, payment_policy="pay_at_creation",
                              money_retry_base_s=1.5) as served:
        _, tech, order_id, _ = await paid_order(served, signed_in, app)
        await payouts_on(tech)
        await complete(tech, order_id)
        done = await until(lambda: transfer_of(served, order_id))
        stripe_server.fail(f"/v1/transfers/{done['transfer_id']}/reversals", times=3)  # and the SDK's retries
        admin, _ = await signed_in("admin", gw=served)
        await admin.request(PaymentRefund(order_id=order_id, amount_cents=2000))
        await until(lambda: _failed_once(served, order_id, "reversal"))
        await admin.request(PaymentRefund(order_id=order_id, amount_cents=3000))
        price = await served.services.db.fetchval("SELECT captured_cents FROM payments WHERE order_id = $1",
                                                  uuid.UUID(order_id))
        expected = done["amount_cents"] * 5000 // price
        await until(lambda: _reversed_by(app, done["transfer_id"], expected))
        await until(lambda: _all_done(served, order_id))
        transfer = await app.v1.transfers.retrieve_async(done["transfer_id"])
        assert transfer.amount_reversed == expected


async def _failed_once(gw, order_id, kind):
    """The order's job of this kind once it decided its request, failed, and waits to retry."""
    return await gw.services.db.fetchrow(
        "SELECT * FROM money_jobs WHERE order_id = $1 AND kind = $2 AND state = 'pending'"
        " AND last_error IS NOT NULL AND request IS NOT NULL", uuid.UUID(order_id), kind)


async def _all_done(gw, order_id):
    states = await gw.services.db.fetch("SELECT state FROM money_jobs WHERE order_id = $1", uuid.UUID(order_id))
    return all(s["state"] in ("done", "skipped") for s in states)


async def test_a_transfer_refused_after_a_refund_is_decided_again(make_gateway, stripe_server, signed_in, app):
    """The transfer's amount is decided, Stripe is down, the order is half refunded meanwhile:
    the frozen amount is now more than the charge has left and Stripe refuses it outright (nothing
    moved), so the job decides again from the new figures and pays the share of what was kept."""
    async with paying_gateway(make_gateway, stripe_server, payment_policy="pay_at_creation",
                              money_retry_base_s=1.5) as served:
        _, tech, order_id, _ = await paid_order(served, signed_in, app)
        await payouts_on(tech)
        stripe_server.fail("/v1/transfers", times=3)
        await complete(tech, order_id)
        first = await until(lambda: _failed_once(served, order_id, "transfer"))
        admin, _ = await signed_in("admin", gw=served)
        price = json.loads(first["request"])["captured"]
        await admin.request(PaymentRefund(order_id=order_id, amount_cents=price // 2))
        done = await until(lambda: transfer_of(served, order_id), timeout=20)
        assert done["amount_cents"] == (price - price // 2) * (10_000 - FEE_BP) // 10_000
        assert done["refunded_basis"] == price // 2
        assert json.loads(first["request"])["amount"] > done["amount_cents"]
        [made] = await transfers_in_stripe(app, order_id)
        assert made.amount == done["amount_cents"]
