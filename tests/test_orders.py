"""An order's life over real sessions: create, accept, depart, start, complete, rate; who sees what."""

import uuid

import msgspec
import pytest

from protocol.location import TechStats
from protocol.orders import (
    OrderAccept,
    OrderCancel,
    OrderComplete,
    OrderDecline,
    OrderDepart,
    OrderGet,
    OrderList,
    OrderRate,
    OrderRelease,
    OrderStart,
    OrderTimeline,
)
from tests.world import events, offset, order_at, refused, spot, technician


async def test_the_whole_life_of_an_order(gateway, signed_in):
    place = spot()
    consumer, consumer_id = await signed_in("consumer")
    tech, tech_id = await technician(signed_in, offset(place, north_mi=3))
    order = (await consumer.request(order_at(place))).order
    assert (order.state, order.price_cents, order.address) == ("open", 13900, "12 Elm Street, Apt 3")
    [available] = await events(tech, "order.available")
    assert available.order.id == order.id and available.order.address is None  # pool view: no address
    assert 2.9 <= available.distance_mi <= 3.1

    accepted = (await tech.request(OrderAccept(order_id=order.id))).order
    assert accepted.technician_id == tech_id and accepted.address == "12 Elm Street, Apt 3"
    for step in (OrderDepart, OrderStart):
        await tech.request(step(order_id=order.id))
    done = (await tech.request(OrderComplete(order_id=order.id, note="Replaced the start relay"))).order
    assert done.state == "completed" and done.completion_note == "Replaced the start relay"
    statuses = await events(consumer, "order.status", 4)
    assert [(s.previous_state, s.order.state) for s in statuses] == [
        ("open", "accepted"), ("accepted", "en_route"), ("en_route", "in_service"), ("in_service", "completed")]

    rated = (await consumer.request(OrderRate(order_id=order.id, stars=5, comment="Quick and tidy"))).order
    assert (rated.rating, rated.rating_comment) == (5, "Quick and tidy")
    again = await refused(consumer, OrderRate(order_id=order.id, stars=1))
    assert again.code == "conflict"

    stats = await tech.request(TechStats())
    # No Stripe here: the job's payout is pending, nothing is earned until a transfer runs.
    assert (stats.earnings_cents, stats.pending_cents, stats.jobs_completed, stats.average_rating,
            stats.ratings) == (0, 11815, 1, 5.0, 1)

    timeline = await consumer.request(OrderTimeline(order_id=order.id))
    assert [(e.from_state, e.to_state, e.actor_role) for e in timeline.entries] == [
        (None, "open", "consumer"), ("open", "accepted", "technician"), ("accepted", "en_route", "technician"),
        ("en_route", "in_service", "technician"), ("in_service", "completed", "technician")]
    assert timeline.entries[1].actor_id == tech_id and timeline.entries[0].actor_id == consumer_id


async def test_transitions_out_of_order_are_conflicts_with_the_current_state(gateway, signed_in):
    place = spot()
    consumer, _ = await signed_in("consumer")
    tech, _ = await technician(signed_in, place)
    other, _ = await technician(signed_in, place)
    order = (await consumer.request(order_at(place))).order
    early = await refused(tech, OrderStart(order_id=order.id))
    assert (early.code, early.error.details) == ("conflict", {"current_state": "open"})
    await tech.request(OrderAccept(order_id=order.id))
    late = await refused(other, OrderAccept(order_id=order.id))
    assert (late.code, late.error.details) == ("conflict", {"current_state": "accepted"})
    assert (await refused(other, OrderDepart(order_id=order.id))).code == "not_found"  # not theirs to see
    assert (await refused(tech, OrderComplete(order_id=order.id))).error.details == {"current_state": "accepted"}
    await tech.request(OrderDepart(order_id=order.id))
    await tech.request(OrderStart(order_id=order.id))
    # a consumer can no longer cancel once service started; an admin can
    cancel = await refused(consumer, OrderCancel(order_id=order.id))
    assert (cancel.code, cancel.error.details) == ("conflict", {"current_state": "in_service"})
    admin, _ = await signed_in("admin")
    cancelled = (await admin.request(OrderCancel(order_id=order.id, reason="duplicate"))).order
    assert cancelled.state == "cancelled"
    entries = (await admin.request(OrderTimeline(order_id=order.id))).entries
    assert entries[-1].actor_role == "admin" and entries[-1].details == {"reason": "duplicate"}


async def test_who_sees_an_order(gateway, signed_in):
    place = spot()
    consumer, _ = await signed_in("consumer")
    stranger, _ = await signed_in("consumer")
    near, _ = await technician(signed_in, offset(place, east_mi=10))
    far, _ = await technician(signed_in, offset(place, east_mi=80))
    order = (await consumer.request(order_at(place))).order
    assert (await refused(stranger, OrderGet(order_id=order.id))).code == "not_found"
    assert (await refused(stranger, OrderGet(order_id=str(uuid.uuid4())))).code == "not_found"  # same answer
    assert (await refused(far, OrderGet(order_id=order.id))).code == "not_found"
    pool = (await near.request(OrderGet(order_id=order.id))).order
    assert pool.address is None and pool.consumer_id is None and abs(pool.lat - order.lat) <= 0.006
    assert (await refused(near, OrderTimeline(order_id=order.id))).code == "not_found"
    await near.request(OrderAccept(order_id=order.id))
    assert (await near.request(OrderGet(order_id=order.id))).order.address == order.address
    # once taken, it leaves the other technicians' sight
    other_near, _ = await technician(signed_in, offset(place, north_mi=1))
    assert (await refused(other_near, OrderGet(order_id=order.id))).code == "not_found"
    assert (await refused(stranger, OrderCancel(order_id=order.id))).code == "not_found"


