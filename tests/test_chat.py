"""Order chat rooms over real sessions: membership, idempotent sends, gap-free sequences, history,
sync after reconnects and a killed gateway, read receipts, typing, localized system messages."""

import asyncio
import signal
import uuid

import pytest

from protocol.auth import Auth, Register
from protocol.chat import ChatHistory, ChatRead, ChatRooms, ChatSend, ChatSync, ChatTyping
from protocol.client import Client, ErrorReply
from protocol.orders import OrderAccept, OrderDepart, OrderRelease
from tests.conftest import SECRET, mint
from tests.processes import GatewayProcess
from tests.world import events, order_at, quiet, spot, technician


async def assigned_order(signed_in, consumer=None):
    """(consumer, technician, order id, technician id) for an accepted order."""
    place = spot()
    if consumer is None:
        consumer, _ = await signed_in("consumer")
    tech, tech_id = await technician(signed_in, place)
    order = (await consumer.request(order_at(place))).order
    await tech.request(OrderAccept(order_id=order.id))
    return consumer, tech, order.id, tech_id


def texts(messages) -> list[str]:
    return [m.text for m in messages if m.kind == "text"]


async def test_members_talk_and_a_retry_stores_nothing_new(gateway, signed_in):
    consumer, tech, order_id, _ = await assigned_order(signed_in)
    first = await consumer.request(ChatSend(order_id=order_id, client_id="m-1", text="Is 3pm ok?"))
    assert first.duplicate is False and first.message.seq >= 1
    [seen] = [e for e in await events(tech, "chat.message", 2) if e.message.kind == "text"]
    assert (seen.message.seq, seen.message.text, seen.message.sender_role) == (first.message.seq, "Is 3pm ok?",
                                                                                "consumer")
    again = await consumer.request(ChatSend(order_id=order_id, client_id="m-1", text="Is 3pm ok?"))
    assert again.duplicate is True and again.message.seq == first.message.seq
    assert await quiet(tech, "chat.message", 0.3)
    count = await gateway.services.db.fetchval(
        "SELECT count(*) FROM chat_messages WHERE order_id = $1::uuid AND kind = 'text'", order_id)
    assert count == 1


async def test_the_room_is_found_by_any_spelling_of_its_order_id(gateway, signed_in):
    consumer, tech, order_id, _ = await assigned_order(signed_in)
    spellings = [order_id.upper(), order_id.replace("-", ""), "{" + order_id + "}", "urn:uuid:" + order_id]
    for i, spelling in enumerate(spellings):
        reply = await consumer.request(ChatSend(order_id=spelling, client_id=f"s-{i}", text=f"spelling {i}"))
        assert reply.message.order_id == order_id and reply.message.text == f"spelling {i}"
    assert texts((await tech.request(ChatHistory(order_id=order_id))).messages) == [
        f"spelling {i}" for i in range(len(spellings))]
    with pytest.raises(ErrorReply) as caught:
        await consumer.request(ChatSend(order_id=order_id[:-1] + "g", client_id="bad", text="no"))
    assert caught.value.code == "not_found"


async def test_concurrent_senders_get_a_gap_free_sequence(gateway, signed_in):
    consumer, tech, order_id, _ = await assigned_order(signed_in)
    sends = [client.request(ChatSend(order_id=order_id, client_id=f"{who}-{i}", text=f"{who} {i}"))
             for i in range(40) for who, client in (("c", consumer), ("t", tech))]
    retries = [consumer.request(ChatSend(order_id=order_id, client_id="same", text="once")) for _ in range(8)]
    replies = await asyncio.gather(*sends, *retries)
    assert len({r.message.seq for r in replies[-8:]}) == 1  # eight racing retries: one message
    page = await consumer.request(ChatHistory(order_id=order_id, limit=200))
    seqs = [m.seq for m in page.messages]
    assert seqs == list(range(1, len(seqs) + 1))  # gap-free from 1, strictly increasing
    assert len(texts(page.messages)) == 81
    # members online got every message, in sequence order
    received = [e.message.seq for e in await events(tech, "chat.message", len(seqs) - 1, timeout=10)]
    assert received == sorted(received) and len(set(received)) == len(received)


