"""Matching: who hears of an order, the accept race, release, staleness, the feed, the pool's rebuild."""

import asyncio

import pytest

from protocol.auth import Auth
from protocol.client import Client, ErrorReply
from protocol.location import Duty, LocationUpdate
from protocol.orders import OrderAccept, OrderCancel, OrderDecline, OrderNearby, OrderRelease
from storage import geo
from tests.conftest import SECRET, mint
from tests.processes import GatewayProcess
from tests.world import events, offset, order_at, quiet, spot, technician


async def test_announced_to_on_duty_technicians_in_range_who_match(gateway, signed_in):
    place = spot()
    consumer, _ = await signed_in("consumer")
    near, _ = await technician(signed_in, offset(place, north_mi=20))
    edge, _ = await technician(signed_in, offset(place, east_mi=49))
    far, _ = await technician(signed_in, offset(place, east_mi=55))
    bosch_only, _ = await technician(signed_in, place, brands=["bosch"])
    installs_only, _ = await technician(signed_in, place, services=["installation"])
    off_duty, _ = await technician(signed_in, place)
    await off_duty.request(Duty(on_duty=False))
    order = (await consumer.request(order_at(place))).order
    for client in (near, edge):
        [event] = await events(client, "order.available")
        assert event.order.id == order.id
    for client in (far, bosch_only, installs_only, off_duty):
        assert await quiet(client, "order.available", 0.3)
    # the filtered technicians hear of what they asked for
    bosch = (await consumer.request(order_at(place, brand="bosch", sku="SHPM88Z75N"))).order
    assert (await events(bosch_only, "order.available"))[0].order.id == bosch.id
    assert await quiet(installs_only, "order.available", 0.3)


async def test_fifty_technicians_accept_at_once_and_exactly_one_wins(gateway, signed_in):
    place = spot()
    consumer, _ = await signed_in("consumer")
    crowd = [await technician(signed_in, offset(place, north_mi=i / 10)) for i in range(50)]
    order = (await consumer.request(order_at(place))).order
    for client, _ in crowd:
        await events(client, "order.available")

    async def attempt(client: Client) -> str:
        try:
            return (await client.request(OrderAccept(order_id=order.id))).order.technician_id
        except ErrorReply as exc:
            assert exc.code == "conflict" and exc.error.details == {"current_state": "accepted"}
            return ""

    winners = [w for w in await asyncio.gather(*(attempt(client) for client, _ in crowd)) if w]
    assert len(winners) == 1
    row = await gateway.services.db.fetchrow("SELECT state, technician_id FROM orders WHERE id = $1::uuid", order.id)
    assert (row["state"], row["technician_id"]) == ("accepted", winners[0])
    accepted_entries = await gateway.services.db.fetchval(
        "SELECT count(*) FROM order_events WHERE order_id = $1::uuid AND to_state = 'accepted'", order.id)
    assert accepted_entries == 1
    redis = gateway.services.redis
    assert await redis.zscore(geo.order_index(), order.id) is None
    assert not await redis.hexists(geo.POOL, order.id)
    for client, user_id in crowd:  # everyone else is told it is gone
        if user_id != winners[0]:
            assert (await events(client, "order.unavailable"))[0].order_id == order.id


async def test_release_puts_it_back_and_announces_it_again(gateway, signed_in):
    place = spot()
    consumer, _ = await signed_in("consumer")
    first, first_id = await technician(signed_in, place)
    second, _ = await technician(signed_in, offset(place, east_mi=5))
    order = (await consumer.request(order_at(place))).order
    await events(second, "order.available")
    await events(first, "order.available")
    await first.request(OrderAccept(order_id=order.id))
    assert (await events(second, "order.unavailable"))[0].order_id == order.id
    released = (await first.request(OrderRelease(order_id=order.id, reason="van broke down"))).order
    assert released.state == "open" and released.technician_id is None
    again = await events(second, "order.available")
    assert again[0].order.id == order.id
    assert await quiet(first, "order.available", 0.3)  # not offered back to who gave it up
    feed = await second.request(OrderNearby())
    assert order.id in [n.order.id for n in feed.orders]
    statuses = await events(consumer, "order.status", 2)
    assert [s.order.state for s in statuses] == ["accepted", "open"]
    assert statuses[1].order.technician_id is None and first_id


