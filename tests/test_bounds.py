"""What the decoder accepts can be stored: bounds declared in the protocol types, depth, and rows
the GEO index cannot hold never stopping a rebuild, a start or a batch of positions."""

import base64
import re
import uuid
from datetime import datetime

import msgspec
import msgspec.inspect as mi
import pytest

from handlers.orders.pool import rebuild_if_lost
from protocol import bounds
from protocol.codec import MSGPACK
from protocol.frames import Request
from protocol.messages import REQUESTS
from protocol.orders import OrderList, OrderNearby
from storage import geo
from tests.world import order_at, spot, technician

INT64_MIN = -(2**63)


def leaves(kind: mi.Type, seen: set[type] | None = None):
    """Every scalar type a request may carry, walking Structs, unions and containers."""
    seen = set() if seen is None else seen
    if isinstance(kind, mi.Metadata):  # a type with a description or extra JSON schema
        yield from leaves(kind.type, seen)
    elif isinstance(kind, mi.StructType):
        if kind.cls in seen:
            return
        seen.add(kind.cls)
        for field in kind.fields:
            yield from leaves(field.type, seen)
    elif isinstance(kind, mi.UnionType):
        for member in kind.types:
            yield from leaves(member, seen)
    elif isinstance(kind, (mi.ListType, mi.SetType, mi.FrozenSetType, mi.VarTupleType)):
        yield from leaves(kind.item_type, seen)
    elif isinstance(kind, mi.DictType):
        yield from leaves(kind.key_type, seen)
        yield from leaves(kind.value_type, seen)
    else:
        yield kind


@pytest.mark.parametrize("request_type", REQUESTS, ids=lambda r: r.__struct_config__.tag)
def test_every_request_field_is_bounded(request_type: type[Request]) -> None:
    """A new operation is covered without touching this test: every text refuses NUL and
    control characters, every integer fits int64, every float is bounded, every datetime has
    an offset, unknown fields are refused."""
    assert request_type.__struct_config__.forbid_unknown_fields
    info = mi.type_info(request_type)
    assert isinstance(info, mi.StructType)
    # `id` is exempt: only ever echoed back, never stored or logged (see protocol.frames.RequestId).
    fields = [f for f in info.fields if f.name != "id"]
    for leaf in (x for f in fields for x in leaves(f.type)):
        if isinstance(leaf, mi.StrType):
            assert leaf.pattern, leaf
            assert not re.search(leaf.pattern, "a\x00b") and not re.search(leaf.pattern, "a\x1bb"), leaf
        elif isinstance(leaf, mi.IntType):
            low = leaf.ge if leaf.ge is not None else (leaf.gt + 1 if leaf.gt is not None else None)
            high = leaf.le if leaf.le is not None else (leaf.lt - 1 if leaf.lt is not None else None)
            assert low is not None and high is not None and INT64_MIN <= low and high <= bounds.INT64_MAX, leaf
        elif isinstance(leaf, mi.FloatType):
            assert (leaf.ge is not None or leaf.gt is not None) and (leaf.le is not None or leaf.lt is not None)
        elif isinstance(leaf, mi.DateTimeType):
            assert leaf.tz is True, leaf


def depth(kind: mi.Type) -> int:
    """Containers below this value (a scalar: 0)."""
    if isinstance(kind, mi.Metadata):
        return depth(kind.type)
    if isinstance(kind, mi.UnionType):
        return max(depth(k) for k in kind.types)
    if isinstance(kind, (mi.ListType, mi.SetType, mi.FrozenSetType, mi.VarTupleType)):
        return 1 + depth(kind.item_type)
    if isinstance(kind, mi.DictType):
        return 1 + max(depth(kind.key_type), depth(kind.value_type))
    if isinstance(kind, mi.StructType):
        return 1 + max((depth(f.type) for f in kind.fields), default=0)
    return 0


def test_no_request_nests_deeper_than_documented() -> None:
    """docs/protocol.md: at most 2 levels below the frame (unknown fields being refused)."""
    assert max(depth(mi.type_info(r)) - 1 for r in REQUESTS) <= 2


