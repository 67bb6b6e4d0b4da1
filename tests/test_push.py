"""Push to offline devices: the outbox written with the message, the real FCM client against a
local FCM v1 server (failures, recovery, unregistered tokens, dead letters), no duplicates."""

import asyncio
import uuid

import pytest

from handlers.chat import push as push_worker
from protocol.auth import Auth, Register
from protocol.chat import ChatSend
from protocol.orders import OrderAccept, OrderDepart
from protocol.push import PushRegister, PushUnregister
from storage import push
from tests.fake_fcm import FakeFcm, error
from tests.world import events, order_at, spot, technician


@pytest.fixture
def fcm():
    with FakeFcm() as server:
        yield server


@pytest.fixture
async def pushing(make_gateway, fcm, tmp_path):
    async with make_gateway(fcm_credentials=str(fcm.credentials(tmp_path)), fcm_endpoint=fcm.url,
                            push_retry_base_s=0.05, push_poll_s=0.05, push_max_attempts=3) as gw:
        yield gw


async def offline_consumer_with_order(gw, connect, signed_in, locale="en-US"):
    """A registered consumer with a device, an order accepted by an online technician, then the
    consumer's app goes away. Returns (technician client, order id, consumer id, device token)."""
    client = await connect(gw)
    account = await client.request(Register(email=f"p-{uuid.uuid4().hex[:8]}@example.com", password="password1",
                                            role="consumer", name="Pat", locale=locale))
    await client.request(Auth(token=account.token))
    device = f"device-{uuid.uuid4().hex}"
    await client.request(PushRegister(token=device, platform="android"))
    place = spot()
    tech, _ = await technician(signed_in, place, connect={"gw": gw})
    order = (await client.request(order_at(place))).order
    await tech.request(OrderAccept(order_id=order.id))
    await events(client, "chat.message")  # the room's "accepted" notice reached the app while it was online
    await client.close()
    async with asyncio.timeout(5):
        while await push.online(gw.services.redis, [account.user_id]):
            await asyncio.sleep(0.02)
    return tech, order.id, account.user_id, device


async def outbox(gw, user_id):
    return await gw.services.db.fetch("SELECT * FROM push_outbox WHERE user_id = $1 ORDER BY id", user_id)


async def settled(gw, user_id, count=1, kind=""):
    """The user's pushes whose key starts with `kind` ("chat:", "status:"), once `count` of them
    exist and none is pending any more."""
    async with asyncio.timeout(10):
        while True:
            rows = [r for r in await outbox(gw, user_id) if r["dedupe_key"].startswith(kind)]
            if len(rows) >= count and all(r["state"] != "pending" for r in rows):
                return rows
            await asyncio.sleep(0.05)


async def test_an_offline_member_gets_one_push_per_message(pushing, fcm, connect, signed_in):
    tech, order_id, consumer_id, device = await offline_consumer_with_order(pushing, connect, signed_in)
    long = "The replacement part arrived. " * 10
    for _ in range(3):  # the technician's app retries: still one message, one push
        await tech.request(ChatSend(order_id=order_id, client_id="c-1", text=long))
    [job] = await settled(pushing, consumer_id, kind="chat:")
    assert job["state"] == "sent" and job["attempts"] == 1
    [sent] = [m for m in fcm.delivered if m["data"].get("type") == "chat.message"]
    assert sent["token"] == device and sent["notification"]["title"] == "New message"
    body = sent["notification"]["body"]
    assert len(body) == 100 and body.endswith("…") and body.startswith("The replacement part arrived.")
    assert sent["data"] == {"type": "chat.message", "order_id": order_id, "seq": sent["data"]["seq"]}


async def test_online_members_get_no_push(pushing, fcm, signed_in):
    place = spot()
    consumer, consumer_id = await signed_in("consumer", gw=pushing)
    await consumer.request(PushRegister(token=f"device-{uuid.uuid4().hex}"))
    tech, _ = await technician(signed_in, place, connect={"gw": pushing})
    order = (await consumer.request(order_at(place))).order
    await tech.request(OrderAccept(order_id=order.id))
    await tech.request(ChatSend(order_id=order.id, client_id="x", text="on my way"))
    await asyncio.sleep(0.3)
    assert await outbox(pushing, consumer_id) == []


