"""Money and order audits: each anomaly planted directly in PostgreSQL (or at the local Stripe
server) for an order of the test's own, then found by `admin.audit` with its evidence; a clean,
paid and transferred order yields none; a scheduled run reaches watching admins, and an anomaly
found again is not new. Other tests share the database: every assertion is about our orders."""

import asyncio
import json
import time
import uuid
from typing import Any

import pytest

from handlers.money import scheduler
from protocol.admin import Watch
from protocol.audits import AuditList, AuditStart
from protocol.catalog import MerchantBrandsSet
from protocol.orders import OrderGet
from protocol.payments import PaymentRefund
from tests.money import FEE_BP, app_stripe, complete, onboarded, paid_order, paying_gateway, until
from tests.world import brand_with_sku, events, fresh, order_at, quiet, refused, spot

pytestmark = pytest.mark.usefixtures("gateway")
HOUR = "interval '1 hour'"


async def own_order(signed_in, gw=None) -> tuple[uuid.UUID, int]:
    """An order of a consumer of the test's own (open: this gateway has no Stripe); (id, price)."""
    consumer, _ = await signed_in("consumer", **({"gw": gw} if gw else {}))
    order = (await consumer.request(order_at(spot()))).order
    return uuid.UUID(order.id), order.price_cents


async def paid(db, order_id: uuid.UUID, *, state: str = "completed", payment_state: str = "paid",
               captured: int | None = None, refunded: int = 0, aged: bool = True) -> str:
    """Plant the order's payment as Stripe would have left it; returns the PaymentIntent id."""
    intent = fresh("pi_planted")
    price = await db.fetchval("SELECT price_cents FROM orders WHERE id = $1", order_id)
    await db.execute(
        "UPDATE orders SET state = $2, payment_state = $3, technician_id = $4,"
        f" updated_at = CASE WHEN $5 THEN now() - {HOUR} ELSE now() END WHERE id = $1",
        order_id, state, payment_state, fresh("tech"), aged)
    await db.execute(
        "INSERT INTO payments (order_id, intent_id, policy, amount_cents, currency, charge_id, captured_cents,"
        f" refunded_cents, updated_at) VALUES ($1, $2, 'pay_at_creation', $3, 'usd', $4, $5, $6, now() - {HOUR})",
        order_id, intent, price, fresh("ch_planted"), price if captured is None else captured, refunded)
    return intent


async def transferred(db, order_id: uuid.UUID, amount: int, *, basis: int = 0, reversed_cents: int = 0,
                      decided: dict[str, Any] | None = None) -> str:
    """Plant an executed transfer (and the done job that decided it, with the figures it used)."""
    transfer = fresh("tr_planted")
    await db.execute(
        "INSERT INTO transfers (order_id, technician_id, account_id, transfer_id, amount_cents, reversed_cents,"
        " refunded_basis, currency) SELECT id, technician_id, 'acct_planted', $2, $3, $4, $5, 'usd'"
        " FROM orders WHERE id = $1", order_id, transfer, amount, reversed_cents, basis)
    if decided is not None:
        await db.execute("INSERT INTO money_jobs (kind, order_id, request, state, result) VALUES"
                         " ('transfer', $1, $2::jsonb, 'done', $3)", order_id, json.dumps(decided), transfer)
    return transfer


async def audit(admin, order_id: uuid.UUID | str) -> list[Any]:
    """Run the audit now; the anomalies it found for this order."""
    run = (await admin.request(AuditStart(limit=1))).run
    assert run.trigger == "admin" and run.finished_at is not None and run.error is None
    return (await admin.request(AuditList(run_id=run.id, order_id=str(order_id)))).anomalies


def share(price: int) -> int:
    return price * (10_000 - FEE_BP) // 10_000


