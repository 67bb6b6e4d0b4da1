"""A fleet: three gateway nodes as separate processes, each with its own data folder (as if on three
machines), sharing one PostgreSQL, one Redis, the token secret and the key-encryption key (given
as `KEK`, the way a fleet gets it from a secret store). What one node does, the others see; a node
killed mid-traffic loses no acknowledged write and its apps carry on from another node."""

import asyncio
import json
import random
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from bench.servers import delivery_received
from gateway.delivery import STREAM_RECHECK_S
from handlers.ai.engine import render
from protocol.admin import Notice, Notify, Watch
from protocol.ai import AiAnswered, AiDelta, AiReply, AiStart
from protocol.auth import Auth
from protocol.chat import ChatHistory, ChatMessage, ChatSend
from protocol.client import Client, ErrorReply
from protocol.location import Duty
from protocol.orders import OrderAccept, OrderGet, OrderTimeline
from protocol.suspension import Suspend
from storage import geo, push
from storage.db import connect_redis
from storage.embedded import free_port
from tests.conftest import SECRET, mint, ws_url
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
from tests.processes import GatewayProcess, run_command
from tests.world import events, fresh, offset, order_at, quiet, spot


@pytest.fixture(scope="module")
async def fleet(gateway, servers, key_dir, tmp_path_factory) -> AsyncIterator[list[GatewayProcess]]:
    kek, root = shared_kek(key_dir), tmp_path_factory.mktemp("fleet")
    nodes = [node(servers, root / name, kek) for name in ("a", "b", "c")]
    try:
        await asyncio.gather(*(n.start() for n in nodes))
        yield nodes
        clean(nodes)
    finally:
        for n in nodes:
            if n.process is not None and n.process.returncode is None:
                await n.terminate()


@pytest.fixture
async def on(gateway) -> AsyncIterator[Callable[..., Awaitable[tuple[Client, str]]]]:
    """`client, user_id = await on(node, "technician")`: a signed-in session on that node (a fresh
    user, or the one of `token`)."""
    opened: list[Client] = []

    async def sign_in(where: GatewayProcess, role: str, token: tuple[str, str] | None = None) -> tuple[Client, str]:
        user_id, secret = token or mint(gateway, role)
        client = await Client.connect(where.url)
        opened.append(client)
        await client.request(Auth(token=secret))
        return client, user_id

    yield sign_in
    for client in opened:
        await client.close()


def texts(page: list[ChatMessage]) -> list[str | None]:
    return [m.text for m in page if m.kind == "text"]


async def test_an_order_created_on_one_node_is_accepted_on_another_and_read_on_the_third(gateway, fleet, on):
    a, b, c = fleet
    place = spot()
    consumer_token = mint(gateway, "consumer")
    consumer, consumer_id = await on(a, "consumer", consumer_token)
    tech, tech_id = await on(b, "technician")
    await on_duty_at(tech, place)
    order = (await consumer.request(order_at(place, address="7 Birch Lane"))).order
    [offer] = await events(tech, "order.available")
    assert offer.order.id == order.id

    accepted = (await tech.request(OrderAccept(order_id=order.id))).order
    assert (accepted.state, accepted.technician_id, accepted.address) == ("accepted", tech_id, "7 Birch Lane")
    [told] = await events(consumer, "order.status")
    assert (told.order.id, told.order.state, told.order.technician_id) == (order.id, "accepted", tech_id)

    await consumer.request(ChatSend(order_id=order.id, client_id="c1", text="The fridge is in the basement"))
    await tech.request(ChatSend(order_id=order.id, client_id="t1", text="On my way"))
    reader, _ = await on(c, "consumer", consumer_token)  # the consumer's second phone, on the third node
    seen = (await reader.request(OrderGet(order_id=order.id))).order
    assert (seen.state, seen.technician_id, seen.address, seen.description) == (
        "accepted", tech_id, "7 Birch Lane", order.description)
    timeline = (await reader.request(OrderTimeline(order_id=order.id))).entries
    assert [(e.from_state, e.to_state, e.actor_id) for e in timeline][-1] == ("open", "accepted", tech_id)
    assert timeline[0].actor_id == consumer_id
    room = (await reader.request(ChatHistory(order_id=order.id))).messages
    assert [m.seq for m in room] == list(range(1, len(room) + 1))
    assert any(m.kind == "system" for m in room)  # "accepted", written by node b, in the room node c reads
    assert texts(room) == ["The fridge is in the basement", "On my way"]
    clean(fleet)