def test_single_line_patterns_refuse_a_trailing_newline() -> None:
    """Python's `$` also matches before a final newline: the patterns end with `bounds.END`."""
    for leaf in (x for r in REQUESTS for x in leaves(mi.type_info(r))):
        if isinstance(leaf, mi.StrType) and leaf.pattern and leaf.pattern != bounds.TEXT.pattern:
            assert not re.search(leaf.pattern, "abc\n"), leaf.pattern


def test_datetimes_must_convert_to_utc_within_range() -> None:
    assert bounds.within_range(datetime.fromisoformat("2030-01-01T08:00:00+08:00")).hour == 0
    for text in ("0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00", "1969-12-31T23:59:59Z",
                 "2030-01-01T08:00:00"):
        with pytest.raises(ValueError):
            bounds.within_range(datetime.fromisoformat(text))


async def error_of(client, operation: str, fields: dict) -> dict:
    reply, _ = await client.call(operation, fields)
    assert reply["type"] == "error", reply
    return reply


async def test_latitude_beyond_the_geo_index_is_refused_and_nothing_is_ordered(signed_in, gateway) -> None:
    consumer, _ = await signed_in("consumer")
    order = msgspec.to_builtins(order_at(spot()))
    del order["type"]
    refused = await error_of(consumer, "order.create", order | {"lat": 89.9})
    assert refused["code"] == "bad_request" and "$.lat" in refused["message"]
    assert (await consumer.request(OrderList())).orders == []
    tech, _ = await signed_in("technician")
    refused = await error_of(tech, "location.update", {"lat": -89.9, "lng": 10.0})
    assert refused["code"] == "bad_request"


async def test_control_characters_huge_integers_and_odd_dates_are_bad_requests(signed_in) -> None:
    consumer, _ = await signed_in("consumer")
    order = msgspec.to_builtins(order_at(spot()))
    del order["type"]
    cases = [
        ("order.create", order | {"description": "warm\x00fridge"}, "$.description"),
        ("order.create", order | {"address": "12 Elm\x1b[31m"}, "$.address"),
        ("order.create", order | {"window_start": "0001-01-01T00:00:00+05:00"}, "$.window_start"),
        ("order.create", order | {"window_end": "9999-12-31T23:59:59-05:00"}, "$.window_end"),
        ("order.create", order | {"window_start": "2031-01-01T10:00:00", "window_end": "2031-01-01T12:00:00Z"},
         "$.window_start"),
        ("order.create", order | {"sku": "WRF535SWHZ\n"}, "$.sku"),
        ("order.create", order | {"brand": "whirlpool\n"}, "$.brand"),
        ("order.create", order | {"notes": "unknown field"}, "notes"),
        ("chat.history", {"order_id": str(uuid.uuid4()), "before_seq": 2**63}, "$.before_seq"),
        ("chat.sync", {"positions": {str(uuid.uuid4()): 2**64}}, "$.positions"),
        ("chat.send", {"order_id": str(uuid.uuid4()), "client_id": "a\x00", "text": "hi"},
         "Expected `str` without control characters - at `$.client_id`"),
        ("auth.logout", {"refresh_token": "x\x00y"}, "$.refresh_token"),
    ]
    for operation, fields, where in cases:
        refused = await error_of(consumer, operation, fields)
        assert refused["code"] == "bad_request" and where in refused["message"], (operation, refused)
    assert (await consumer.request(OrderList())).orders == []
    assert (await consumer.call("ping", {}))[0]["type"] == "result"


async def test_cursors_are_validated_like_fields(signed_in) -> None:
    consumer, _ = await signed_in("consumer")
    for at in ("0001-01-01T00:00:00+05:00", "2030-01-01T00:00:00", "9999-12-31T23:59:59-05:00"):
        cursor = base64.urlsafe_b64encode(f"{at}|{uuid.uuid4()}".encode()).decode()
        refused = await error_of(consumer, "order.list", {"cursor": cursor})
        assert refused["code"] == "bad_request"
    tech, _ = await technician(signed_in, spot())
    for cursor in ("9" * 150, "-1", "1e9", " 1"):
        refused = await error_of(tech, "order.nearby", {"cursor": cursor})
        assert refused["code"] == "bad_request", cursor
    assert (await tech.request(OrderNearby(cursor="20"))).orders == []


