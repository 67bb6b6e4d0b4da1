"""A rolling restart: the three nodes of a fleet stopped (SIGTERM) and started again on their port
one after the other while apps stream positions, chat, and create and accept orders. A node that
stops drains: it closes every session with 1012 ("service restart") so apps reconnect to another
node at once, and nothing acknowledged is lost (docs/protocol.md, "Close codes")."""

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator

import pytest
from websockets.exceptions import ConnectionClosed

from protocol.auth import Auth
from protocol.client import Client, ErrorReply, Reconnecting
from protocol.location import Duty
from protocol.orders import Order, OrderAccept, OrderGet, OrderTimeline
from storage import geo
from tests.conftest import mint
from tests.fleet import (
    ChatApp,
    Technician,
    all_hear,
    check_room,
    clean,
    node,
    on_duty_at,
    shared_kek,
    whole_history,
)
from tests.processes import GatewayProcess
from tests.world import offset, order_at, spot

LOST = (ConnectionError, ConnectionClosed, TimeoutError)  # no reply: the request may or may not have been done


class Dispatch:
    """A consumer creating orders and a technician accepting each; what was acknowledged."""

    def __init__(self, urls: list[str], consumer: str, technician: str, place: tuple[float, float]) -> None:
        self.place = place
        self.technician_token = technician
        self.consumer = Reconnecting(urls, self.sign_in_as(consumer))
        self.technician = Reconnecting(urls[1:] + urls[:1], self.sign_in_as(technician, on_duty=True))
        self.created: list[str] = []  # orders whose creation was acknowledged
        self.accepted: list[str] = []  # and whose accept was acknowledged

    def sign_in_as(self, token: str, on_duty: bool = False):  # type: ignore[no-untyped-def]
        async def sign_in(client: Client) -> None:
            await client.request(Auth(token=token))
            if on_duty and not self.created:  # once: duty is kept by the gateway
                await on_duty_at(client, self.place)
        return sign_in

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                order: Order = (await self.consumer.request(order_at(self.place))).order
            except LOST:
                continue  # not acknowledged: not counted
            self.created.append(order.id)
            try:
                await self.technician.request(OrderAccept(order_id=order.id), retry=True)
            except ErrorReply as refused:  # a retry of an accept that was done before its reply was lost
                assert refused.code == "conflict", refused
                continue
            self.accepted.append(order.id)
            await asyncio.sleep(0.1)


@pytest.fixture
async def rolling_fleet(gateway, servers, key_dir, tmp_path) -> AsyncIterator[list[GatewayProcess]]:
    """Three nodes of their own (these are restarted), every process started kept for its log."""
    kek = shared_kek(key_dir)
    started = [node(servers, tmp_path / name, kek) for name in ("a", "b", "c")]
    try:
        await asyncio.gather(*(n.start() for n in started))
        yield started
    finally:
        for n in started:
            if n.process is not None and n.process.returncode is None:
                n.kill()
                await n.process.wait()


@pytest.mark.timeout(240)
async def test_a_rolling_restart_under_load_loses_nothing_acknowledged(gateway, servers, key_dir, tmp_path,
                                                                       rolling_fleet):
    nodes = list(rolling_fleet)  # the current process of each node
    urls = [n.url for n in nodes]
    place, rng = spot(), random.Random(13)
    techs = []
    for i in range(4):
        user_id, token = mint(gateway, "technician")
        async with await Client.connect(urls[0]) as setup:
            await setup.request(Auth(token=token))
            await on_duty_at(setup, place)
        techs.append((user_id, Technician(urls[i % 3:] + urls[:i % 3], token, place, rng)))
    _, consumer_token = mint(gateway, "consumer")
    _, tech_token = mint(gateway, "technician")
    far = offset(place, east_mi=90)  # out of the streaming technicians' way
    async with await Client.connect(urls[0]) as consumer, await Client.connect(urls[1]) as tech:
        await consumer.request(Auth(token=consumer_token))
        await tech.request(Auth(token=tech_token))
        await on_duty_at(tech, far)
        room = (await consumer.request(order_at(far))).order.id
        await tech.request(OrderAccept(order_id=room))
        await tech.request(Duty(on_duty=False))
    members = [ChatApp(urls, consumer_token, room, "consumer"), ChatApp(urls[1:] + urls[:1], tech_token, room,
                                                                         "technician")]
    dispatch = Dispatch(urls[2:] + urls[:2], mint(gateway, "consumer")[1], mint(gateway, "technician")[1],
                        offset(place, east_mi=-90))
    apps = [t.app for _, t in techs] + [m.app for m in members] + [dispatch.consumer, dispatch.technician]
    await asyncio.gather(*(app.start() for app in apps))

    stop = asyncio.Event()
    streams = [asyncio.create_task(t.stream(stop)) for _, t in techs]
    listeners = [asyncio.create_task(m.listen()) for m in members]
    talks = [asyncio.create_task(m.talk(None, 0.1, stop)) for m in members]
    orders = asyncio.create_task(dispatch.run(stop))
    for i, old in enumerate(list(nodes)):
        acknowledged = sum(len(m.acknowledged) for m in members)
        while sum(len(m.acknowledged) for m in members) < acknowledged + 4:
            for task in (*talks, *streams, orders):
                if task.done():
                    task.result()  # (a failure, raised here)
            await asyncio.sleep(0.05)  # traffic flows before each stop
        watcher = await Client.connect(old.url)
        await watcher.request(Auth(token=mint(gateway, "technician")[1]))
        assert await old.terminate() == 0
        await asyncio.wait_for(watcher.ws.wait_closed(), 10)  # drained: told to reconnect elsewhere at once
        assert (watcher.ws.close_code, watcher.ws.close_reason) == (1012, "service restart")
        await watcher.close()
        nodes[i] = await node(servers, tmp_path / f"{'abc'[i]}-again", shared_kek(key_dir), port=old.port).start()
        rolling_fleet.append(nodes[i])
    talked = sum(len(m.acknowledged) for m in members)
    while sum(len(m.acknowledged) for m in members) < talked + 4 or any(t.last_on < 2 for _, t in techs):
        await asyncio.sleep(0.05)  # and after the last start, chat and the technicians' streams flow
    stop.set()
    await asyncio.wait_for(asyncio.gather(*talks, *streams, orders), 60)

    assert all(app.connections >= 2 for app in apps)  # every app was on a node that restarted
    check_room(await whole_history(nodes[0].url, consumer_token, room), members)
    for user_id, t in techs:
        stored = await geo.position(gateway.services.redis, user_id)
        assert stored is not None and t.last is not None
        assert stored == pytest.approx((t.last[1], t.last[0]), abs=1e-4)  # the last acknowledged one
    assert dispatch.accepted
    async with await Client.connect(nodes[1].url) as reader:
        await reader.request(Auth(token=dispatch.technician_token))
        for order_id in dispatch.accepted:
            order = (await reader.request(OrderGet(order_id=order_id))).order
            assert order.state == "accepted"
            timeline = (await reader.request(OrderTimeline(order_id=order_id))).entries
            assert [(e.from_state, e.to_state) for e in timeline][-1] == ("open", "accepted")
    async with await Client.connect(nodes[2].url) as consumer:
        await consumer.request(Auth(token=mint(gateway, "consumer")[1]))
        order = (await consumer.request(order_at(place))).order
    await all_hear([t for _, t in techs], order.id)  # back on duty where they were, on their new nodes
    for task in listeners:
        task.cancel()
    for app in apps:
        with contextlib.suppress(*LOST):
            await app.close()
    clean(rolling_fleet)
