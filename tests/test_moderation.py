"""Moderation by admins over real sessions: cancelling with the refund the payment rules give
(previewed, then applied, against the local Stripe server), reassigning to a technician or back to
the pool (everyone concerned told, racing a technician's accept), hiding a chat message (kept for
audit, hidden for members), and retrying a money job that failed for good."""

import asyncio
import uuid

import pytest

from protocol.admin import LogList, Watch
from protocol.chat import ChatHistory, ChatRooms, ChatSend, ChatSync
from protocol.client import ErrorReply
from protocol.location import Duty
from protocol.moderation import Cancel, CancelPreview, JobRetry, MessageHide, Reassign, ReassignCandidates
from protocol.orders import (
    OrderAccept,
    OrderComplete,
    OrderDepart,
    OrderGet,
    OrderNearby,
    OrderStart,
    OrderTimeline,
)
from protocol.payments import PaymentAudit, PayoutStatus
from tests.money import (
    app_stripe,
    complete,
    jobs,
    onboarded,
    paid_order,
    paying_gateway,
    payment_reaches,
    posts,
    until,
)
from tests.world import events, offset, order_at, quiet, refused, spot, technician

FEE_BP = 1000  # the cancellation fee these tests' gateways keep once a technician was assigned


@pytest.fixture
async def pay_later(make_gateway, stripe_server):
    async with paying_gateway(make_gateway, stripe_server, cancellation_fee_bp=FEE_BP) as gw:
        yield gw


@pytest.fixture
async def pay_first(make_gateway, stripe_server):
    async with paying_gateway(make_gateway, stripe_server, payment_policy="pay_at_creation",
                              cancellation_fee_bp=FEE_BP) as gw:
        yield gw


@pytest.fixture
def app(stripe_server):
    return app_stripe(stripe_server)


async def intent_of(gw, order_id):
    return await gw.services.db.fetchval("SELECT intent_id FROM payments WHERE order_id = $1", uuid.UUID(order_id))


async def status_reaches(client, state):
    """The first `order.status` event with this state (earlier ones skipped)."""
    while (event := (await events(client, "order.status"))[0]).order.state != state:
        pass
    return event


async def settled(gw, order_id):
    found = await jobs(gw, order_id)
    return found if found and all(j["state"] in ("done", "skipped") for j in found) else None


# -- cancel -----------------------------------------------------------------------------------
async def test_cancelling_an_open_authorized_order_releases_the_whole_authorization(pay_later, signed_in, app):
    consumer, _, order_id, _ = await paid_order(pay_later, signed_in, app)
    admin, _ = await signed_in("admin", gw=pay_later)
    await payment_reaches(consumer, "authorized")
    price = (await consumer.request(OrderGet(order_id=order_id))).order.price_cents
    preview = (await admin.request(CancelPreview(order_id=order_id))).terms
    assert (preview.settlement, preview.state, preview.payment_state) == ("release", "open", "authorized")
    assert (preview.fee_cents, preview.refund_cents, preview.released_cents) == (0, 0, price)
    assert (await consumer.request(OrderGet(order_id=order_id))).order.state == "open"  # the preview changed nothing
    assert await jobs(pay_later, order_id) == []

    done = await admin.request(Cancel(order_id=order_id, reason="duplicate order"))
    assert done.order.state == "cancelled"
    assert done.terms == preview
    status = await status_reaches(consumer, "cancelled")
    assert status.actor_role == "admin"
    await payment_reaches(consumer, "canceled")
    assert [(j["kind"], j["state"]) for j in await jobs(pay_later, order_id)] == [("cancel", "done")]
    assert (await app.v1.payment_intents.retrieve_async(await intent_of(pay_later, order_id))).status == "canceled"
    assert (await refused(admin, CancelPreview(order_id=order_id))).error.details == {"current_state": "cancelled"}