@pytest.mark.parametrize("where", ["field", "unknown", "before_type"])
async def test_deep_nesting_is_a_bad_request_before_and_after_auth(signed_in, connect, where) -> None:
    deep = "[" * 5000 + "]" * 5000
    frames = {"field": '{"type":"chat.send","id":"d1","order_id":"o","client_id":"c","text":DEEP}',
              "unknown": '{"type":"ping","id":"d1","x":DEEP}',
              "before_type": '{"x":DEEP,"type":"ping","id":"d1"}'}
    anonymous = await connect()
    signed, _ = await signed_in("consumer")
    for client in (anonymous, signed):
        reply, _ = await client.call_raw(frames[where].replace("DEEP", deep).encode(), None)  # too deep to read its id
        assert (reply["type"], reply["code"], reply["id"]) == ("error", "bad_request", None), reply
        assert "nested too deeply" in reply["message"]
        assert (await client.call("ping", {}))[0]["type"] == "result"  # the session lives on


async def test_deep_messagepack_is_a_bad_request(connect) -> None:
    client = await connect(codec=MSGPACK)
    frame = b"\x83\xa4type\xa4ping\xa2id\xa2d1\xa1x" + b"\x91" * 5000 + b"\x90"
    reply, _ = await client.call_raw(frame, None)
    assert (reply["type"], reply["code"]) == ("error", "bad_request") and "nested too deeply" in reply["message"]
    assert (await client.call("ping", {}))[0]["type"] == "result"


async def plant_open_order(services, lat: float, lng: float) -> str:
    """An open order written straight into PostgreSQL, past the protocol's bounds (its sealed
    fields sealed for it, so only its position is poison: other tests list every order)."""
    order_id = uuid.uuid4()
    template = await services.db.fetchrow("SELECT * FROM orders WHERE customer_enc IS NULL LIMIT 1")
    assert template is not None, "needs one order stored first"
    columns = [c for c in template.keys() if c not in ("id",)]
    values = [template[c] for c in columns]
    values[columns.index("lat")], values[columns.index("lng")] = lat, lng
    values[columns.index("state")] = "open"
    values[columns.index("address_enc")] = services.cipher.encrypt("1 Pole Road", f"orders.address:{order_id}")
    db = services.db
    placeholders = ", ".join(f"${i + 2}" for i in range(len(columns)))
    await db.execute(f"INSERT INTO orders (id, {', '.join(columns)}) VALUES ($1, {placeholders})",
                     order_id, *values)
    return str(order_id)


async def test_a_poison_row_never_stops_a_rebuild_or_a_start(gateway, make_gateway, signed_in) -> None:
    consumer, _ = await signed_in("consumer")
    place = spot()
    good = (await consumer.request(order_at(place))).order
    poison = await plant_open_order(gateway.services, 89.9, 10.0)
    services = gateway.services
    before = geo.REFUSED.labels("orders")._value.get()
    await services.redis.delete(geo.POOL_BUILT)
    assert await rebuild_if_lost(services)  # rebuilt, the poison row left out
    assert geo.REFUSED.labels("orders")._value.get() == before + 1
    assert await services.redis.hexists(geo.POOL, good.id)
    assert not await services.redis.hexists(geo.POOL, poison)
    await services.redis.delete(geo.POOL_BUILT)
    try:
        async with make_gateway() as second:  # a start rebuilds the pool too, and serves
            tech, _ = await technician(signed_in, place, connect={"gw": second})
            feed = await tech.request(OrderNearby())
            assert good.id in [o.order.id for o in feed.orders]
    finally:  # the shared database outlives this test
        await services.db.execute("UPDATE orders SET state = 'cancelled' WHERE id = $1", uuid.UUID(poison))


async def test_one_bad_position_in_a_batch_loses_no_other(gateway) -> None:
    writer = geo.PositionWriter(gateway.services.redis)
    writer.start()
    try:
        good = [f"batch-{uuid.uuid4()}" for _ in range(3)]
        writer.put(good[0], 10.0, 20.0)
        writer.put("batch-bad", 10.0, 89.0)
        writer.put(good[1], 11.0, 21.0)
        await writer.put(good[2], 12.0, -22.0)
        for technician_id in good:
            assert await geo.position(gateway.services.redis, technician_id) is not None
        assert await geo.position(gateway.services.redis, "batch-bad") is None
    finally:
        await writer.stop()
        await gateway.services.redis.zrem(geo.TECHS, *good)