async def test_dispatch_reaches_technicians_on_every_node_and_one_of_racing_accepts_wins(fleet, on):
    place = spot()
    techs = [await on(n, "technician") for n in fleet for _ in range(2)]
    for tech, _ in techs:
        await on_duty_at(tech, offset(place, north_mi=5))
    consumer, _ = await on(fleet[0], "consumer")
    order = (await consumer.request(order_at(place))).order
    for tech, _ in techs:
        assert [e.order.id for e in await events(tech, "order.available")] == [order.id]

    async def accept(tech: Client) -> str:
        try:
            await tech.request(OrderAccept(order_id=order.id))
        except ErrorReply as refused:
            return refused.code
        return "won"

    outcomes = await asyncio.gather(*(accept(tech) for tech, _ in techs))
    assert sorted(outcomes) == ["conflict"] * 5 + ["won"]
    winner = techs[outcomes.index("won")][1]
    assert (await consumer.request(OrderGet(order_id=order.id))).order.technician_id == winner
    for (tech, _), outcome in zip(techs, outcomes, strict=True):
        if outcome != "won":
            assert [e.order_id for e in await events(tech, "order.unavailable")] == [order.id]
    clean(fleet)


async def test_an_announcement_goes_only_to_the_nodes_holding_its_recipients(fleet, on):
    a, b, _ = fleet
    place = spot()
    techs = [await on(n, "technician") for n in (a, b, b)]
    for (tech, _), miles in zip(techs, (3, 6, 9), strict=True):  # three events, one per distance
        await on_duty_at(tech, offset(place, north_mi=miles))
    consumer, _ = await on(a, "consumer")
    before = [await asyncio.to_thread(delivery_received, n.http_port) for n in fleet]
    order = (await consumer.request(order_at(place))).order
    for (tech, _), miles in zip(techs, (3, 6, 9), strict=True):
        [offer] = await events(tech, "order.available")
        assert offer.order.id == order.id and offer.distance_mi == pytest.approx(miles, abs=0.15)
    after = [await asyncio.to_thread(delivery_received, n.http_port) for n in fleet]
    assert after[1][1] - before[1][1] == 2  # b decoded its two technicians, not a's
    assert after[1][0] > before[1][0]
    assert after[2] == before[2]  # c holds none of them: not one byte of the recipient list
    assert after[0] == before[0]  # a, the publisher, delivered to its own technician directly
    clean(fleet)


async def test_a_technician_who_moves_to_another_node_gets_announcements_there_once_per_session(
        gateway, fleet, on, servers):
    a, b, c = fleet
    place = spot()
    token = mint(gateway, "technician")
    first, tech_id = await on(a, "technician", token)
    await on_duty_at(first, place)
    await first.close()  # the app reconnects elsewhere, still on duty at its last position
    moved, _ = await on(b, "technician", token)
    tablet, _ = await on(c, "technician", token)  # and the same technician on a tablet, on the third node
    consumer, _ = await on(a, "consumer")
    order = (await consumer.request(order_at(place))).order
    for session in (moved, tablet):
        assert [e.order.id for e in await events(session, "order.available")] == [order.id]
    for session in (moved, tablet):
        assert await quiet(session, "order.available")  # once each, nothing from the node left behind

    await tablet.close()
    redis = connect_redis(servers[1])
    try:
        async with asyncio.timeout(10):  # c's presence flush: the tablet's node leaves the directory
            while len((await redis.hget(push.DIRECTORY, tech_id) or b"").split()) != 1:
                await asyncio.sleep(0.05)
    finally:
        await redis.aclose()
    before = await asyncio.to_thread(delivery_received, c.http_port)
    second = (await consumer.request(order_at(place))).order
    assert [e.order.id for e in await events(moved, "order.available")] == [second.id]
    assert await asyncio.to_thread(delivery_received, c.http_port) == before
    clean(fleet)