async def test_who_may_use_a_room(gateway, signed_in):
    consumer, tech, order_id, _ = await assigned_order(signed_in)
    stranger, _ = await signed_in("consumer")
    other_tech, _ = await signed_in("technician")
    admin, _ = await signed_in("admin")
    for client in (stranger, other_tech):
        for request in (ChatSend(order_id=order_id, client_id="x", text="hi"), ChatHistory(order_id=order_id)):
            with pytest.raises(ErrorReply) as caught:
                await client.request(request)
            assert caught.value.code == "not_found"
    with pytest.raises(ErrorReply) as missing:  # a room that does not exist: the same answer
        await stranger.request(ChatHistory(order_id=str(uuid.uuid4())))
    assert missing.value.error.message == caught.value.error.message
    await consumer.request(ChatSend(order_id=order_id, client_id="a", text="hello"))
    assert texts((await admin.request(ChatHistory(order_id=order_id))).messages) == ["hello"]  # moderation
    with pytest.raises(ErrorReply) as caught:
        await admin.request(ChatSend(order_id=order_id, client_id="x", text="hi"))
    assert caught.value.code == "forbidden"
    # a technician who gives the order back loses the room from then on
    await tech.request(OrderRelease(order_id=order_id))
    for request in (ChatHistory(order_id=order_id), ChatSend(order_id=order_id, client_id="y", text="still here?")):
        with pytest.raises(ErrorReply) as caught:
            await tech.request(request)
        assert caught.value.code == "not_found"
    # a stranger's message written in the same batch as a member's is refused alone
    sent = await asyncio.gather(stranger.request(ChatSend(order_id=order_id, client_id="s", text="let me in")),
                                consumer.request(ChatSend(order_id=order_id, client_id="b", text="anyone?")),
                                return_exceptions=True)
    assert isinstance(sent[0], ErrorReply) and sent[0].code == "not_found"
    assert texts((await consumer.request(ChatHistory(order_id=order_id))).messages)[-1:] == ["anyone?"]
    assert "let me in" not in texts((await admin.request(ChatHistory(order_id=order_id))).messages)


async def test_system_messages_speak_each_readers_language(gateway, connect, signed_in):
    client = await connect()
    account = await client.request(Register(email=f"c-{uuid.uuid4().hex[:8]}@example.com", password="password1",
                                            role="consumer", name="Ana", locale="es-MX"))
    await client.request(Auth(token=account.token))
    consumer, tech, order_id, _ = await assigned_order(signed_in, consumer=client)
    await tech.request(OrderDepart(order_id=order_id))
    mine = [e.message for e in await events(consumer, "chat.message", 2)]
    theirs = [e.message for e in await events(tech, "chat.message", 2)]
    assert [m.text for m in mine] == ["Un técnico aceptó el pedido.", "El técnico está en camino."]
    assert [m.text for m in theirs] == ["A technician accepted the order.", "The technician is on the way."]
    assert all(m.kind == "system" and m.sender_role == "system" for m in mine + theirs)
    history = await consumer.request(ChatHistory(order_id=order_id))  # rendered for the reader, also later
    assert [m.text for m in history.messages] == [m.text for m in mine]


async def test_history_pages_back_and_forward(gateway, signed_in):
    consumer, _, order_id, _ = await assigned_order(signed_in)
    for i in range(7):
        await consumer.request(ChatSend(order_id=order_id, client_id=str(i), text=f"m{i}"))
    newest = await consumer.request(ChatHistory(order_id=order_id, limit=3))
    assert texts(newest.messages) == ["m4", "m5", "m6"] and newest.has_more
    older = await consumer.request(ChatHistory(order_id=order_id, limit=3, before_seq=newest.messages[0].seq))
    assert texts(older.messages) == ["m1", "m2", "m3"]
    forward = await consumer.request(ChatHistory(order_id=order_id, limit=3, after_seq=older.messages[-1].seq))
    assert texts(forward.messages) == ["m4", "m5", "m6"] and not forward.has_more