async def test_cancel_takes_it_out_of_feeds(gateway, signed_in):
    place = spot()
    consumer, _ = await signed_in("consumer")
    tech, _ = await technician(signed_in, place)
    order = (await consumer.request(order_at(place))).order
    await events(tech, "order.available")
    await consumer.request(OrderCancel(order_id=order.id))
    gone = (await events(tech, "order.unavailable"))[0]
    assert (gone.order_id, gone.state) == (order.id, "cancelled")
    assert order.id not in [n.order.id for n in (await tech.request(OrderNearby())).orders]


async def test_the_feed_is_nearest_first_filtered_paginated_and_without_declines(gateway, signed_in):
    place = spot()
    consumer, _ = await signed_in("consumer")
    tech, _ = await technician(signed_in, place)
    made = []
    for miles, brand, sku in ((30, "whirlpool", "WRF535SWHZ"), (10, "lg", "LDFN4542S"), (20, "whirlpool",
                                                                                          "WTW5000DW"),
                              (60, "whirlpool", "WRF535SWHZ")):
        made.append((await consumer.request(order_at(offset(place, north_mi=miles), brand=brand, sku=sku))).order.id)
    feed = await tech.request(OrderNearby())
    assert [n.order.id for n in feed.orders] == [made[1], made[2], made[0]]  # the one 60 miles out is not there
    assert [round(n.distance_mi) for n in feed.orders] == [10, 20, 30]
    assert all(n.order.address is None for n in feed.orders)
    page = await tech.request(OrderNearby(limit=2))
    rest = await tech.request(OrderNearby(limit=2, cursor=page.next_cursor))
    assert [n.order.id for n in page.orders + rest.orders] == [made[1], made[2], made[0]]
    assert rest.next_cursor is None
    only_whirlpool = await tech.request(OrderNearby(brand="whirlpool"))
    assert [n.order.id for n in only_whirlpool.orders] == [made[2], made[0]]
    wider = await tech.request(OrderNearby(radius_mi=70))
    assert made[3] in [n.order.id for n in wider.orders]
    await tech.request(OrderDecline(order_id=made[1]))
    assert [n.order.id for n in (await tech.request(OrderNearby())).orders] == [made[2], made[0]]
    elsewhere = await tech.request(OrderNearby(lat=place[0] + 0.5, lng=place[1]))  # around another point
    assert elsewhere.orders[0].order.id == made[0]


async def test_a_declined_order_is_not_announced_again_to_the_decliner(gateway, signed_in):
    place = spot()
    consumer, _ = await signed_in("consumer")
    decliner, _ = await technician(signed_in, place)
    taker, _ = await technician(signed_in, place)
    order = (await consumer.request(order_at(place))).order
    await events(decliner, "order.available")
    await decliner.request(OrderDecline(order_id=order.id))
    await taker.request(OrderAccept(order_id=order.id))
    await taker.request(OrderRelease(order_id=order.id))
    assert await quiet(decliner, "order.available", 0.4)
    reply, _ = await decliner.call("order.decline", {"order_id": order.id})
    assert reply["type"] == "result"  # declining twice is harmless


async def test_location_updates_are_fire_and_forget_and_validated(gateway, signed_in):
    tech, tech_id = await technician(signed_in, spot())
    place = spot()
    await tech.send(LocationUpdate(lat=place[0], lng=place[1]))  # no id: no reply
    pong, _ = await tech.call("ping", {})
    assert pong["type"] == "result" and tech.unmatched.empty()
    async with asyncio.timeout(5):
        while (where := await geo.position(gateway.services.redis, tech_id)) is None or abs(where[1] - place[0]) > 1e-4:
            await asyncio.sleep(0.02)
    for bad in ({"lat": 90.5, "lng": 0}, {"lat": 0, "lng": 180.5}, {"lat": "x", "lng": 0}, {"lat": 0},
                {"lat": 0, "lng": 0, "speed": -1}, {"lat": 0, "lng": 0, "heading": 400}):
        reply, _ = await tech.call("location.update", bad)
        assert reply["code"] == "bad_request", bad
    consumer, _ = await signed_in("consumer")
    reply, _ = await consumer.call("location.update", {"lat": 0, "lng": 0})
    assert reply["code"] == "forbidden"