async def test_a_completed_captured_order_without_any_transfer_is_found(gateway, signed_in):
    admin, _ = await signed_in("admin")
    db = gateway.services.db
    order_id, price = await own_order(signed_in)
    await paid(db, order_id)
    [found] = await audit(admin, order_id)
    assert (found.kind, found.order_id, found.brand, found.new) == ("transfer_missing", str(order_id), "whirlpool",
                                                                    True)
    assert found.evidence["expected_cents"] == share(price) and found.evidence["transfer_job"] is None
    assert (found.evidence["captured_cents"], found.evidence["payment_state"]) == (price, "paid")
    # A transfer scheduled (its delay running) is no anomaly.
    await db.execute("INSERT INTO money_jobs (kind, order_id, due_at) VALUES ('transfer', $1, now() + interval"
                     " '1 day')", order_id)
    assert await audit(admin, order_id) == []


async def test_a_recently_completed_order_has_a_grace_before_its_transfer_is_missing(gateway, signed_in):
    admin, _ = await signed_in("admin")
    order_id, _ = await own_order(signed_in)
    await paid(gateway.services.db, order_id, aged=False)  # completed a moment ago: scheduling may lag
    assert await audit(admin, order_id) == []


async def test_a_transfer_without_a_captured_payment_is_found(gateway, signed_in):
    admin, _ = await signed_in("admin")
    db = gateway.services.db
    order_id, price = await own_order(signed_in)
    intent = await paid(db, order_id, state="accepted", payment_state="canceled", captured=0)
    transfer = await transferred(db, order_id, share(price))
    [found] = await audit(admin, order_id)
    assert found.kind == "transfer_without_capture"
    assert found.evidence == {"transfer_id": transfer, "transfer_cents": share(price), "intent_id": intent,
                              "technician_id": found.evidence["technician_id"], "payment_state": "canceled",
                              "captured_cents": 0}


async def test_a_transfer_amount_other_than_price_less_fee_is_found_with_the_payout_codes_rounding(
        gateway, signed_in):
    admin, _ = await signed_in("admin")
    db = gateway.services.db
    right, _ = await own_order(signed_in)
    wrong, _ = await own_order(signed_in)
    assert scheduler.share(11995, 0, FEE_BP) == 10195  # 11995 * 8500 / 10000 = 10195.75, rounded down
    for order_id in (right, wrong):
        await db.execute("UPDATE orders SET price_cents = 11995 WHERE id = $1", order_id)
        await paid(db, order_id)
    decided = {"captured": 11995, "basis": 0, "fee_bp": FEE_BP}
    await transferred(db, right, 10195, decided=decided)
    transfer = await transferred(db, wrong, 10196, decided=decided)
    assert await audit(admin, right) == []
    [found] = await audit(admin, wrong)
    assert found.kind == "transfer_amount_mismatch"
    assert {k: found.evidence[k] for k in ("transfer_id", "transfer_cents", "expected_cents", "fee_bp")} == {
        "transfer_id": transfer, "transfer_cents": 10196, "expected_cents": 10195, "fee_bp": FEE_BP}


