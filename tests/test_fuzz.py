"""Hostile frames over real sessions: for every operation, frames generated from its protocol
type (a new operation is covered without touching this file) and then mutated (wrong types,
missing and unknown fields, extremes of every bound, NUL and odd unicode, invalid UTF-8, deep
nesting, huge integers, odd datetimes, frames of the wrong kind), sent by every role to a
gateway process on the real servers. No reply may be `internal`, no close 1011, no traceback
in the gateway's log, nothing stored by a rejected frame; ping and /healthz answer afterwards.

`make test` runs FUZZ_EXAMPLES (default 12) examples per operation; `make fuzz` runs 400."""

import asyncio
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import msgspec.inspect as mi
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from handlers.accounts.tokens import TokenIssuer
from protocol import bounds
from protocol.codec import JSON, JSON_SUBPROTOCOL, MSGPACK_SUBPROTOCOL
from protocol.messages import REQUESTS
from storage.embedded import free_port
from tests.conftest import SECRET
from tests.processes import ROOT, healthz
from tests.world import order_at, spot

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "12"))
ROLES = ("anonymous", "consumer", "technician", "merchant", "admin")
CODECS = {"json": JSON_SUBPROTOCOL, "msgpack": MSGPACK_SUBPROTOCOL}
# What a gateway may close a session with for hostile input, each as documented.
EXPECTED_CLOSES = {1007, 1008, 1009}
ODD_TEXT = ["", "\x00", "a\x00b", "\x1b[31m", "\u202eevil", "\ufeff", "\U0001f9ef" * 40, "line\nbreak", "\t",
            "é" * 300, "null", "' OR 1=1 --", "%s%n", "\\", "\ud7ff\ue000\uffff"]
ODD_DATES = ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00", "2030-01-01T00:00:00",
             "1969-12-31T23:59:59Z", "2030-02-30T00:00:00Z", "not a date", "2030-01-01T00:00:00+25:00"]
ODD_NUMBERS = [2**63, -(2**63) - 1, 2**64 + 1, 10**30, -1, 0, 1e308, -1e308, 0.5, -0.0]


class Gateway:
    """`python run.py serve` on the test servers, its log in a file."""

    def __init__(self, servers: tuple[str, str], folder: Path) -> None:
        self.port, self.http_port = free_port(), free_port()
        self.log = folder / "gateway.log"
        env = {**os.environ, "DATABASE_URL": servers[0], "REDIS_URL": servers[1], "GATEWAY_SECRET": SECRET,
               "DATA_DIR": str(folder / "data"), "LOG_LEVEL": "INFO", "RATE_PER_S": "100000",
               "RATE_BURST": "100000", "SWEEP_INTERVAL_S": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "run.py", "serve", "--port", str(self.port), "--http-port", str(self.http_port)],
            cwd=ROOT, env=env, stdout=self.log.open("wb"), stderr=subprocess.STDOUT)
        deadline = datetime.now() + timedelta(seconds=60)
        while healthz(self.port) != 200:
            assert self.process.poll() is None and datetime.now() < deadline, self.log.read_text()
            threading.Event().wait(0.1)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


class Database:
    """Row counts of every table, read from a loop of its own (the fuzz test itself is sync). The
    audit log is left out: it records staff calls, refused ones too, by design."""

    def __init__(self, url: str) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.conn: asyncpg.Connection = self.run(asyncpg.connect(url))
        tables = self.run(self.conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'admin_log'"))
        self.query = "SELECT " + ", ".join(f'(SELECT count(*) FROM "{t["tablename"]}") AS "{t["tablename"]}"'
                                           for t in tables)

    def run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)

    def counts(self) -> dict[str, int]:
        return dict(self.run(self.conn.fetchrow(self.query)))

    def close(self) -> None:
        self.run(self.conn.close())
        self.loop.call_soon_threadsafe(self.loop.stop)