async def test_without_a_trustworthy_directory_announcements_are_multicast_and_still_arrive(
        gateway, make_gateway, fleet, on):
    # A node whose heartbeat is far off, so that nothing puts it back in the registry meanwhile.
    async with make_gateway(presence_ttl_s=3600) as publisher:
        place = spot()
        tech, _ = await on(fleet[1], "technician")
        await on_duty_at(tech, place)
        async with await Client.connect(ws_url(publisher)) as consumer:
            await consumer.request(Auth(token=mint(gateway, "consumer")[1]))
            registry = publisher.metrics.registry
            fallbacks = registry.get_sample_value("gateway_delivery_routing_fallbacks_total")
            # As after Redis lost its data, before this node restored its presence:
            await publisher.services.redis.zrem(push.NODES, publisher.hub.node.hex())
            order = (await consumer.request(order_at(place))).order
            assert [e.order.id for e in await events(tech, "order.available")] == [order.id]
            assert registry.get_sample_value("gateway_delivery_routing_fallbacks_total") == fallbacks + 1
            assert (await consumer.request(OrderGet(order_id=order.id))).order.state == "open"
    clean(fleet)


async def streamed(client: Client, conversation_id: str, turn: int) -> tuple[list[AiDelta], AiAnswered]:
    """A turn's `ai.delta`s as one session received them, and its `ai.answer`."""
    deltas: list[AiDelta] = []
    async with asyncio.timeout(20):
        while True:
            event = await client.next_event(timeout=20)
            if isinstance(event, AiDelta) and (event.conversation_id, event.turn) == (conversation_id, turn):
                deltas.append(event)
            elif isinstance(event, AiAnswered) and (event.conversation_id, event.turn) == (conversation_id, turn):
                return deltas, event


async def test_an_answer_streams_to_the_consumer_on_every_node_holding_a_session_and_to_no_other(
        gateway, fleet, on):
    a, b, _ = fleet
    token = mint(gateway, "consumer")
    phone, _ = await on(a, "consumer", token)
    before = [await asyncio.to_thread(delivery_received, n.http_port) for n in fleet]
    started = await phone.request(AiStart(brand="whirlpool", sku="WRF535SWHZ",
                                          description="The fridge is warm and not cooling"))
    deltas, first = await streamed(phone, started.conversation_id, 1)
    assert "".join(d.text for d in deltas) == render(first.answer) and len(deltas) > 1
    after = [await asyncio.to_thread(delivery_received, n.http_port) for n in fleet]
    assert after[1:] == before[1:]  # the consumer is on a alone: b and c are sent nothing of the stream

    tablet, _ = await on(b, "consumer", token)  # the consumer opens the app on a tablet, served by b
    await asyncio.sleep(STREAM_RECHECK_S)  # a looks again where the consumer is by the next turn's stream
    again = await phone.request(AiReply(conversation_id=started.conversation_id, text="Still warm inside"))
    on_phone, answer = await streamed(phone, started.conversation_id, again.turn)
    on_tablet, answered_there = await streamed(tablet, started.conversation_id, again.turn)
    assert on_tablet == on_phone and answered_there == answer
    assert "".join(d.text for d in on_tablet) == render(answer.answer)
    final = [await asyncio.to_thread(delivery_received, n.http_port) for n in fleet]
    assert final[1][1] - after[1][1] == len(on_tablet)  # b got each delta on its own channel, for its one user
    assert final[2] == after[2]
    clean(fleet)


