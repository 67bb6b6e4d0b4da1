"""The wire: JSON and MessagePack sessions, and no input that can crash a session."""

import asyncio
import logging
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from protocol.auth import Auth, Ping
from protocol.codec import JSON, MSGPACK
from protocol.frames import ERROR_CODES
from tests.conftest import mint, ws_url


def documents(integers: st.SearchStrategy[int]) -> st.SearchStrategy[object]:
    return st.recursive(
        st.none() | st.booleans() | integers | st.floats(allow_nan=False) | st.text(max_size=20),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
        max_leaves=12,
    )


JSONISH = documents(st.integers())
MSGPACKABLE = documents(st.integers(min_value=-(2**63), max_value=2**64 - 1))
OPERATIONS = st.sampled_from(["auth", "ping", "auth.register", "auth.login", "auth.refresh", "auth.logout",
                              "admin.notify", "nope", ""])
FRAMEY = st.builds(lambda op, rest, rid: {**rest, "type": op, "id": rid}, OPERATIONS,
                   st.dictionaries(st.sampled_from(["token", "email", "password", "role", "name", "text",
                                                    "user_id", "group", "refresh_token", "locale"]), JSONISH,
                               max_size=4),
                   st.none() | st.text(max_size=70) | st.integers())


async def test_msgpack_session_speaks_binary_frames(gateway, connect):
    client = await connect(codec=MSGPACK)
    assert client.ws.subprotocol == "dispatch.v1.msgpack"
    _, token = mint(gateway, "consumer")
    assert (await client.request(Auth(token=token))).role == "consumer"
    raw = await client.call("ping", {})
    assert raw[0]["type"] == "result"


async def test_a_client_offering_no_subprotocol_gets_json(gateway):
    async with ws_connect(ws_url(gateway), compression=None) as ws:
        assert ws.subprotocol is None
        await ws.send('{"type": "ping", "id": "p1"}')
        reply = msgspec.json.decode(await ws.recv())
        assert reply["type"] == "result" and reply["id"] == "p1" and "server_time" in reply


async def test_a_client_offering_an_unknown_subprotocol_gets_json(gateway):
    async with ws_connect(ws_url(gateway), subprotocols=["graphql-ws"], compression=None) as ws:  # type: ignore[list-item]
        await ws.send('{"type": "ping", "id": "p2"}')
        assert msgspec.json.decode(await ws.recv())["id"] == "p2"


async def test_replies_keep_the_request_id_and_errors_name_a_stable_code(gateway):
    async with ws_connect(ws_url(gateway), compression=None) as ws:
        for frame, code in ((b'{"type": "nope", "id": "a"}', "bad_request"),
                            (b'[1, 2]', "bad_request"),
                            (b'{"id": "b"}', "bad_request"),
                            (b'{"type": "admin.notify", "id": "c", "text": "x", "group": "g"}', "unauthorized"),
                            (b'{"type": "ping", "id": 7}', "bad_request")):
            await ws.send(frame.decode())
            reply = msgspec.json.decode(await ws.recv())
            assert reply["type"] == "error" and reply["code"] == code, (frame, reply)
            assert reply["message"]
        # the session survived all of it
        await ws.send('{"type": "ping", "id": "d"}')
        assert msgspec.json.decode(await ws.recv())["type"] == "result"


async def test_a_binary_frame_on_a_json_session_is_refused_not_acted_on(gateway):
    _, token = mint(gateway, "consumer")
    async with ws_connect(ws_url(gateway), compression=None) as ws:
        for frame in (msgspec.json.encode({"type": "auth", "id": "a", "token": token}),  # JSON, but binary
                      msgspec.msgpack.encode({"type": "auth", "id": "a", "token": token})):
            await ws.send(frame)
            reply = msgspec.json.decode(await ws.recv())
            assert (reply["code"], reply["message"]) == (
                "bad_request", "This session speaks JSON: send every frame as a text frame."), frame
        await ws.send('{"type": "admin.notify", "id": "n", "text": "x", "group": "g"}')
        assert msgspec.json.decode(await ws.recv())["code"] == "unauthorized"  # the binary `auth` did nothing
        await ws.send('{"type": "ping", "id": "p"}')
        assert msgspec.json.decode(await ws.recv())["type"] == "result"


async def test_a_text_frame_on_a_msgpack_session_is_refused(gateway):
    async with ws_connect(ws_url(gateway), subprotocols=["dispatch.v1.msgpack"], compression=None) as ws:  # type: ignore[list-item]
        await ws.send('{"type": "ping", "id": "p"}')
        reply = msgspec.msgpack.decode(await ws.recv())
        assert (reply["code"], reply["message"]) == (
            "bad_request", "This session speaks MessagePack: send every frame as a binary frame.")
        await ws.send(msgspec.msgpack.encode({"type": "ping", "id": "after"}))
        assert msgspec.msgpack.decode(await ws.recv())["type"] == "result"


