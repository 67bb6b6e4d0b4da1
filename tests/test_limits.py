"""Session limits: rate, frame size, slow readers, authentication deadline, idleness, expiry."""

import asyncio
from datetime import timedelta

import msgspec
import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from gateway.delivery import user_channel
from protocol.admin import Notice
from protocol.auth import Auth, Ping
from protocol.client import Backoff, Client, ErrorReply, Reconnecting
from tests.conftest import mint, ws_url


async def closed_with(ws, timeout: float = 10.0) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as caught:
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    assert caught.value.rcvd is not None
    return caught.value.rcvd.code, caught.value.rcvd.reason


async def test_rate_limit_answers_rate_limited_with_retry_after(make_gateway, connect):
    async with make_gateway(rate_per_s=5, rate_burst=5) as gw:
        client = await connect(gw)
        replies = [(await client.call("ping", {}))[0] for _ in range(8)]
        codes = [r.get("code") for r in replies]
        assert codes[:5] == [None] * 5
        limited = [r for r in replies if r.get("code") == "rate_limited"]
        assert limited and 0 < limited[0]["details"]["retry_after"] <= 0.2
        await asyncio.sleep(0.25)
        assert (await client.call("ping", {}))[0]["type"] == "result"


async def test_oversized_frame_gets_too_large_and_the_session_lives_on(gateway, connect):
    client = await connect()
    limit = gateway.config.max_frame_bytes
    reply, _ = await client.call("ping", {"padding": "x" * (limit + 10)})
    assert reply["code"] == "too_large" and str(limit) in reply["message"]
    assert (await client.call("ping", {}))[0]["type"] == "result"