async def test_chat_between_members_on_different_nodes_is_ordered_and_gap_free(gateway, fleet, on):
    a, b, c = fleet
    place = spot()
    consumer_token = mint(gateway, "consumer")
    consumer, _ = await on(a, "consumer", consumer_token)
    tech, _ = await on(b, "technician")
    await on_duty_at(tech, place)
    order = (await consumer.request(order_at(place))).order
    await tech.request(OrderAccept(order_id=order.id))
    watcher, _ = await on(c, "consumer", consumer_token)
    start = (await watcher.request(ChatHistory(order_id=order.id))).messages[-1].seq

    async def say(client: Client, who: str) -> None:
        for i in range(15):
            await client.request(ChatSend(order_id=order.id, client_id=f"{who}{i}", text=f"{who} {i}"))

    await asyncio.gather(say(consumer, "c"), say(tech, "t"))
    for member in (consumer, tech, watcher):
        got: list[ChatMessage] = []
        while len(got) < 30:  # (the members were told of the "accepted" system message before)
            got += [e.message for e in await events(member, "chat.message") if e.message.seq > start]
        assert [m.seq for m in got] == list(range(start + 1, start + 31))  # every node: the same order, no gap
        assert [m.text for m in got if m.text.startswith("c")] == [f"c {i}" for i in range(15)]
        assert [m.text for m in got if m.text.startswith("t")] == [f"t {i}" for i in range(15)]
    clean(fleet)


async def test_suspension_notices_and_the_admin_feed_reach_every_node(gateway, fleet, on):
    a, b, c = fleet
    admin, _ = await on(a, "admin")
    watchers = [(await on(n, "admin"))[0] for n in (b, c)]
    for watcher in watchers:
        await watcher.request(Watch())
    techs = [(await on(n, "technician"))[0] for n in fleet]
    group = "role:technician"
    text = fresh("storm warning")
    await admin.request(Notify(group=group, text=text))
    for tech in techs:
        notices = [e for e in await events(tech, "notice", 1) if isinstance(e, Notice)]
        assert notices[0].text == text

    place = spot()
    consumer, consumer_id = await on(a, "consumer")
    order = (await consumer.request(order_at(place))).order
    for watcher in watchers:
        created = [e for e in await events(watcher, "admin.activity") if e.order_id == order.id]
        assert (created[0].kind, created[0].user_id) == ("order.created", consumer_id)

    token = mint(gateway, "consumer")
    sessions = [(await on(n, "consumer", token))[0] for n in fleet]
    done = await admin.request(Suspend(user_id=token[0], reason="chargebacks"))
    assert done.sessions_closed == 1  # node a's; b and c close their own
    for session in sessions:
        await asyncio.wait_for(session.ws.wait_closed(), 10)
        assert (session.ws.close_code, session.ws.close_reason) == (4003, "suspended")
    for watcher in watchers:
        suspended = [e for e in await events(watcher, "admin.activity") if e.kind == "user.suspended"]
        assert suspended[0].user_id == token[0]
    clean(fleet)