class Sessions:
    """One open session per role and codec, reopened after a close."""

    def __init__(self, gateway: Gateway) -> None:
        self.url = f"ws://127.0.0.1:{gateway.port}/ws"
        self.tokens = TokenIssuer(SECRET, timedelta(hours=1), timedelta(days=1))
        self.users = {role: str(uuid.uuid4()) for role in ROLES}
        self.open: dict[tuple[str, str], ClientConnection] = {}

    def get(self, role: str, codec: str) -> ClientConnection:
        ws = self.open.get((role, codec))
        if ws is None:
            ws = connect(self.url, subprotocols=[CODECS[codec]], max_size=None,  # type: ignore[list-item]
                         open_timeout=10).__enter__()  # closed by drop()
            if role != "anonymous":
                token, _ = self.tokens.mint(self.users[role], role, "en")  # type: ignore[arg-type]
                auth = encode(codec, {"type": "auth", "id": "a", "token": token})
                replies = exchange(ws, codec, auth, codec == "json")
                assert replies[-1]["type"] == "result", replies
            self.open[(role, codec)] = ws
        return ws

    def drop(self, role: str, codec: str) -> None:
        ws = self.open.pop((role, codec), None)
        if ws is not None:
            ws.close()

    def close(self) -> None:
        for key in list(self.open):
            self.drop(*key)


def encode(codec: str, frame: Any) -> bytes:
    return msgspec.json.encode(wire_ints(frame, "json")) if codec == "json" else \
        msgspec.msgpack.encode(wire_ints(frame, "msgpack"))


def wire_ints(value: Any, codec: str) -> Any:
    """Integers past what msgspec encodes: verbatim digits in JSON, the largest uint64 in MessagePack."""
    if isinstance(value, dict):
        return {k: wire_ints(v, codec) for k, v in value.items()}
    if isinstance(value, list):
        return [wire_ints(v, codec) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        return msgspec.Raw(str(value).encode()) if codec == "json" else (2**64 - 1 if value > 0 else -(2**63))
    return value


def decode(codec: str, data: str | bytes) -> Any:
    raw = data.encode() if isinstance(data, str) else data
    return msgspec.json.decode(raw) if codec == "json" else msgspec.msgpack.decode(raw)


def exchange(ws: ClientConnection, codec: str, data: bytes, text: bool) -> list[Any]:
    """Send one frame, then a ping; every frame received until the ping's reply."""
    ws.send(data, text=text)
    marker = "fuzz-" + uuid.uuid4().hex
    ws.send(encode(codec, {"type": "ping", "id": marker}), text=codec == "json")
    received = []
    while True:
        frame = decode(codec, ws.recv(timeout=15))
        if frame.get("id") == marker:
            return received
        received.append(frame)


# -- frames from the protocol types ------------------------------------------------------------
def scalar(kind: mi.Type, odd: bool) -> st.SearchStrategy[Any]:
    """Values of a declared type within its bounds; with `odd`, now and then at or past them."""
    if isinstance(kind, mi.StrType):
        pattern, low, high = kind.pattern, kind.min_length or 0, min(kind.max_length or 40, 40)
        if pattern and pattern not in (bounds.LINE.pattern, bounds.TEXT.pattern):
            valid = st.from_regex(pattern.removesuffix(bounds.END).removeprefix("^"), fullmatch=True)
        else:
            valid = st.text(st.characters(exclude_categories=("Cs", "Cc")), min_size=low, max_size=max(low, high))
        if not odd:
            return valid
        over = (kind.max_length or 64) + 1  # one past the bound; repeated, as Hypothesis draws at most ~8,000
        return st.one_of(valid, st.sampled_from(ODD_TEXT), st.just(str(uuid.uuid4())),
                         st.text(min_size=1, max_size=8).map(lambda s: (s * over)[:over]))
    if isinstance(kind, mi.IntType):
        low = kind.ge if kind.ge is not None else (kind.gt + 1 if kind.gt is not None else -(2**63))
        high = kind.le if kind.le is not None else (kind.lt - 1 if kind.lt is not None else 2**63 - 1)
        valid = st.integers(low, high)
        return st.one_of(valid, st.sampled_from([low - 1, high + 1, *ODD_NUMBERS])) if odd else valid
    if isinstance(kind, mi.FloatType):
        valid = st.floats(kind.ge if kind.ge is not None else kind.gt, kind.le if kind.le is not None else kind.lt,
                          exclude_min=kind.ge is None, exclude_max=kind.le is None, allow_nan=False)
        return st.one_of(valid, st.sampled_from(ODD_NUMBERS)) if odd else valid
    if isinstance(kind, mi.BoolType):
        return st.booleans()
    if isinstance(kind, mi.NoneType):
        return st.none()
    if isinstance(kind, mi.LiteralType):
        values = st.sampled_from(kind.values)
        return st.one_of(values, st.sampled_from(ODD_TEXT)) if odd else values
    if isinstance(kind, mi.DateTimeType):
        offsets = st.builds(lambda m: timezone(timedelta(minutes=m)), st.integers(-1439, 1439))
        if not odd:
            return st.builds(lambda d, tz: d.replace(tzinfo=tz).isoformat(),
                             st.datetimes(datetime(2001, 1, 1), datetime(2999, 1, 1)), offsets)
        aware = st.builds(lambda d, tz: d.replace(tzinfo=tz).isoformat(),
                          st.datetimes(datetime(1, 1, 2), datetime(9999, 12, 30)), offsets)
        return st.one_of(aware, st.sampled_from(ODD_DATES), st.just(datetime.now(UTC).isoformat()))
    if isinstance(kind, mi.BytesType):
        return st.binary(max_size=256)
    raise AssertionError(f"no strategy for {kind}")


def value(kind: mi.Type, odd: bool) -> st.SearchStrategy[Any]:
    if isinstance(kind, mi.Metadata):
        return value(kind.type, odd)
    if isinstance(kind, mi.UnionType):
        return st.one_of(*(value(k, odd) for k in kind.types))
    if isinstance(kind, mi.ListType):
        return st.lists(value(kind.item_type, odd), max_size=min(kind.max_length or 5, 5))
    if isinstance(kind, mi.DictType):
        return st.dictionaries(value(kind.key_type, odd), value(kind.value_type, odd), max_size=4)
    if isinstance(kind, mi.StructType):
        return fields_of(kind, odd)
    return scalar(kind, odd)


def fields_of(kind: mi.StructType, odd: bool) -> st.SearchStrategy[dict[str, Any]]:
    required = {f.encode_name: value(f.type, odd) for f in kind.fields if f.required}
    optional = {f.encode_name: value(f.type, odd) for f in kind.fields if not f.required}
    return st.fixed_dictionaries(required, optional=optional)


ANY_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                                      max_size=3), max_leaves=8)