async def test_cancelling_in_service_captures_only_the_fee_from_the_authorization(pay_later, signed_in, app):
    consumer, tech, order_id, _ = await paid_order(pay_later, signed_in, app)
    admin, _ = await signed_in("admin", gw=pay_later)
    for step in (OrderAccept, OrderDepart, OrderStart):
        await tech.request(step(order_id=order_id))
    price = (await consumer.request(OrderGet(order_id=order_id))).order.price_cents
    fee = price * FEE_BP // 10_000
    preview = (await admin.request(CancelPreview(order_id=order_id))).terms
    assert (preview.settlement, preview.state) == ("capture_fee", "in_service")
    assert (preview.fee_cents, preview.refund_cents, preview.released_cents) == (fee, 0, price - fee)

    done = await admin.request(Cancel(order_id=order_id))
    assert done.terms == preview
    [job] = await until(lambda: settled(pay_later, order_id))
    assert (job["kind"], job["amount_cents"]) == ("capture", fee)
    pay = await until(lambda: _captured(pay_later, order_id))
    assert pay["captured_cents"] - pay["refunded_cents"] == fee  # the rest of the hold was released


async def _captured(gw, order_id):
    return await gw.services.db.fetchrow("SELECT * FROM payments WHERE order_id = $1 AND captured_cents > 0",
                                         uuid.UUID(order_id))


async def test_cancelling_a_paid_order_refunds_what_the_preview_said(pay_first, signed_in, app, stripe_server):
    consumer, tech, order_id, _ = await paid_order(pay_first, signed_in, app)
    admin, _ = await signed_in("admin", gw=pay_first)
    await payment_reaches(consumer, "paid")
    price = (await consumer.request(OrderGet(order_id=order_id))).order.price_cents
    before = (await admin.request(CancelPreview(order_id=order_id))).terms
    assert (before.settlement, before.fee_cents, before.refund_cents) == ("refund", 0, price)  # nobody accepted yet
    await tech.request(OrderAccept(order_id=order_id))
    await tech.request(OrderDepart(order_id=order_id))
    preview = (await admin.request(CancelPreview(order_id=order_id))).terms
    fee = price * FEE_BP // 10_000
    assert (preview.settlement, preview.state, preview.fee_cents, preview.refund_cents, preview.released_cents) == (
        "refund", "en_route", fee, price - fee, 0)

    done = await admin.request(Cancel(order_id=order_id, reason="technician cannot reach the address"))
    assert done.terms == preview
    status = await payment_reaches(consumer, "partially_refunded")
    assert status.refunded_cents == preview.refund_cents
    refunds = [r for r in posts(stripe_server, "/v1/refunds") if order_id in str(r.get("idempotency_key"))]
    assert len(refunds) == 1


async def test_cancel_refusals_and_the_terms_without_payments(gateway, signed_in):
    admin, admin_id = await signed_in("admin")
    merchant, _ = await signed_in("merchant")
    consumer, _ = await signed_in("consumer")
    order = (await consumer.request(order_at(spot()))).order
    terms = (await admin.request(CancelPreview(order_id=order.id))).terms
    assert (terms.settlement, terms.payment_state, terms.refund_cents, terms.fee_cents) == ("none", None, 0, 0)
    for request in (CancelPreview(order_id=order.id), Cancel(order_id=order.id)):
        assert (await refused(merchant, request)).code == "forbidden"
        assert (await refused(consumer, request)).code == "forbidden"
    for missing in (str(uuid.uuid4()), "not-an-id"):
        assert (await refused(admin, CancelPreview(order_id=missing))).code == "not_found"
        assert (await refused(admin, Cancel(order_id=missing))).code == "not_found"
    await admin.request(Cancel(order_id=order.id))
    again = await refused(admin, Cancel(order_id=order.id))
    assert (again.code, again.error.details) == ("conflict", {"current_state": "cancelled"})
    logged = (await admin.request(LogList(action="admin.cancel", target_id=order.id, actor_id=admin_id))).entries
    assert [e.outcome for e in logged] == ["conflict", "ok"]  # newest first