async def test_a_wrong_kind_of_frame_is_explained_in_the_session_language(gateway):
    _, token = mint(gateway, "consumer", locale="es")
    async with ws_connect(ws_url(gateway), compression=None) as ws:
        await ws.send(msgspec.json.encode({"type": "auth", "id": "a", "token": token}).decode())
        assert msgspec.json.decode(await ws.recv())["type"] == "result"
        await ws.send(b'{"type": "ping"}')
        reply = msgspec.json.decode(await ws.recv())
        assert reply["message"] == "Esta sesión usa JSON: envía cada mensaje como una trama de texto."


async def test_invalid_utf8_in_a_text_frame_closes_with_1007_without_a_traceback(gateway, caplog):
    async with ws_connect(ws_url(gateway), compression=None) as ws:
        await ws.send(b'{"type": "ping", "id": "\xff\xfe"}', text=True)  # a text frame, not UTF-8
        with pytest.raises(ConnectionClosed) as caught:
            async with asyncio.timeout(5):
                await ws.recv()
    assert caught.value.rcvd is not None and caught.value.rcvd.code == 1007
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300) | st.builds(msgspec.json.encode, FRAMEY) | st.builds(msgspec.json.encode, JSONISH),
       as_text=st.booleans())
async def test_arbitrary_frames_get_an_error_or_a_reply_never_a_crash(gateway, data, as_text):
    async with ws_connect(ws_url(gateway), compression=None) as ws:
        try:
            await ws.send(data.decode("utf-8", "replace") if as_text else data)
            reply = msgspec.json.decode(await asyncio.wait_for(ws.recv(), 5))
        except Exception as exc:  # a clean close is acceptable; anything else is a failure
            from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK
            assert isinstance(exc, (ConnectionClosedOK, ConnectionClosedError)), exc
            assert exc.rcvd is not None and exc.rcvd.code in (1000, 1007, 1008, 1009), exc
            return
        assert reply["type"] in ("result", "error")
        if reply["type"] == "error":
            assert reply["code"] in ERROR_CODES and reply["code"] != "internal", reply
        # the session still answers
        await ws.send('{"type": "ping", "id": "after"}')
        assert msgspec.json.decode(await asyncio.wait_for(ws.recv(), 5))["id"] == "after"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=MSGPACKABLE)
async def test_arbitrary_msgpack_frames_never_crash_a_session(gateway, value):
    async with ws_connect(ws_url(gateway), subprotocols=["dispatch.v1.msgpack"], compression=None) as ws:  # type: ignore[list-item]
        await ws.send(msgspec.msgpack.encode(value))
        reply = msgspec.msgpack.decode(await asyncio.wait_for(ws.recv(), 5))
        assert reply["type"] in ("result", "error")
        await ws.send(msgspec.msgpack.encode({"type": "ping", "id": "after"}))
        assert msgspec.msgpack.decode(await asyncio.wait_for(ws.recv(), 5))["id"] == "after"


def test_codecs_round_trip_every_request_field():
    ping = Ping(id="x")
    assert JSON.decode_request(JSON.encode(ping)) == ping
    assert MSGPACK.decode_request(MSGPACK.encode(ping)) == ping
    with pytest.raises(msgspec.DecodeError):
        JSON.decode_request(b'{"type": "ping", "id": ""}')  # ids are 1-64 characters


@settings(max_examples=60, deadline=None)
@given(size=st.sampled_from([0, 1, 125, 126, 127, 65535, 65536, 70000]) | st.integers(0, 70000), text=st.booleans())
def test_frames_written_directly_are_what_websockets_would_send(size, text):
    from websockets.frames import Frame, Opcode

    from gateway.wire import frame_header

    payload = b"x" * size
    expected = Frame(Opcode.TEXT if text else Opcode.BINARY, payload).serialize(mask=False, extensions=[])
    assert frame_header(size, text) + payload == expected


def test_every_error_the_handlers_raise_has_a_listed_code():
    """The AsyncAPI document's `ErrorCode` is derived from the error types (handlers.errors.codes);
    protocol's ERROR_CODES, which protocol-side code and docs/protocol.md's table follow, must say
    the same: every code any domain declares (payment_declined was missing), and no code that
    nothing sends."""
    import handlers.registry  # noqa: F401  (loads every domain, and so every error type)
    from handlers.errors import GatewayError, codes

    def subclasses(kind: type) -> list[type]:
        return [k for sub in kind.__subclasses__() for k in (sub, *subclasses(sub))]

    declared = {kind.code for kind in [GatewayError, *subclasses(GatewayError)]}
    assert "payment_declined" in declared
    assert set(codes()) == declared == set(ERROR_CODES), declared ^ set(ERROR_CODES)
    guide = (Path(__file__).resolve().parents[1] / "docs" / "protocol.md").read_text(encoding="utf-8")
    assert all(f"| `{code}` |" in guide for code in declared)  # the guide's table of error codes