async def test_status_changes_push_in_the_recipients_language(pushing, fcm, connect, signed_in):
    tech, order_id, consumer_id, _ = await offline_consumer_with_order(pushing, connect, signed_in, locale="es")
    await tech.request(OrderDepart(order_id=order_id))
    rows = await settled(pushing, consumer_id, kind="status:")
    assert [await push.texts(pushing.services.cipher, r) for r in rows] == [
        ("Novedades de tu pedido", "El técnico está en camino.")]
    assert rows[0]["state"] == "sent" and rows[0]["title"] is None and rows[0]["body"] is None


async def test_a_failing_endpoint_is_retried_until_it_recovers(pushing, fcm, connect, signed_in):
    tech, order_id, consumer_id, device = await offline_consumer_with_order(pushing, connect, signed_in)
    fcm.scripts[device] = [error(503, "UNAVAILABLE"), error(500, "INTERNAL")]
    await tech.request(ChatSend(order_id=order_id, client_id="r", text="ring the bell?"))
    [job] = await settled(pushing, consumer_id, kind="chat:")
    assert (job["state"], job["attempts"]) == ("sent", 3) and fcm.attempts[device] == 3
    assert len(fcm.delivered) == 1  # delivered once, after two failures


async def test_it_gives_up_into_the_dead_letter(pushing, fcm, connect, signed_in):
    tech, order_id, consumer_id, device = await offline_consumer_with_order(pushing, connect, signed_in)
    fcm.scripts[device] = [error(503, "UNAVAILABLE")] * 10
    dead, retried = push_worker.DEAD._value.get(), push_worker.SENDS.labels("retry")._value.get()
    await tech.request(ChatSend(order_id=order_id, client_id="d", text="hello?"))
    [job] = await settled(pushing, consumer_id, kind="chat:")
    assert (job["state"], job["attempts"]) == ("dead", 3) and "503" in job["last_error"]
    # what /metrics shows an operator: the dead letter, and the attempts FCM refused
    assert push_worker.DEAD._value.get() - dead >= 1
    assert push_worker.SENDS.labels("retry")._value.get() - retried >= 3


async def test_unregistered_tokens_are_removed(pushing, fcm, connect, signed_in):
    tech, order_id, consumer_id, device = await offline_consumer_with_order(pushing, connect, signed_in)
    fcm.scripts[device] = [error(404, "NOT_FOUND", "UNREGISTERED")]
    await tech.request(ChatSend(order_id=order_id, client_id="u", text="hello"))
    [job] = await settled(pushing, consumer_id, kind="chat:")
    assert job["state"] == "dead" and "UNREGISTERED" in job["last_error"]
    assert await push.tokens(pushing.services.db, consumer_id) == []


async def test_register_and_unregister_devices(gateway, signed_in):
    client, user_id = await signed_in("technician")
    await client.request(PushRegister(token="device-aaaaaaaaaaaaaaaa", platform="ios"))
    await client.request(PushRegister(token="device-bbbbbbbbbbbbbbbb"))
    assert await push.tokens(gateway.services.db, user_id) == ["device-aaaaaaaaaaaaaaaa", "device-bbbbbbbbbbbbbbbb"]
    await client.request(PushUnregister(token="device-aaaaaaaaaaaaaaaa"))
    assert await push.tokens(gateway.services.db, user_id) == ["device-bbbbbbbbbbbbbbbb"]
    reply, _ = await client.call("push.register", {"token": "short"})
    assert reply["code"] == "bad_request"


async def test_without_credentials_pushes_are_logged_not_sent(make_gateway, connect, signed_in, caplog):
    async with make_gateway(push_log_after_s=0.5, push_poll_s=0.05) as gateway:
        tech, order_id, consumer_id, _ = await offline_consumer_with_order(gateway, connect, signed_in)
        with caplog.at_level("INFO", logger="handlers.chat.push"):
            await tech.request(ChatSend(order_id=order_id, client_id="l", text="the gate code is 4711"))
            [job] = await settled(gateway, consumer_id, kind="chat:")
    logged = [r.getMessage() for r in caplog.records]
    assert job["state"] == "sent" and any("logged only" in m for m in logged)
    assert not any("4711" in m for m in logged)  # the push is logged, its text never