# -- reassign ---------------------------------------------------------------------------------
async def test_reassigning_to_a_named_technician_tells_all_three(gateway, signed_in):
    place = spot()
    consumer, _ = await signed_in("consumer")
    first, first_id = await technician(signed_in, place)
    second, second_id = await technician(signed_in, offset(place, east_mi=3))
    admin, admin_id = await signed_in("admin")
    order = (await consumer.request(order_at(place))).order
    await first.request(OrderAccept(order_id=order.id))
    await events(consumer, "order.status")
    await admin.request(Watch())

    listed = (await admin.request(ReassignCandidates(order_id=order.id))).technicians
    assert [c.technician_id for c in listed] == [second_id]  # the current technician left out
    assert listed[0].fits and not listed[0].declined and 2.5 < listed[0].distance_mi < 3.5

    done = await admin.request(Reassign(order_id=order.id, technician_id=second_id, reason="first is ill"))
    assert (done.order.state, done.order.technician_id, done.previous_technician_id) == (
        "accepted", second_id, first_id)
    for client, count in ((consumer, 1), (first, 2), (second, 1)):  # the first technician's accept, then this
        status = (await events(client, "order.status", count))[-1]
        assert (status.order.technician_id, status.actor_role) == (second_id, "admin")
    [activity] = await events(admin, "admin.activity")
    assert (activity.kind, activity.order_id, activity.detail) == ("order.state", order.id, "reassigned")
    last = (await admin.request(OrderTimeline(order_id=order.id))).entries[-1]
    assert (last.actor_id, last.actor_role, last.from_state, last.to_state) == (admin_id, "admin", "accepted",
                                                                                "accepted")
    assert last.details == {"reason": "first is ill", "technician_id": second_id}

    assert (await refused(first, OrderDepart(order_id=order.id))).code == "not_found"  # not theirs any more
    assert (await refused(first, ChatSend(order_id=order.id, client_id="x", text="hi"))).code == "not_found"
    assert (await second.request(OrderDepart(order_id=order.id))).order.state == "en_route"
    system = [m.text for m in (await second.request(ChatHistory(order_id=order.id))).messages]
    assert system[-2:] == ["Staff assigned the order to a technician.", "The technician is on the way."]


async def test_reassigning_back_to_the_pool_announces_it_again_but_to_the_previous_technician(gateway, signed_in):
    place = spot()
    consumer, _ = await signed_in("consumer")
    first, first_id = await technician(signed_in, place)
    other, _ = await technician(signed_in, offset(place, north_mi=4))
    admin, _ = await signed_in("admin")
    order = (await consumer.request(order_at(place))).order
    await events(first, "order.available")
    await events(other, "order.available")
    await first.request(OrderAccept(order_id=order.id))
    await first.request(OrderDepart(order_id=order.id))

    done = await admin.request(Reassign(order_id=order.id, technician_id=None))
    assert (done.order.state, done.order.technician_id, done.previous_technician_id) == ("open", None, first_id)
    assert (await events(other, "order.available"))[0].order.id == order.id
    told = (await events(first, "order.status", 3))[-1]  # accepted, en route, then back in the pool
    assert (told.order.state, told.previous_state, told.actor_role) == ("open", "en_route", "admin")
    assert await quiet(first, "order.available", 0.3)
    assert order.id in [n.order.id for n in (await other.request(OrderNearby())).orders]
    again = await refused(admin, Reassign(order_id=order.id, technician_id=None))  # in the pool already
    assert (again.code, again.error.details) == ("conflict", {"current_state": "open"})


async def test_reassign_refuses_unknown_and_off_duty_technicians_and_finished_orders(gateway, signed_in):
    place = spot()
    consumer, _ = await signed_in("consumer")
    tech, tech_id = await technician(signed_in, place)
    resting, resting_id = await technician(signed_in, offset(place, east_mi=1))
    await resting.request(Duty(on_duty=False))
    admin, _ = await signed_in("admin")
    merchant, _ = await signed_in("merchant")
    order = (await consumer.request(order_at(place))).order
    unknown = await refused(admin, Reassign(order_id=order.id, technician_id=str(uuid.uuid4())))
    assert unknown.code == "not_found"
    off = await refused(admin, Reassign(order_id=order.id, technician_id=resting_id))
    assert (off.code, off.error.details) == ("conflict", {"current_state": "off_duty"})
    assert (await refused(merchant, Reassign(order_id=order.id, technician_id=tech_id))).code == "forbidden"
    assert (await refused(admin, Reassign(order_id=str(uuid.uuid4()), technician_id=tech_id))).code == "not_found"
    given = await admin.request(Reassign(order_id=order.id, technician_id=tech_id))  # from open: straight to them
    assert (given.order.state, given.previous_technician_id) == ("accepted", None)
    same = await refused(admin, Reassign(order_id=order.id, technician_id=tech_id))
    assert same.code == "conflict"
    await complete_assigned(tech, order.id)
    done = await refused(admin, Reassign(order_id=order.id, technician_id=None))
    assert (done.code, done.error.details) == ("conflict", {"current_state": "completed"})


async def complete_assigned(tech, order_id):
    for step in (OrderDepart, OrderStart, OrderComplete):
        await tech.request(step(order_id=order_id))