async def test_a_transfer_decided_under_another_fee_is_checked_against_that_fee(gateway, signed_in):
    admin, _ = await signed_in("admin")
    db = gateway.services.db
    order_id, price = await own_order(signed_in)
    await paid(db, order_id)
    await transferred(db, order_id, price * 8_000 // 10_000, decided={"captured": price, "basis": 0, "fee_bp": 2000})
    assert await audit(admin, order_id) == []


async def test_a_refund_after_the_payout_without_its_reversal_is_found(gateway, signed_in):
    admin, _ = await signed_in("admin")
    db = gateway.services.db
    order_id, price = await own_order(signed_in)
    await paid(db, order_id, payment_state="partially_refunded", refunded=5000)
    transfer = await transferred(db, order_id, share(price), decided={"captured": price, "basis": 0,
                                                                      "fee_bp": FEE_BP})
    [found] = await audit(admin, order_id)
    assert found.kind == "refund_not_reversed"
    expected = share(price) * 5000 // price  # the reversal's proportional share, rounded down like the scheduler
    assert {k: found.evidence[k] for k in ("transfer_id", "refunded_cents", "expected_reversed_cents",
                                           "reversed_cents")} == {
        "transfer_id": transfer, "refunded_cents": 5000, "expected_reversed_cents": expected, "reversed_cents": 0}
    await db.execute("UPDATE transfers SET reversed_cents = $2 WHERE order_id = $1", order_id, expected)
    assert await audit(admin, order_id) == []  # reversed: settled


async def test_failed_and_stuck_money_jobs_are_found(gateway, signed_in):
    admin, _ = await signed_in("admin")
    db = gateway.services.db
    order_id, _ = await own_order(signed_in)
    failed = await db.fetchval(
        "INSERT INTO money_jobs (kind, order_id, state, attempts, last_error) VALUES ('cancel', $1, 'failed', 8,"
        " 'No such payment_intent') RETURNING id", order_id)
    stuck = await db.fetchval(
        "INSERT INTO money_jobs (kind, order_id, state, attempts, lease_until) VALUES ('refund', $1, 'running', 1,"
        f" now() - {HOUR}) RETURNING id", order_id)
    on_time = await db.fetchval("INSERT INTO money_jobs (kind, order_id, step, due_at) VALUES ('refund', $1, 2,"
                                " now() + interval '1 hour') RETURNING id", order_id)
    found = {a.kind: a.evidence for a in await audit(admin, order_id)}
    assert set(found) == {"money_job_failed", "money_job_stuck"}  # not the job that is not due yet
    assert (found["money_job_failed"]["job_id"], found["money_job_failed"]["last_error"]) == (
        failed, "No such payment_intent")
    assert (found["money_job_stuck"]["job_id"], found["money_job_stuck"]["state"]) == (stuck, "running")
    assert found["money_job_stuck"]["overdue_s"] >= 3600 and on_time not in (failed, stuck)


async def test_a_stripe_event_stored_and_never_applied_is_found(gateway, signed_in):
    admin, _ = await signed_in("admin")
    db = gateway.services.db
    order_id, _ = await own_order(signed_in)
    intent = await paid(db, order_id, state="open", aged=False)
    event = fresh("evt_planted")
    await db.execute(
        "INSERT INTO stripe_events (id, type, created, source, payload, received_at) VALUES ($1,"
        f" 'payment_intent.succeeded', now() - {HOUR}, 'webhook', $2::jsonb, now() - {HOUR})",
        event, json.dumps({"object": {"id": intent, "object": "payment_intent"}}))
    [found] = await audit(admin, order_id)
    assert (found.kind, found.brand) == ("stripe_event_unapplied", "whirlpool")
    assert (found.evidence["event_id"], found.evidence["object_id"]) == (event, intent)
    await db.execute("UPDATE stripe_events SET applied_at = now() WHERE id = $1", event)
    assert await audit(admin, order_id) == []


async def test_an_order_stuck_in_its_state_longer_than_the_threshold_is_found(gateway, signed_in):
    admin, _ = await signed_in("admin")
    db = gateway.services.db
    order_id, _ = await own_order(signed_in)
    assert await audit(admin, order_id) == []  # open for a moment
    await db.execute(f"UPDATE orders SET created_at = now() - 3 * {HOUR} WHERE id = $1", order_id)
    await db.execute(f"UPDATE order_events SET at = now() - 3 * {HOUR} WHERE order_id = $1", order_id)
    [found] = await audit(admin, order_id)
    assert (found.kind, found.evidence["state"], found.evidence["threshold_s"]) == ("order_stuck", "open", 7200)
    assert found.evidence["age_s"] >= 3 * 3600


async def test_an_authorization_expiring_before_its_capture_is_found_at_stripe(make_gateway, stripe_server,
                                                                               signed_in):
    app = app_stripe(stripe_server)
    async with paying_gateway(make_gateway, stripe_server) as gw:  # capture at completion: a hold
        admin, _ = await signed_in("admin", gw=gw)
        _, _, order_id, _ = await paid_order(gw, signed_in, app)
        intent = await gw.services.db.fetchval("SELECT intent_id FROM payments WHERE order_id = $1",
                                               uuid.UUID(order_id))
        assert await audit(admin, order_id) == []  # Stripe holds it 7 days
        deadline = int(time.time()) + 3 * 3600  # a card network's shorter hold
        stripe_server.expire_hold(intent, deadline)
        [found] = await audit(admin, order_id)
        assert (found.kind, found.evidence["intent_id"], found.evidence["estimated"]) == (
            "authorization_expiring", intent, False)
        assert found.evidence["capture_before"].startswith(time.strftime("%Y-%m-%dT%H", time.gmtime(deadline)))
        assert (found.evidence["expired"], found.evidence["order_state"]) == (False, "open")
        assert 2.9 <= found.evidence["hours_left"] <= 3.0


async def test_a_transfer_made_at_stripe_but_not_recorded_here_is_in_the_evidence(make_gateway, stripe_server,
                                                                                    signed_in):
    app = app_stripe(stripe_server)
    async with paying_gateway(make_gateway, stripe_server, payment_policy="pay_at_creation",
                              payout_delay_s=3600) as gw:
        consumer, tech, order_id, _ = await paid_order(gw, signed_in, app)
        account = await onboarded(tech)
        await until(lambda: gw.services.db.fetchval("SELECT payouts_enabled FROM payout_accounts WHERE account_id"
                                                    " = $1", account))
        await complete(tech, order_id)
        price = (await consumer.request(OrderGet(order_id=order_id))).order.price_cents
        made = await app.v1.transfers.create_async({"amount": share(price), "currency": "usd", "destination": account,
                                                    "transfer_group": f"order-{order_id}"})
        db = gw.services.db  # the job that made it is lost, and nothing recorded the transfer here
        await db.execute("DELETE FROM money_jobs WHERE order_id = $1 AND kind = 'transfer'", uuid.UUID(order_id))
        await db.execute(f"UPDATE orders SET updated_at = now() - {HOUR} WHERE id = $1", uuid.UUID(order_id))
        admin, _ = await signed_in("admin", gw=gw)
        [found] = await audit(admin, order_id)
        assert (found.kind, found.evidence["expected_cents"]) == ("transfer_missing", share(price))
        assert found.evidence["stripe_transfers"] == [{"id": made.id, "amount_cents": share(price),
                                                       "destination": account}]


async def test_a_clean_paid_transferred_partly_refunded_and_reversed_order_has_no_anomaly(make_gateway, stripe_server,
                                                                                            signed_in):
    app = app_stripe(stripe_server)
    async with paying_gateway(make_gateway, stripe_server, payment_policy="pay_at_creation") as gw:
        consumer, tech, order_id, _ = await paid_order(gw, signed_in, app)
        await onboarded(tech)
        await complete(tech, order_id)
        done = await until(lambda: gw.services.db.fetchrow("SELECT * FROM transfers WHERE order_id = $1",
                                                           uuid.UUID(order_id)))
        price = (await consumer.request(OrderGet(order_id=order_id))).order.price_cents
        assert done["amount_cents"] == share(price)
        admin, _ = await signed_in("admin", gw=gw)
        await admin.request(PaymentRefund(order_id=order_id, amount_cents=3001))  # and its reversal follows
        owed = done["amount_cents"] * 3001 // price
        await until(lambda: gw.services.db.fetchval("SELECT reversed_cents = $2 FROM transfers WHERE order_id = $1",
                                                    uuid.UUID(order_id), owed))
        for table, key in (("orders", "id"), ("payments", "order_id")):  # past every grace
            await gw.services.db.execute(f"UPDATE {table} SET updated_at = now() - {HOUR} WHERE {key} = $1",
                                         uuid.UUID(order_id))
        assert await audit(admin, order_id) == []
        run = (await admin.request(AuditList(limit=1))).runs[0]
        assert run.stripe_checked is True


async def test_scheduled_runs_reach_watching_admins_and_an_anomaly_found_again_is_not_new(make_gateway, signed_in):
    async with make_gateway(audit_interval_s=0.3) as gw:
        admin, _ = await signed_in("admin", gw=gw)
        await admin.request(Watch())
        order_id, _ = await own_order(signed_in, gw)
        await gw.services.db.execute(f"UPDATE orders SET created_at = now() - 25 * {HOUR} WHERE id = $1", order_id)
        await gw.services.db.execute(f"UPDATE order_events SET at = now() - 25 * {HOUR} WHERE order_id = $1",
                                     order_id)
        async with asyncio.timeout(20):
            while True:
                [seen] = await events(admin, "admin.activity")
                if seen.kind == "audit.anomaly" and seen.order_id == str(order_id):
                    break
        assert (seen.detail, seen.brand) == ("order_stuck", "whirlpool")

        first = await gw.services.db.fetchval("SELECT first_run FROM audit_anomalies WHERE order_id = $1",
                                              order_id)

        async def a_later_run() -> Any:
            runs = (await admin.request(AuditList(limit=5))).runs
            return next((r for r in runs if r.trigger == "schedule" and r.finished_at and r.id > first), None)

        later = await until(a_later_run)
        [original] = (await admin.request(AuditList(run_id=first, order_id=str(order_id)))).anomalies
        [again] = (await admin.request(AuditList(run_id=later.id, order_id=str(order_id)))).anomalies
        assert (original.new, again.new, again.id) == (True, False, original.id)
        assert again.first_seen_at == original.first_seen_at
        assert later.counts.get("order_stuck", 0) >= 1 and later.triggered_by is None


async def test_an_on_demand_run_tells_the_brands_watching_merchant_of_a_new_anomaly_once(gateway, signed_in):
    admin, _ = await signed_in("admin")
    brand, sku = await brand_with_sku(admin)
    merchant, merchant_id = await signed_in("merchant")
    await admin.request(MerchantBrandsSet(merchant_id=merchant_id, brands=[brand]))
    await merchant.request(Watch())
    consumer, _ = await signed_in("consumer")
    order = (await consumer.request(order_at(spot(), brand=brand, sku=sku))).order
    await events(merchant, "admin.activity")  # the order created
    await gateway.services.db.execute(f"UPDATE order_events SET at = now() - 3 * {HOUR} WHERE order_id = $1",
                                      uuid.UUID(order.id))
    await gateway.services.db.execute(f"UPDATE orders SET created_at = now() - 3 * {HOUR} WHERE id = $1",
                                      uuid.UUID(order.id))
    await admin.request(AuditStart())
    [told] = await events(merchant, "admin.activity")
    assert (told.kind, told.order_id, told.brand, told.detail) == ("audit.anomaly", order.id, brand, "order_stuck")
    await admin.request(AuditStart())  # found again: not new, not told again
    assert await quiet(merchant, "admin.activity")


async def test_runs_page_newest_first_and_bad_lookups_are_refused(gateway, signed_in):
    admin, _ = await signed_in("admin")
    ids = [(await admin.request(AuditStart(limit=1))).run.id for _ in range(3)]
    first = await admin.request(AuditList(limit=2))
    assert [r.id for r in first.runs] == ids[:0:-1] and first.next_before == ids[1]
    assert (await admin.request(AuditList(limit=1, before=first.next_before))).runs[0].id == ids[0]
    assert (await refused(admin, AuditList(run_id=2**62))).code == "not_found"
    assert (await refused(admin, AuditList(run_id=ids[0], order_id="not-a-uuid"))).code == "not_found"
    assert (await refused(admin, AuditList(kind="order_stuck"))).code == "bad_request"
    merchant, _ = await signed_in("merchant")
    assert (await refused(merchant, AuditStart())).code == "forbidden"
