"""Dependencies that go away and come back: Redis killed and restarted empty, PostgreSQL stopped
and started, with two gateway processes on them. Meanwhile requests that need the dependency
answer `unavailable` (never `internal`) and sessions stay open; afterwards the gateways reconnect
by themselves, rebuild what Redis lost (the open-order pool from PostgreSQL, technicians' positions
from their sessions), deliver across processes again, and every acknowledged write is still there."""

import asyncio
import contextlib
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.server import Gateway
from protocol.auth import Ping
from protocol.chat import ChatHistory, ChatSend
from protocol.client import Client
from protocol.location import LocationUpdate
from protocol.orders import OrderAccept, OrderDepart, OrderGet, OrderNearby, OrderTimeline
from storage.embedded import EmbeddedPostgres
from tests.processes import RedisProcess, SentinelProcess
from tests.world import events, order_at, refused, spot, technician


@pytest.fixture
def redis_process(tmp_path: Path) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path)
    server.start()
    yield server
    with contextlib.suppress(Exception):
        server.kill()


async def until_event(client: Client, kind: str, match: Callable[[Any], bool], timeout: float = 20.0) -> Any:
    """The first event of `kind` that matches, skipping others (the pool's repair may announce
    orders of before the loss again first)."""
    async with asyncio.timeout(timeout):
        while True:
            [event] = await events(client, kind, timeout=timeout)
            if match(event):
                return event


async def ready(*gateways: Gateway) -> bool:
    """What a balancer asks: every gateway's /readyz is 200."""
    return all([(await asyncio.to_thread(readyz, gw.http_port))[0] == 200 for gw in gateways])


def readyz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def until(check: Callable[[], Awaitable[Any]], timeout: float = 30.0) -> Any:
    """Retry `check` (a request that may be refused while a dependency is back on its feet) until it
    returns something true; the last refusal is raised at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = await check()
            if result:
                return result
        except Exception:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise TimeoutError("never came back")
        await asyncio.sleep(0.2)


@pytest.fixture
async def two_nodes(make_gateway, redis_process: RedisProcess) -> AsyncIterator[tuple[Gateway, Gateway]]:
    async with make_gateway(redis_url=redis_process.url, sweep_interval_s=0.5) as one, \
            make_gateway(redis_url=redis_process.url, sweep_interval_s=0.5) as two:
        yield one, two


async def test_redis_lost_and_back_empty(two_nodes, redis_process, signed_in):
    one, two = two_nodes
    place = spot()
    tech, _ = await technician(signed_in, place, connect={"gw": two})
    consumer, _ = await signed_in("consumer", gw=one)
    first = (await consumer.request(order_at(place))).order
    [announced] = await events(tech, "order.available")
    assert announced.order.id == first.id

    redis_process.kill()
    assert (await refused(tech, OrderNearby())).code == "unavailable"  # the pool is in Redis
    assert not await ready(one) and not await ready(two)  # a balancer stops sending them sessions
    assert await tech.request(Ping()) and await consumer.request(Ping())  # sessions stay open
    meanwhile = (await consumer.request(order_at(place))).order  # PostgreSQL is the record: acknowledged
    assert meanwhile.state == "open"

    redis_process.start(empty=True)  # as if Redis's machine were replaced: everything in it is gone
    await until(lambda: ready(one, two))  # what a balancer asks: pool rebuilt, pub/sub back

    async def pool_has_both() -> bool:
        nearby = await tech.request(OrderNearby(lat=place[0], lng=place[1]))
        return {first.id, meanwhile.id} <= {o.order.id for o in nearby.orders}

    await until(pool_has_both)  # rebuilt from PostgreSQL
    # the technician's position went with Redis; their session's last one is put back, filters and all
    later = (await consumer.request(order_at(place))).order
    await until_event(tech, "order.available", lambda e: e.order.id == later.id)  # across processes, new Redis
    await tech.request(OrderAccept(order_id=later.id))
    await consumer.request(ChatSend(order_id=later.id, client_id="c1", text="Are you on your way?"))
    await until_event(tech, "chat.message", lambda e: e.message.text == "Are you on your way?")
    for order in (first, meanwhile):
        assert (await consumer.request(OrderGet(order_id=order.id))).order.state == "open"
    history = (await tech.request(ChatHistory(order_id=later.id))).messages
    assert [m.text for m in history if m.kind != "system"] == ["Are you on your way?"]


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[tuple[EmbeddedPostgres, str]]:
    """A PostgreSQL of the test's own, to stop and start again (same data, same URL)."""
    server = EmbeddedPostgres(tmp_path / "pg")
    url = server.start()
    yield server, url
    server.stop()