async def test_an_accept_racing_a_reassign_ends_with_the_admins_technician(gateway, signed_in):
    place = spot()
    consumer, _ = await signed_in("consumer")
    racer, racer_id = await technician(signed_in, place)
    _, chosen_id = await technician(signed_in, offset(place, east_mi=2))
    watcher, _ = await technician(signed_in, offset(place, north_mi=2))
    admin, _ = await signed_in("admin")
    outcomes = set()
    for _ in range(6):
        order = (await consumer.request(order_at(place))).order
        accepted, moved = await asyncio.gather(racer.request(OrderAccept(order_id=order.id)),
                                               admin.request(Reassign(order_id=order.id, technician_id=chosen_id)),
                                               return_exceptions=True)
        assert not isinstance(moved, BaseException) and moved.order.technician_id == chosen_id
        now = (await consumer.request(OrderGet(order_id=order.id))).order
        assert (now.state, now.technician_id) == ("accepted", chosen_id)
        steps = [(e.actor_role, e.to_state) for e in (await admin.request(OrderTimeline(order_id=order.id))).entries]
        if isinstance(accepted, ErrorReply):  # the admin came first: the order was gone from the pool
            assert accepted.code == "conflict" and steps == [("consumer", "open"), ("admin", "accepted")]
            outcomes.add("admin first")
        else:  # the technician came first, then lost it to the admin's choice
            assert steps == [("consumer", "open"), ("technician", "accepted"), ("admin", "accepted")]
            assert moved.previous_technician_id == racer_id
            outcomes.add("technician first")
        assert order.id not in [n.order.id for n in (await watcher.request(OrderNearby())).orders]
    assert outcomes  # whichever order the races took, each ended consistent


# -- hide a chat message ----------------------------------------------------------------------
async def test_a_hidden_message_is_kept_for_admins_and_hidden_for_members(gateway, signed_in):
    place = spot()
    consumer, _ = await signed_in("consumer")
    tech, _ = await technician(signed_in, place)
    admin, admin_id = await signed_in("admin")
    order = (await consumer.request(order_at(place))).order
    await tech.request(OrderAccept(order_id=order.id))
    rude = (await consumer.request(ChatSend(order_id=order.id, client_id="r", text="you are useless"))).message
    await consumer.request(ChatSend(order_id=order.id, client_id="k", text="sorry, see you at 3"))
    sealed = await gateway.services.db.fetchrow(
        "SELECT body, body_enc FROM chat_messages WHERE order_id = $1::uuid AND seq = $2", order.id, rude.seq)

    hidden = (await admin.request(MessageHide(order_id=order.id, seq=rude.seq, reason="insult"))).message
    assert (hidden.seq, hidden.hidden, hidden.text) == (rude.seq, True, "you are useless")
    told = (await events(tech, "chat.hidden"))[0]
    assert (told.order_id, told.seq) == (order.id, rude.seq)
    for member in (consumer, tech):
        page = (await member.request(ChatHistory(order_id=order.id))).messages
        shown = next(m for m in page if m.seq == rude.seq)
        assert (shown.hidden, shown.text, shown.attachments) == (True, None, [])
        assert next(m for m in page if m.seq == rude.seq + 1).text == "sorry, see you at 3"
        [room] = (await member.request(ChatSync(positions={order.id: rude.seq - 1}))).rooms
        assert [(m.seq, m.hidden, m.text) for m in room.messages] == [
            (rude.seq, True, None), (rude.seq + 1, False, "sorry, see you at 3")]
    transcript = (await admin.request(ChatHistory(order_id=order.id))).messages
    assert [(m.text, m.hidden) for m in transcript if m.seq == rude.seq] == [("you are useless", True)]
    kept = await gateway.services.db.fetchrow(
        "SELECT body, body_enc, hidden_by, hidden_reason FROM chat_messages WHERE order_id = $1::uuid AND seq = $2",
        order.id, rude.seq)
    assert (kept["body"], kept["body_enc"]) == (None, sealed["body_enc"])  # still sealed, never rewritten
    assert (kept["hidden_by"], kept["hidden_reason"]) == (admin_id, "insult")

    again = (await admin.request(MessageHide(order_id=order.id, seq=rude.seq, reason="insult"))).message
    assert again.hidden and await quiet(tech, "chat.hidden", 0.3)  # nothing new to tell