async def test_stale_positions_stop_counting(make_gateway, signed_in):
    async with make_gateway(position_stale_s=1, sweep_interval_s=0.2) as gw:
        place = spot()
        client, stale_id = await technician(signed_in, place, connect={"gw": gw})
        assert await geo.position(gw.services.redis, stale_id) is not None
        async with asyncio.timeout(5):
            while await geo.position(gw.services.redis, stale_id) is not None:
                await asyncio.sleep(0.1)
        consumer, _ = await signed_in("consumer", gw=gw)
        await consumer.request(order_at(place))
        assert await quiet(client, "order.available", 0.4)
        # the next update puts the technician back
        await client.request(LocationUpdate(lat=place[0], lng=place[1]))
        order = (await consumer.request(order_at(place))).order
        assert (await events(client, "order.available"))[0].order.id == order.id


async def test_an_order_reaches_a_technician_on_another_gateway_process(gateway, signed_in, servers, tmp_path):
    args = ("--database-url", servers[0], "--redis-url", servers[1], "--secret", SECRET, "--data-dir", str(tmp_path))
    async with GatewayProcess(*args) as other:
        place = spot()
        async with await Client.connect(other.url) as tech:
            await tech.request(Auth(token=mint(gateway, "technician")[1]))
            await tech.request(Duty(on_duty=True))
            await tech.request(LocationUpdate(lat=place[0], lng=place[1]))
            consumer, _ = await signed_in("consumer")
            order = (await consumer.request(order_at(place))).order
            [event] = await events(tech, "order.available")
            assert event.order.id == order.id and event.distance_mi < 0.1
            helper, _ = await technician(signed_in, place)
            await helper.request(OrderAccept(order_id=order.id))
            assert (await events(tech, "order.unavailable"))[0].order_id == order.id


async def test_the_pool_is_rebuilt_from_postgresql_when_redis_loses_it(make_gateway, signed_in):
    async with make_gateway(sweep_interval_s=0.2) as gw:
        place = spot()
        consumer, _ = await signed_in("consumer", gw=gw)
        order = (await consumer.request(order_at(place))).order
        redis = gw.services.redis
        keys = [k async for k in redis.scan_iter("geo:orders*")] + [geo.POOL, geo.POOL_META, geo.POOL_BUILT]
        await redis.delete(*keys)
        async with asyncio.timeout(5):
            while not await redis.exists(geo.POOL_BUILT):
                await asyncio.sleep(0.05)
        tech, _ = await technician(signed_in, place, connect={"gw": gw})
        assert order.id in [n.order.id for n in (await tech.request(OrderNearby())).orders]


@pytest.mark.parametrize("request_fields", [{"lat": 1.0}, {"cursor": "x"}])
async def test_nearby_bad_arguments(gateway, signed_in, request_fields):
    tech, _ = await technician(signed_in, spot())
    reply, _ = await tech.call("order.nearby", request_fields)
    assert reply["code"] == "bad_request"


async def test_an_open_order_whose_announcement_was_lost_is_announced_by_the_sweep(make_gateway, signed_in):
    """A process that dies between committing an order's opening and announcing it: the order is
    open in PostgreSQL, absent from the pool. The periodic sweep announces it."""
    async with make_gateway(sweep_interval_s=0.2) as gw:
        place = spot()
        consumer, _ = await signed_in("consumer", gw=gw)
        order = (await consumer.request(order_at(place))).order
        await geo.pool_remove(gw.services.redis, [order.id])  # the announcement that never happened
        await gw.services.db.execute("UPDATE orders SET updated_at = now() - interval '1 minute' WHERE id = $1::uuid",
                                     order.id)
        tech, _ = await technician(signed_in, place, connect={"gw": gw})
        [offered] = await events(tech, "order.available", timeout=10)
        assert offered.order.id == order.id
        assert [o.order.id for o in (await tech.request(OrderNearby())).orders] == [order.id]