async def test_merchants_order_for_their_customers_and_see_their_brands(gateway, signed_in):
    place = spot()
    merchant, merchant_id = await signed_in("merchant")
    await gateway.services.db.execute("INSERT INTO merchant_brands VALUES ($1, 'bosch')", merchant_id)
    consumer, consumer_id = await signed_in("consumer")
    order = (await merchant.request(order_at(place, brand="bosch", sku="SHPM88Z75N", service_type="installation",
                                             consumer_id=consumer_id))).order
    assert order.consumer_id == consumer_id and order.price_cents == 17850
    [status] = await events(consumer, "order.status")
    assert status.order.id == order.id
    assert (await consumer.request(OrderGet(order_id=order.id))).order.id == order.id
    listed = (await merchant.request(OrderList(limit=100))).orders
    assert order.id in [o.id for o in listed] and {o.brand for o in listed} == {"bosch"}
    mine = await refused(merchant, order_at(place, consumer_id=consumer_id))  # whirlpool: not its brand
    assert mine.code == "forbidden"
    missing = await refused(merchant, order_at(place, brand="bosch", sku="SHPM88Z75N"))
    assert missing.code == "bad_request"


async def test_bad_orders_are_refused_and_change_nothing(gateway, signed_in):
    consumer, consumer_id = await signed_in("consumer")
    place = spot()
    valid = msgspec.to_builtins(order_at(place))
    for fields in ({"sku": "NOPE123"}, {"brand": "samsung"}, {"attachments": [str(uuid.uuid4())]},
                   {"window_start": "2026-12-01T10:00:00Z", "window_end": "2026-12-01T09:00:00Z"},
                   {"lat": 91}, {"lng": -181}, {"lat": "north"}, {"description": ""}, {"address": "x" * 301}):
        reply, _ = await consumer.call("order.create", {**valid, **fields})
        assert reply.get("code") == "bad_request", (fields, reply)
    assert await gateway.services.db.fetchval("SELECT count(*) FROM orders WHERE consumer_id = $1", consumer_id) == 0


async def test_addresses_are_stored_encrypted(gateway, signed_in):
    consumer, _ = await signed_in("consumer")
    order = (await consumer.request(order_at(spot(), address="742 Evergreen Terrace"))).order
    row = await gateway.services.db.fetchval("SELECT row_to_json(o)::text FROM orders o WHERE id = $1::uuid",
                                             order.id)
    assert "Evergreen" not in row and b"742 Evergreen".hex() not in row


async def test_lists_are_newest_first_and_paginated(gateway, signed_in):
    consumer, _ = await signed_in("consumer")
    made = [(await consumer.request(order_at(spot(), description=f"job {i}"))).order.id for i in range(3)]
    first = await consumer.request(OrderList(limit=2))
    assert [o.id for o in first.orders] == made[:0:-1] and first.next_cursor
    second = await consumer.request(OrderList(limit=2, cursor=first.next_cursor))
    assert [o.id for o in second.orders] == made[:1] and second.next_cursor is None
    assert (await consumer.request(OrderList(state="completed"))).orders == []
    reply, _ = await consumer.call("order.list", {"cursor": "garbage"})
    assert reply["code"] == "bad_request"


async def test_a_redis_error_that_is_not_an_outage_is_internal_and_logged(gateway, signed_in, caplog):
    place = spot()
    consumer, _ = await signed_in("consumer")
    tech, tech_id = await technician(signed_in, place)
    order = (await consumer.request(order_at(place))).order
    await gateway.services.redis.set(f"declined:{tech_id}", "not a set")  # SADD on it: WRONGTYPE
    wrong = await refused(tech, OrderDecline(order_id=order.id))
    assert wrong.code == "internal"  # Redis answered: nothing for the app to retry
    assert any("order.decline" in r.getMessage() and r.exc_info for r in caplog.records)


JOB_OPERATIONS = [OrderAccept, OrderDecline, OrderRelease, OrderDepart, OrderStart, OrderComplete, OrderCancel]


@pytest.mark.parametrize("operation", JOB_OPERATIONS, ids=lambda op: op.__struct_config__.tag)
async def test_a_job_operation_on_an_order_the_caller_may_not_see_is_not_found_like_an_unknown_id(
        gateway, signed_in, operation):
    place = spot()
    consumer, _ = await signed_in("consumer")
    stranger, _ = await signed_in("consumer")
    tech, _ = await technician(signed_in, place)
    near, _ = await technician(signed_in, offset(place, north_mi=1))
    far, _ = await technician(signed_in, offset(place, east_mi=80))
    unseen = (await consumer.request(order_at(place))).order  # open, far from `far`
    taken = (await consumer.request(order_at(place))).order
    await tech.request(OrderAccept(order_id=taken.id))
    callers = [stranger] if operation is OrderCancel else [near, far]
    for caller in callers:
        for order_id in (taken.id, unseen.id, str(uuid.uuid4())):
            if caller is near and order_id == unseen.id:
                continue  # an open order in their reach: theirs to see
            wrong = await refused(caller, operation(order_id=order_id))
            if caller is near and order_id == taken.id and operation in (OrderAccept, OrderDecline):
                # taken from the pool within their reach: the pool told them (`order.unavailable`)
                assert (wrong.code, wrong.error.details) == ("conflict", {"current_state": "accepted"})
            else:
                assert (wrong.code, wrong.error.message) == ("not_found", "No such order."), (caller, order_id)