async def test_presence_follows_sessions_even_when_hundreds_close_at_once(gateway, signed_in):
    sessions = [await signed_in("technician") for _ in range(300)]
    users = [user_id for _, user_id in sessions]
    async with asyncio.timeout(5):
        while len(await push.online(gateway.services.redis, users)) < len(users):
            await asyncio.sleep(0.05)
    await asyncio.gather(*(client.close() for client, _ in sessions))
    async with asyncio.timeout(5):
        while await push.online(gateway.services.redis, users):
            await asyncio.sleep(0.05)


async def test_the_directory_names_every_node_of_a_user_and_forgets_a_node_that_stops(gateway):
    redis, stamp = gateway.services.redis, uuid.uuid4().hex[:8]
    a, b = push.Presence(redis, f"{stamp}-a"), push.Presence(redis, f"{stamp}-b")
    await a.start()
    await b.start()
    phone, tablet = f"{stamp}-phone-user", f"{stamp}-tablet-user"
    try:
        for node in (a, b):  # both users on both nodes; node a hears one of them twice
            node.set(phone, True)
            node.set(tablet, True)
            await node.settled()
        a.set(phone, True)
        await a.settled()
        assert await push.locate(redis, a.node, [phone, tablet, "nobody"]) == {phone: [b.node], tablet: [b.node]}
        a.set(phone, False)  # the phone's session on a ends
        await a.settled()
        assert await push.locate(redis, b.node, [phone, tablet]) == {tablet: [a.node]}
        await b.stop()
        assert await push.locate(redis, a.node, [phone, tablet]) == {}
        assert await redis.hget(push.DIRECTORY, tablet) == a.node.encode()
    finally:
        await a.stop()
        await b.stop()
    assert await redis.hmget(push.DIRECTORY, [phone, tablet]) == [None, None]


async def test_many_changes_at_once_are_written_in_chunks_and_all_land(gateway):
    redis, stamp = gateway.services.redis, uuid.uuid4().hex[:8]
    a, b = push.Presence(redis, f"{stamp}-a", chunk=3), push.Presence(redis, f"{stamp}-b", chunk=3)
    await a.start()
    await b.start()
    users = [f"{stamp}-user-{i}" for i in range(10)]
    try:
        b.set(users[0], True)
        await b.settled()
        for user in users:  # ten sign-ins in one flush: four scripts of three users or fewer
            a.set(user, True)
        await a.settled()
        assert await redis.scard(push.node_key(a.node)) == 10
        assert await push.locate(redis, b.node, users) == {user: [a.node] for user in users}
        for user in users[:4]:
            a.set(user, False)
        a.set(users[9], False)
        a.set(users[9], True)  # left and came back within the flush: still there
        await a.settled()
        assert await push.locate(redis, b.node, users) == {user: [a.node] for user in users[4:]}
        await a.stop()  # its six users leave the directory three at a time
        assert not await redis.exists(push.node_key(a.node))
        assert await redis.hmget(push.DIRECTORY, users) == [b.node.encode()] + [None] * 9
    finally:
        await a.stop()
        await b.stop()


async def test_users_of_a_process_that_stopped_beating_count_as_offline(gateway):
    redis = gateway.services.redis
    await redis.zadd(push.NODES, {"dead-node": 1.0})  # its last heartbeat: 1970
    await redis.sadd(push.node_key("dead-node"), "ghost-user")
    assert await push.online(redis, ["ghost-user"]) == set()


async def test_an_order_placed_by_a_merchant_is_pushed_to_its_offline_consumer(pushing, fcm, connect, signed_in):
    client = await connect(pushing)
    account = await client.request(Register(email=f"m-{uuid.uuid4().hex[:8]}@example.com", password="password1",
                                            role="consumer", name="Kim", locale="es"))
    await client.request(Auth(token=account.token))
    await client.request(PushRegister(token=f"device-{uuid.uuid4().hex}"))
    await client.close()
    async with asyncio.timeout(5):
        while await push.online(pushing.services.redis, [account.user_id]):
            await asyncio.sleep(0.02)
    merchant, merchant_id = await signed_in("merchant", gw=pushing)
    await pushing.services.db.execute("INSERT INTO merchant_brands VALUES ($1, 'bosch')", merchant_id)
    await merchant.request(order_at(spot(), brand="bosch", sku="SHPM88Z75N", service_type="installation",
                                    consumer_id=account.user_id))
    [job] = await settled(pushing, account.user_id, kind="status:")
    assert await push.texts(pushing.services.cipher, job) == ("Novedades de tu pedido",
                                                              "Se ha creado un nuevo pedido para ti.")
    assert job["state"] == "sent"