async def test_sync_after_a_reconnect_returns_exactly_what_was_missed(gateway, signed_in):
    consumer, tech, order_id, tech_id = await assigned_order(signed_in)
    await consumer.request(ChatSend(order_id=order_id, client_id="1", text="before"))
    seen = (await tech.request(ChatHistory(order_id=order_id))).messages[-1].seq
    await tech.close()  # the technician's phone goes through a tunnel
    for i in range(3):
        await consumer.request(ChatSend(order_id=order_id, client_id=f"away-{i}", text=f"away {i}"))
    back, _ = await signed_in("technician", user_id=tech_id)
    synced = await back.request(ChatSync(positions={order_id: seen}))
    [room] = [r for r in synced.rooms if r.order_id == order_id]
    assert texts(room.messages) == ["away 0", "away 1", "away 2"] and not room.has_more
    assert [m.seq for m in room.messages] == [seen + 1, seen + 2, seen + 3]
    limited = await back.request(ChatSync(positions={order_id: seen}, limit=2))
    assert len(limited.rooms[0].messages) == 2 and limited.rooms[0].has_more
    nothing_new = await back.request(ChatSync(positions={order_id: seen + 3}))
    assert order_id not in [r.order_id for r in nothing_new.rooms]


async def test_acknowledged_messages_survive_a_killed_gateway(gateway, signed_in, servers, tmp_path):
    args = ("--database-url", servers[0], "--redis-url", servers[1], "--secret", SECRET, "--data-dir", str(tmp_path))
    _, _, order_id, tech_id = await assigned_order(signed_in)
    served = await GatewayProcess(*args).start()
    token = mint(gateway, "technician", tech_id)[1]
    acked = []
    async with await Client.connect(served.url) as phone:
        await phone.request(Auth(token=token))
        for i in range(20):
            acked.append((await phone.request(ChatSend(order_id=order_id, client_id=f"k{i}", text=f"k{i}"))).message)
        assert served.process is not None
        served.process.send_signal(signal.SIGKILL)
        await served.process.wait()
    restarted = await GatewayProcess(*args, port=served.port).start()
    try:
        async with await Client.connect(restarted.url) as phone:
            await phone.request(Auth(token=token))
            synced = await phone.request(ChatSync(positions={order_id: acked[0].seq - 1}))
            got = [m for r in synced.rooms if r.order_id == order_id for m in r.messages]
            assert [(m.seq, m.text) for m in got] == [(m.seq, m.text) for m in acked]
    finally:
        await restarted.terminate()


async def test_read_receipts_and_unread_counts(gateway, signed_in):
    consumer, tech, order_id, tech_id = await assigned_order(signed_in)
    for i in range(3):
        await consumer.request(ChatSend(order_id=order_id, client_id=str(i), text=f"q{i}"))
    [room] = [r for r in (await tech.request(ChatRooms())).rooms if r.order_id == order_id]
    assert (room.unread, room.last_message.text) == (3, "q2")  # the system message is the tech's own
    last = room.last_message.seq
    await tech.request(ChatRead(order_id=order_id, seq=last))
    receipt = (await events(consumer, "chat.read"))[0]
    assert (receipt.order_id, receipt.user_id, receipt.seq) == (order_id, tech_id, last)
    [room] = [r for r in (await tech.request(ChatRooms())).rooms if r.order_id == order_id]
    assert (room.unread, room.read_seq) == (0, last)
    await tech.request(ChatRead(order_id=order_id, seq=1))  # never moves back
    await tech.request(ChatRead(order_id=order_id, seq=10_000))  # nor past the end
    [room] = [r for r in (await tech.request(ChatRooms())).rooms if r.order_id == order_id]
    assert room.read_seq == last


async def test_typing_is_relayed_and_throttled(gateway, signed_in):
    consumer, tech, order_id, tech_id = await assigned_order(signed_in)
    await tech.send(ChatTyping(order_id=order_id))
    await tech.send(ChatTyping(order_id=order_id))
    typing = await events(consumer, "chat.typing")
    assert (typing[0].order_id, typing[0].user_id) == (order_id, tech_id)
    assert await quiet(consumer, "chat.typing", 0.4)
    assert await gateway.services.db.fetchval(
        "SELECT count(*) FROM chat_messages WHERE order_id = $1::uuid AND kind = 'text'", order_id) == 0