@st.composite
def hostile(draw: st.DrawFn, request_type: type[msgspec.Struct], order_id: str) -> tuple[str, str, bytes, bool, str]:
    """(role, codec, frame bytes, sent as text?, mutation) for one operation; `order_id` is a
    real order (its consumer and technician are the fuzz sessions), so handlers go past not_found."""
    role, codec = draw(st.sampled_from(ROLES)), draw(st.sampled_from(list(CODECS)))
    frame = draw(fields_of(mi.type_info(request_type), draw(st.booleans())))  # type: ignore[arg-type]
    frame = {"type": request_type.__struct_config__.tag, "id": "f", **frame}
    if "order_id" in frame and draw(st.booleans()):
        frame["order_id"] = order_id
    mutation = draw(st.sampled_from(["none", "none", "drop", "unknown", "retype", "deep", "wrong_kind",
                                     "bad_utf8", "surrogate", "type_last"]))
    keys = [k for k in frame if k != "type"]
    # Hostile text goes into a declared text field where there is one, else into an unknown one.
    target = draw(st.sampled_from([k for k in keys if isinstance(frame[k], str)] or ["x"]))
    if mutation == "drop" and keys:
        del frame[draw(st.sampled_from(keys))]
    elif mutation == "unknown":
        frame["x_" + draw(st.text(max_size=12))] = draw(ANY_JSON)
    elif mutation == "retype" and keys:
        frame[draw(st.sampled_from(keys))] = draw(ANY_JSON)
    elif mutation == "type_last":
        frame = {**{k: v for k, v in frame.items() if k != "type"}, "type": frame["type"]}
    data, text = encode(codec, frame), codec == "json"
    if mutation == "deep":
        depth = draw(st.sampled_from([40, 999, 1001, 5000]))
        nest = (b"[" * depth + b"]" * depth) if codec == "json" else (b"\x91" * depth + b"\x90")
        frame[target] = "NEST"
        data = encode(codec, frame).replace(b'"NEST"' if codec == "json" else b"\xa4NEST", nest)
    elif mutation == "wrong_kind":
        text = not text
    elif mutation in ("bad_utf8", "surrogate"):  # in a field of its own: the frame is refused either way
        frame[target] = "UTF8"
        bad = {("bad_utf8", "json"): b'"\xff\xfe"', ("surrogate", "json"): b'"\\ud800"',
               ("bad_utf8", "msgpack"): b"\xa2\xff\xfe", ("surrogate", "msgpack"): b"\xa3\xed\xa0\x80"}
        data = encode(codec, frame).replace(b'"UTF8"' if codec == "json" else b"\xa4UTF8", bad[mutation, codec])
    return role, codec, data, text, mutation