async def test_postgres_stopped_and_started_again(make_gateway, redis_process, postgres, signed_in):
    postgres, url = postgres
    async with make_gateway(database_url=url, redis_url=redis_process.url, sweep_interval_s=0.5) as gw:
        place = spot()
        tech, _ = await technician(signed_in, place, connect={"gw": gw})
        consumer, _ = await signed_in("consumer", gw=gw)
        order = (await consumer.request(order_at(place))).order
        await tech.request(OrderAccept(order_id=order.id))
        await consumer.request(ChatSend(order_id=order.id, client_id="c1", text="Gate code is 1234"))

        postgres.stop()
        assert (await refused(consumer, OrderGet(order_id=order.id))).code == "unavailable"
        assert (await refused(consumer, ChatSend(order_id=order.id, client_id="c2", text="hello?"))).code \
            == "unavailable"  # not acknowledged, so the app keeps it to send again
        assert (await refused(tech, OrderDepart(order_id=order.id))).code == "unavailable"
        assert await tech.request(LocationUpdate(lat=place[0], lng=place[1]))  # positions are Redis's
        assert await consumer.request(Ping()) and not await ready(gw)

        assert postgres.start() == url
        assert (await until(lambda: consumer.request(OrderGet(order_id=order.id)))).order.state == "accepted"
        await until(lambda: ready(gw))
        await consumer.request(ChatSend(order_id=order.id, client_id="c2", text="hello?"))  # the app's retry
        await tech.request(OrderDepart(order_id=order.id))
        history = (await tech.request(ChatHistory(order_id=order.id))).messages
        assert [m.text for m in history if m.kind != "system"] == ["Gate code is 1234", "hello?"]
        entries = (await consumer.request(OrderTimeline(order_id=order.id))).entries
        assert [e.to_state for e in entries][-3:] == ["open", "accepted", "en_route"]


async def test_a_sentinel_failover_moves_every_gateway_to_the_new_master(make_gateway, tmp_path, signed_in):
    master = RedisProcess(tmp_path / "a")
    master.start()
    replica = RedisProcess(tmp_path / "b", "--replicaof", "127.0.0.1", str(master.port))
    replica.start()
    sentinel = SentinelProcess(tmp_path / "sentinel", master)
    try:
        await until(lambda: asyncio.to_thread(lambda: sentinel.master() == master.port))
        settings = {"redis_url": None, "redis_sentinels": f"127.0.0.1:{sentinel.port}", "sweep_interval_s": 0.5}
        async with make_gateway(**settings) as one, make_gateway(**settings) as two:
            place = spot()
            tech, _ = await technician(signed_in, place, connect={"gw": two})
            consumer, _ = await signed_in("consumer", gw=one)
            first = (await consumer.request(order_at(place))).order
            await until_event(tech, "order.available", lambda e: e.order.id == first.id)

            master.kill()  # Sentinel sees it down after a second and promotes the replica
            await until(lambda: asyncio.to_thread(lambda: sentinel.master() == replica.port), timeout=60)
            await until(lambda: ready(one, two))
            nearby = await until(lambda: tech.request(OrderNearby(lat=place[0], lng=place[1])))
            assert first.id in {o.order.id for o in nearby.orders}  # the replica had it
            later = (await consumer.request(order_at(place))).order
            await until_event(tech, "order.available", lambda e: e.order.id == later.id)
            await tech.request(OrderAccept(order_id=later.id))
            await consumer.request(ChatSend(order_id=later.id, client_id="c1", text="See you soon"))
            await until_event(tech, "chat.message", lambda e: e.message.text == "See you soon")
    finally:
        sentinel.stop()
        for server in (master, replica):
            with contextlib.suppress(Exception):
                server.kill()