@pytest.mark.timeout(240)
async def test_a_node_killed_mid_traffic_loses_no_acknowledged_write_and_its_apps_carry_on(
        fleet, on, servers, key_dir, tmp_path, gateway):
    a, b, _ = fleet
    victim = await node(servers, tmp_path / "victim", shared_kek(key_dir)).start()
    try:
        urls = [victim.url, a.url, b.url]  # every app starts on the victim, then goes round the others
        place, rng = spot(), random.Random(14)
        techs = []
        for _ in range(8):
            user_id, token = mint(gateway, "technician")
            setup, _ = await on(a, "technician", (user_id, token))
            await on_duty_at(setup, place)
            techs.append((user_id, Technician(urls, token, place, rng)))
        rooms = []
        for _ in range(3):
            consumer_id, consumer_token = mint(gateway, "consumer")
            tech_id, tech_token = mint(gateway, "technician")
            consumer, _ = await on(a, "consumer", (consumer_id, consumer_token))
            tech, _ = await on(b, "technician", (tech_id, tech_token))
            await on_duty_at(tech, offset(place, east_mi=90))  # out of the streaming technicians' way
            order = (await consumer.request(order_at(offset(place, east_mi=90)))).order
            await tech.request(OrderAccept(order_id=order.id))
            await tech.request(Duty(on_duty=False))
            rooms.append((order.id, ChatApp(urls, consumer_token, order.id, "consumer"),
                          ChatApp(urls, tech_token, order.id, "technician")))
        apps = [t.app for _, t in techs] + [chat.app for _, *members in rooms for chat in members]
        await asyncio.gather(*(app.start() for app in apps))
        assert {app.url for app in apps} == {victim.url}

        stop = asyncio.Event()
        streams = [asyncio.create_task(t.stream(stop)) for _, t in techs]
        listeners = [asyncio.create_task(chat.listen()) for _, *members in rooms for chat in members]
        talks = [asyncio.create_task(chat.talk(40, 0.05)) for _, *members in rooms for chat in members]
        while sum(len(chat.acknowledged) for _, *members in rooms for chat in members) < 40:
            await asyncio.sleep(0.05)
        victim.kill()  # mid-traffic: sessions, presence and subscriptions die with it
        await asyncio.wait_for(asyncio.gather(*talks), 120)
        while any(t.last_on < 2 for _, t in techs):  # the technicians stream on their new nodes too
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.gather(*streams)

        assert all(app.connections == 2 and app.url in (a.url, b.url) for app in apps)
        for order_id, *members in rooms:
            assert all(len(chat.acknowledged) == 40 for chat in members)
            check_room(await whole_history(a.url, members[0].token, order_id), members)

        for user_id, t in techs:
            stored = await geo.position(gateway.services.redis, user_id)
            assert stored is not None and t.last is not None
            assert stored == pytest.approx((t.last[1], t.last[0]), abs=1e-4)  # the last acknowledged one
        consumer, _ = await on(b, "consumer")
        order = (await consumer.request(order_at(place))).order
        await all_hear([t for _, t in techs], order.id)  # back on duty where they were, on their new nodes
        for task in listeners:
            task.cancel()
        for app in apps:
            await app.close()
        clean([victim, *fleet])
    finally:
        if victim.process is not None and victim.process.returncode is None:
            victim.kill()
            await victim.process.wait()