async def test_hiding_the_last_message_hides_it_in_the_room_list_and_refusals(gateway, signed_in):
    place = spot()
    consumer, _ = await signed_in("consumer")
    tech, _ = await technician(signed_in, place)
    admin, _ = await signed_in("admin")
    merchant, _ = await signed_in("merchant")
    order = (await consumer.request(order_at(place))).order
    await tech.request(OrderAccept(order_id=order.id))
    sent = (await tech.request(ChatSend(order_id=order.id, client_id="p", text="call me at +1 555 0100"))).message
    assert (await refused(merchant, MessageHide(order_id=order.id, seq=sent.seq, reason="x"))).code == "forbidden"
    assert (await refused(tech, MessageHide(order_id=order.id, seq=sent.seq, reason="x"))).code == "forbidden"
    await admin.request(MessageHide(order_id=order.id, seq=sent.seq, reason="phone number"))
    [room] = [r for r in (await consumer.request(ChatRooms())).rooms if r.order_id == order.id]
    assert room.last_message is not None and (room.last_message.hidden, room.last_message.text) == (True, None)
    system = sent.seq - 1  # the "accepted" system message before it
    assert (await refused(admin, MessageHide(order_id=order.id, seq=system, reason="x"))).code == "bad_request"
    assert (await refused(admin, MessageHide(order_id=order.id, seq=sent.seq + 50, reason="x"))).code == "not_found"
    assert (await refused(admin, MessageHide(order_id=str(uuid.uuid4()), seq=1, reason="x"))).code == "not_found"


# -- retry a failed money job -----------------------------------------------------------------
async def test_a_failed_transfer_retried_by_an_admin_moves_the_money_once(make_gateway, stripe_server, signed_in, app):
    async with paying_gateway(make_gateway, stripe_server, payment_policy="pay_at_creation",
                              money_max_attempts=2) as gw:
        _, tech, order_id, _ = await paid_order(gw, signed_in, app)
        admin, _ = await signed_in("admin", gw=gw)
        await onboarded(tech)
        await until(lambda: _enabled(gw, tech))
        stripe_server.fail("/v1/transfers", times=6)  # both runs, with the SDK's two retries each
        await complete(tech, order_id)
        failed = await until(lambda: _job(admin, order_id, "failed"))
        assert failed.attempts == 2 and failed.last_error and failed.id
        assert not [r for r in posts(stripe_server, "/v1/transfers") if order_id in str(r["idempotency_key"])]

        # Decided a day ago: Stripe may have forgotten the idempotency key, so a replay is refused.
        db, job_id = gw.services.db, int(failed.id)
        await db.execute("UPDATE money_jobs SET decided_at = now() - interval '21 hours' WHERE id = $1", job_id)
        stale = await refused(admin, JobRetry(job_id=failed.id))
        assert (stale.code, stale.error.details) == ("conflict", {"current_state": "expired"})
        assert await db.fetchval("SELECT state FROM money_jobs WHERE id = $1", job_id) == "failed"
        await db.execute("UPDATE money_jobs SET decided_at = now() WHERE id = $1", job_id)

        retried = await admin.request(JobRetry(job_id=failed.id))
        assert (retried.order_id, retried.job.id, retried.job.state, retried.job.attempts) == (
            order_id, failed.id, "pending", 0)
        done = await until(lambda: _job(admin, order_id, "done"))
        assert done.attempts == 1 and done.result.startswith("tr_")
        made = [r for r in posts(stripe_server, "/v1/transfers") if order_id in str(r["idempotency_key"])]
        assert len(made) == 1
        paid = await gw.services.db.fetchval("SELECT count(*) FROM transfers WHERE order_id = $1", uuid.UUID(order_id))
        assert paid == 1

        not_failed = await refused(admin, JobRetry(job_id=done.id))
        assert (not_failed.code, not_failed.error.details) == ("conflict", {"current_state": "done"})
        assert (await refused(admin, JobRetry(job_id="999999999999"))).code == "not_found"
        merchant, _ = await signed_in("merchant", gw=gw)
        assert (await refused(merchant, JobRetry(job_id=done.id))).code == "forbidden"


async def _enabled(gw, tech):
    return (await tech.request(PayoutStatus())).payouts_enabled


async def _job(admin, order_id, state):
    found = [j for j in (await admin.request(PaymentAudit(order_id=order_id))).jobs if j.kind == "transfer"]
    return found[0] if found and found[0].state == state else None