@pytest.fixture(scope="module")
def fuzz_target(servers: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, ...]]:
    gateway = Gateway(servers, tmp_path_factory.mktemp("fuzz"))
    database, sessions = Database(servers[0]), Sessions(gateway)
    try:
        yield gateway, database, sessions, seed_order(sessions)
    finally:
        sessions.close()
        database.close()
        gateway.stop()
        log = gateway.log.read_text(errors="replace")
        assert "Traceback" not in log, log[-5000:]
        assert "handler for" not in log, log[-5000:]  # an unexpected handler error is logged so


def seed_order(sessions: Sessions) -> str:
    """An order of the fuzz consumer, accepted by the fuzz technician, with a chat message."""
    place = spot()

    def call(role: str, frame: dict[str, Any]) -> Any:
        [reply] = [r for r in exchange(sessions.get(role, "json"), "json", encode("json", frame), True)
                   if r.get("type") in ("result", "error")]
        assert reply["type"] == "result", reply
        return reply

    call("technician", {"type": "tech.duty", "id": "s1", "on_duty": True})
    call("technician", {"type": "location.update", "id": "s2", "lat": place[0], "lng": place[1]})
    order = msgspec.to_builtins(order_at(place)) | {"id": "s3"}
    order_id: str = call("consumer", order)["order"]["id"]
    call("technician", {"type": "order.accept", "id": "s4", "order_id": order_id})
    call("consumer", {"type": "chat.send", "id": "s5", "order_id": order_id, "client_id": "seed", "text": "hello"})
    return order_id


@pytest.mark.parametrize("request_type", REQUESTS, ids=lambda r: r.__struct_config__.tag)
def test_hostile_frames(fuzz_target: tuple[Any, ...], request_type: type[msgspec.Struct]) -> None:
    gateway, database, sessions, order_id = fuzz_target

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
    @given(hostile(request_type, order_id))
    def one(case: tuple[str, str, bytes, bool, str]) -> None:
        role, codec, data, text, mutation = case
        ws = sessions.get(role, codec)
        before = database.counts()
        try:
            replies = exchange(ws, codec, data, text)
        except ConnectionClosed as closed:
            sessions.drop(role, codec)
            assert closed.rcvd is not None and closed.rcvd.code in EXPECTED_CLOSES, (mutation, closed)
            assert closed.rcvd.code != 1007 or mutation in ("bad_utf8", "wrong_kind"), (mutation, closed)
            return
        codes = [r.get("code") for r in replies if r.get("type") == "error"]
        assert "internal" not in codes, (mutation, replies)
        if mutation in ("deep", "wrong_kind", "bad_utf8", "surrogate", "unknown") or codes:
            assert codes, (mutation, replies)  # refused...
            assert database.counts() == before, (mutation, replies)  # ...and nothing stored

    one()
    ws = sessions.get("consumer", "json")
    assert exchange(ws, "json", encode("json", {"type": "ping", "id": "p"}), True)[-1]["type"] == "result"
    assert healthz(gateway.port) == 200
    assert "Traceback" not in gateway.log.read_text(errors="replace")


@pytest.mark.parametrize("request_type", REQUESTS, ids=lambda r: r.__struct_config__.tag)
def test_generated_frames_reach_the_handlers(request_type: type[msgspec.Struct]) -> None:
    """The strategies are not all refusals: unmutated frames decode, for every operation."""
    tag, decoded = request_type.__struct_config__.tag, 0

    @settings(max_examples=40, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(fields_of(mi.type_info(request_type), odd=False))  # type: ignore[arg-type]
    def count(fields: dict[str, Any]) -> None:
        nonlocal decoded
        try:
            JSON.decode_request(encode("json", {"type": tag, **fields}))
            decoded += 1
        except msgspec.DecodeError:
            pass

    count()
    assert decoded, request_type