@pytest.fixture
def outside_pytest_tmp() -> Iterator[Path]:
    """A scratch folder outside /tmp/pytest-of-USER: as root, pgserver runs PostgreSQL as the user
    `pgserver`, and every pytest start (another run on the box) makes that folder 0700 again."""
    path = Path(tempfile.mkdtemp(prefix="nodes-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.timeout(240)
async def test_the_embedded_default_serves_a_second_node_over_tcp_behind_passwords(gateway, outside_pytest_tmp):
    tmp_path = outside_pytest_tmp
    pg_port, redis_port = free_port(), free_port()
    env = {"DATABASE_URL": "", "REDIS_URL": "", "GATEWAY_SECRET": SECRET, "LOG_LEVEL": "INFO", "KEY_DIR": "",
           "KEK": ""}
    first = GatewayProcess("--data-dir", str(tmp_path / "a"), "--embedded-listen", "127.0.0.1",
                           "--embedded-postgres-port", str(pg_port), "--embedded-redis-port", str(redis_port), env=env)
    await first.start(timeout=120)
    second = None
    try:
        [line] = [line for line in first.log.splitlines() if "other nodes join with" in line]
        urls = dict(word.split("=", 1) for word in line.split() if word.startswith(("DATABASE_URL=", "REDIS_URL=")))
        db_password = (tmp_path / "a" / "postgres.password").read_text()
        redis_password = (tmp_path / "a" / "redis.password").read_text()
        assert urls == {"DATABASE_URL": f"postgresql://postgres:{db_password}@127.0.0.1:{pg_port}/postgres",
                        "REDIS_URL": f"redis://:{redis_password}@127.0.0.1:{redis_port}/0"}
        with pytest.raises(asyncpg.InvalidPasswordError):  # TCP only with the password
            await asyncpg.connect(f"postgresql://postgres:wrong@127.0.0.1:{pg_port}/postgres")
        stranger = aioredis.Redis(port=redis_port)
        with pytest.raises(aioredis.AuthenticationError):
            await stranger.ping()
        await stranger.aclose()

        # Node b: its own data folder, a's servers, the same secret and a copy of a's key folder.
        keys = tmp_path / "b-keys"
        keys.mkdir(mode=0o700)
        for pem in (tmp_path / "a-keys").glob("kek-*.pem"):
            (keys / pem.name).write_bytes(pem.read_bytes())
        second = await GatewayProcess("--data-dir", str(tmp_path / "b"), env={
            **env, "LOG_LEVEL": "WARNING", "KEY_DIR": str(keys), **urls}).start()
        async with await Client.connect(first.url) as consumer, await Client.connect(second.url) as tech:
            await consumer.request(Auth(token=mint(gateway, "consumer")[1]))  # (the tests' gateway: the same secret)
            await tech.request(Auth(token=mint(gateway, "technician")[1]))
            place = spot()
            await on_duty_at(tech, place)
            order = (await consumer.request(order_at(place, address="9 Cedar Court"))).order
            assert [e.order.id for e in await events(tech, "order.available")] == [order.id]
            accepted = (await tech.request(OrderAccept(order_id=order.id))).order
            assert accepted.address == "9 Cedar Court"  # sealed by a, opened by b
            assert (await events(consumer, "order.status"))[0].order.state == "accepted"
        assert await second.terminate() == 0
        clean([second])
    finally:
        if second is not None and second.process is not None and second.process.returncode is None:
            second.kill()
        assert await first.terminate() == 0
    assert "Traceback" not in first.log


async def test_a_node_dead_for_ten_presence_ttls_is_forgotten_by_the_living(gateway):
    redis, stamp = gateway.services.redis, fresh("node")
    now = time.time()
    await redis.zadd(push.NODES, {f"{stamp}-long-dead": now - 100, f"{stamp}-just-dead": now - 20})
    for name in ("long-dead", "just-dead"):
        await redis.sadd(push.node_key(f"{stamp}-{name}"), "a-user")
    living = push.Presence(redis, f"{stamp}-living", ttl_s=5)  # forgets nodes silent for 50 s
    await living.start()  # (it beats at once)
    await living.stop()
    assert await redis.zscore(push.NODES, f"{stamp}-long-dead") is None
    assert not await redis.exists(push.node_key(f"{stamp}-long-dead"))
    assert await redis.exists(push.node_key(f"{stamp}-just-dead"))  # its users already count offline
    await redis.zrem(push.NODES, f"{stamp}-just-dead")
    await redis.delete(push.node_key(f"{stamp}-just-dead"))


async def test_the_load_generator_spreads_over_nodes_and_moves_off_a_dead_one(fleet, servers, key_dir, tmp_path):
    a = fleet[0]
    victim = await node(servers, tmp_path / "victim", shared_kek(key_dir)).start()
    run, summary = fresh("loadnodes"), tmp_path / "summary.json"
    load = asyncio.create_task(run_command(
        "load", "--url", f"{victim.url},{a.url}", "--secret", SECRET, "--id-prefix", run, "--technicians", "20",
        "--interval", "0.2", "--duration", "12", "--quiet", "--json", str(summary), "--data-dir", str(tmp_path)))
    redis = connect_redis(servers[1])
    try:
        technicians = [f"{run}-tech-{i}" for i in range(20)]
        while any(score is None for score in await redis.zmscore(geo.SEEN, technicians)):
            await asyncio.sleep(0.1)  # every technician streams, half of them through the victim
        killed_at = time.time()
        victim.kill()
        while any(score is None or score < killed_at for score in await redis.zmscore(geo.SEEN, technicians)):
            assert not load.done(), load.result()[1]
            await asyncio.sleep(0.1)  # until every one of them has streamed since the kill, on node a
        status, out = await load
        assert status == 0, out
        report = json.loads(summary.read_text())
        assert report["sessions"]["connected"] == 20
        assert set(report["connection_failures"]) == {"closed without a close frame"}  # the victim's ten
        assert report["errors"] == {}
    finally:
        await redis.aclose()
        if not load.done():
            load.cancel()
        if victim.process is not None and victim.process.returncode is None:
            victim.kill()
            await victim.process.wait()