async def test_the_size_limit_counts_bytes_not_characters(gateway, connect):
    client = await connect()
    limit = gateway.config.max_frame_bytes
    reply, _ = await client.call("ping", {"padding": "修" * (limit // 2)})  # 3 bytes each in UTF-8
    assert reply["code"] == "too_large"


async def test_a_frame_over_four_times_the_limit_closes_with_1009(gateway, connect):
    limit = gateway.config.max_frame_bytes
    client = await connect()
    reply, _ = await client.call("ping", {"padding": "x" * (4 * limit - 100)})  # just under: an answer
    assert reply["code"] == "too_large"
    async with ws_connect(ws_url(gateway), compression=None, max_size=None) as ws:
        await ws.send("x" * (4 * limit + 1))
        code, _ = await closed_with(ws)
        assert code == 1009


async def flood(gw, user_id: str, frames: int = 2000) -> None:
    """Events for `user_id`, ~4 KB each, until the gateway gives up on the session."""
    notice = Notice(text="x" * 4000, sender="test")
    for _ in range(frames):  # ~8 MB: more than the socket buffers hold
        gw.hub.deliver_local(user_channel(user_id), notice)
        await asyncio.sleep(0)
        if gw.metrics.slow_consumers._value.get():
            break


async def test_a_client_that_stops_reading_then_resumes_sees_close_1008(make_gateway):
    async with make_gateway(outbox_limit=20) as gw:
        user_id, token = mint(gw, "consumer")
        # max_queue=1: the client library stops reading the socket once one frame waits unread.
        async with ws_connect(ws_url(gw), compression=None, max_queue=1) as ws:
            await ws.send(msgspec.json.encode({"type": "auth", "id": "a", "token": token}).decode())
            await asyncio.sleep(0.2)  # the auth reply arrives and fills the one-frame queue
            await flood(gw, user_id)
            assert gw.metrics.slow_consumers._value.get() == 1
            await asyncio.sleep(2.0)  # still not reading
            received = 0
            with pytest.raises(ConnectionClosed) as caught:
                async with asyncio.timeout(10):
                    while True:
                        await ws.recv()
                        received += 1
            assert received < 2000  # what the socket buffers held; the rest was never queued
            assert caught.value.rcvd is not None
            assert (caught.value.rcvd.code, caught.value.rcvd.reason) == (1008, "slow consumer: outgoing queue full")
        async with asyncio.timeout(5):
            while gw.sessions:
                await asyncio.sleep(0.05)


async def test_a_client_that_never_resumes_reading_is_cut_off(make_gateway):
    async with make_gateway(outbox_limit=20, ping_interval_s=1.0) as gw:
        user_id, token = mint(gw, "consumer")
        async with ws_connect(ws_url(gw), compression=None, max_queue=1, ping_interval=None,
                              close_timeout=0.5) as ws:  # paused, it would not see the server hang up
            await ws.send(msgspec.json.encode({"type": "auth", "id": "a", "token": token}).decode())
            await asyncio.sleep(0.2)
            await flood(gw, user_id)
            assert gw.metrics.slow_consumers._value.get() == 1
            async with asyncio.timeout(5):  # within the heartbeat's grace, not left hanging
                while gw.sessions:
                    await asyncio.sleep(0.05)


async def test_a_reading_client_gets_every_event_in_order(gateway, signed_in):
    client, user_id = await signed_in("consumer")
    for i in range(300):
        gateway.hub.deliver_local(user_channel(user_id), Notice(text=str(i), sender="t"))
    texts = [(await client.next_event()).text for _ in range(300)]
    assert texts == [str(i) for i in range(300)]


async def test_unauthenticated_connections_are_closed_after_the_deadline(make_gateway):
    async with make_gateway(auth_timeout_s=0.3) as gw, ws_connect(ws_url(gw), compression=None) as ws:
        await ws.send('{"type": "ping", "id": "1"}')  # public frames do not count as signing in
        assert msgspec.json.decode(await ws.recv())["type"] == "result"
        assert await closed_with(ws, 5) == (1008, "authentication timeout")


async def test_signed_in_sessions_outlive_the_auth_deadline(make_gateway, connect):
    async with make_gateway(auth_timeout_s=0.3) as gw:
        client = await connect(gw)
        _, token = mint(gw, "consumer")
        await client.request(Auth(token=token))
        await asyncio.sleep(0.6)
        assert (await client.call("ping", {}))[0]["type"] == "result"


async def test_idle_sessions_are_closed(make_gateway):
    async with make_gateway(idle_timeout_s=0.4) as gw, ws_connect(ws_url(gw), compression=None) as ws:
        code, reason = await closed_with(ws, 5)
        assert (code, reason) == (1001, "idle timeout")


async def test_sessions_end_when_their_token_expires(make_gateway):
    async with make_gateway(idle_timeout_s=0.4) as gw, ws_connect(ws_url(gw), compression=None) as ws:
        token, _ = gw.services.tokens.mint("u-exp", "consumer", ttl=timedelta(seconds=1))
        await ws.send(msgspec.json.encode({"type": "auth", "id": "a", "token": token}).decode())
        assert msgspec.json.decode(await ws.recv())["type"] == "result"

        async def keep_alive() -> None:
            while True:
                await asyncio.sleep(0.1)
                await ws.send('{"type": "ping"}')

        pinger = asyncio.create_task(keep_alive())
        try:
            code, reason = await closed_with(ws, 5)
        finally:
            pinger.cancel()
        assert (code, reason) == (1008, "session token expired")


async def test_a_peer_that_stops_answering_heartbeats_is_dropped(make_gateway):
    async with make_gateway(ping_interval_s=0.3) as gw:
        # A raw TCP client: completes the handshake, then never reads or answers a ping.
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
        await asyncio.sleep(0.1)
        assert len(gw.sessions) == 1
        async with asyncio.timeout(5):
            while gw.sessions:
                await asyncio.sleep(0.1)
        writer.close()


async def test_a_sign_in_refused_for_now_is_tried_again_and_a_bad_token_is_not(make_gateway):
    """`Reconnecting` treats `rate_limited` and `unavailable` as "later" (an overloaded node in a
    reconnect storm): it reconnects after its backoff. A refused token ends it: retrying cannot help."""
    async with make_gateway(rate_per_s=1.0, rate_burst=2) as gw:
        attempts = 0

        async def sign_in(client: Client) -> None:
            nonlocal attempts
            attempts += 1
            await client.request(Auth(token=mint(gw, "technician")[1]))
            for _ in range(3 if attempts == 1 else 1):  # the first connection outruns the bucket
                await client.request(Ping())

        app = await Reconnecting([ws_url(gw)], sign_in, backoff=Backoff(0.01, 0.05)).start(timeout=20)
        assert (attempts, app.attempts, app.connections, app.failed) == (2, 2, 1, None)
        await app.close()

        async def bad_token(client: Client) -> None:
            await client.request(Auth(token="not.a.token"))

        refused = Reconnecting([ws_url(gw)], bad_token, backoff=Backoff(0.01, 0.05))
        with pytest.raises(ErrorReply) as caught:
            await refused.start(timeout=20)
        assert caught.value.code == "unauthorized" and refused.failed is caught.value
        await refused.close()