async def test_a_member_on_another_gateway_process_gets_messages(gateway, signed_in, servers, tmp_path):
    args = ("--database-url", servers[0], "--redis-url", servers[1], "--secret", SECRET, "--data-dir", str(tmp_path))
    consumer, _, order_id, tech_id = await assigned_order(signed_in)
    async with GatewayProcess(*args) as other, await Client.connect(other.url) as phone:
        await phone.request(Auth(token=mint(gateway, "technician", tech_id)[1]))
        sent = await consumer.request(ChatSend(order_id=order_id, client_id="x", text="see you soon"))
        [event] = await events(phone, "chat.message")
        assert (event.message.seq, event.message.text) == (sent.message.seq, "see you soon")


async def test_bad_chat_frames(gateway, signed_in):
    consumer, _, order_id, _ = await assigned_order(signed_in)
    for frame in ({"order_id": order_id, "client_id": "e"}, {"order_id": order_id, "client_id": "e", "text": "  "},
                  {"order_id": order_id, "client_id": "", "text": "x"},
                  {"order_id": order_id, "client_id": "e", "text": "x" * 4001},
                  {"order_id": order_id, "client_id": "e", "attachments": [str(uuid.uuid4())]}):
        reply, _ = await consumer.call("chat.send", frame)
        assert reply["code"] == "bad_request", frame
    reply, _ = await consumer.call("chat.history", {"order_id": order_id, "before_seq": 3, "after_seq": 1})
    assert reply["code"] == "bad_request"


async def test_one_batch_with_repeats_and_two_rooms_stays_gap_free(gateway, signed_in):
    from storage.chat import Draft, body, send_many

    _, _, first, tech_id = await assigned_order(signed_in)
    _, _, second, _ = await assigned_order(signed_in)
    a, b = uuid.UUID(first), uuid.UUID(second)
    drafts = [Draft(a, tech_id, "technician", "x", "text", "one"), Draft(b, tech_id, "technician", "y", "text", "b1"),
              Draft(a, tech_id, "technician", "x", "text", "one again"),  # a retry inside the same batch
              Draft(a, tech_id, "technician", None, "text", "two"), Draft(b, tech_id, "technician", "z", "text", "b2")]
    async with gateway.services.db.acquire() as conn, conn.transaction():
        results = await send_many(conn, gateway.services.cipher, drafts)
    cipher = gateway.services.cipher
    assert [(await body(cipher, r), duplicate) for r, duplicate in results] == [
        ("one", False), ("b1", False), ("one", True), ("two", False), ("b2", False)]
    async with gateway.services.db.acquire() as conn, conn.transaction():
        again = await send_many(conn, cipher, [drafts[0], Draft(a, tech_id, "technician", "w", "text", "three")])
    assert [(await body(cipher, r), duplicate) for r, duplicate in again] == [("one", True), ("three", False)]
    for room_id in (a, b):
        seqs = [r["seq"] for r in await gateway.services.db.fetch(
            "SELECT seq FROM chat_messages WHERE order_id = $1 ORDER BY seq", room_id)]
        assert seqs == list(range(1, len(seqs) + 1))


async def test_a_sync_meanwhile_a_rooms_very_first_message_is_stored_waits_for_it(gateway, signed_in):
    """A batch delivers its messages before it commits; a session reading its rooms meanwhile gets the
    message from the read once the batch commits, the room's very first message too."""
    from storage.chat import Draft, send_many

    consumer, consumer_id = await signed_in("consumer")
    order = (await consumer.request(order_at(spot()))).order
    first = Draft(uuid.UUID(order.id), consumer_id, "consumer", "first", "text", "the very first")
    async with gateway.services.db.acquire() as conn:
        batch = conn.transaction()
        await batch.start()
        await send_many(conn, gateway.services.cipher, [first])
        syncing = asyncio.create_task(consumer.request(ChatSync(positions={})))
        await asyncio.sleep(0.5)
        assert not syncing.done()  # the read waits for the batch to end
        await batch.commit()
    synced = await syncing
    [room] = [r for r in synced.rooms if r.order_id == order.id]
    assert texts(room.messages) == ["the very first"]
