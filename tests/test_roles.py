"""The authorization matrix, generated from the route table: every operation against every role
(anonymous, consumer, technician, merchant, admin), each in a session of its own, with the smallest
valid frame its protocol type allows (so the role check, not validation, decides). Roles not
allowed get `forbidden` (anonymous sessions `unauthorized`); allowed ones never the role check's
`forbidden`. A new operation is covered without touching this file."""

import asyncio
import re
import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec
import msgspec.inspect as mi
import pytest

from handlers.context import ROLES
from handlers.registry import ROUTES
from protocol import bounds
from protocol.catalog import MerchantBrandsSet
from protocol.messages import REQUESTS, operation
from protocol.orders import OrderAccept, OrderGet
from tests.conftest import mint
from tests.world import brand_with_sku, order_at, spot, technician

# Tried in order for a text field with its own pattern; the first that fits is sent.
CANDIDATES = ("x", "x@example.com", "usd", "abc", "0", "+1 555 0100")
# Public operations that answer `unauthorized` to bad credentials by design.
CREDENTIAL_CHECKS = ("auth", "auth.login", "auth.refresh")


def minimal(kind: mi.Type) -> Any:
    """The smallest value of a declared type within its bounds."""
    if isinstance(kind, mi.Metadata):
        return minimal(kind.type)
    if isinstance(kind, mi.UnionType):
        return minimal(next(k for k in kind.types if not isinstance(k, mi.NoneType)))
    if isinstance(kind, mi.StrType):
        low = max(kind.min_length or 0, 1)
        if kind.pattern in (None, bounds.LINE.pattern, bounds.TEXT.pattern):
            return "x" * low
        for candidate in (*CANDIDATES, "x" * low, "0" * low):
            if re.fullmatch(kind.pattern.removesuffix(bounds.END), candidate) and \
                    low <= len(candidate) <= (kind.max_length or len(candidate)):
                return candidate
        raise AssertionError(f"no candidate fits {kind.pattern}: add one to CANDIDATES")
    if isinstance(kind, mi.IntType):
        low = kind.ge if kind.ge is not None else (kind.gt + 1 if kind.gt is not None else 0)
        return max(low, 0) if kind.le is None or kind.le >= 0 else kind.le
    if isinstance(kind, mi.FloatType):
        low = kind.ge if kind.ge is not None else kind.gt
        return 0.0 if low is None or low < 0 else float(low) + (0.5 if kind.gt is not None else 0.0)
    if isinstance(kind, mi.BoolType):
        return False
    if isinstance(kind, mi.LiteralType):
        return kind.values[0]
    if isinstance(kind, mi.DateTimeType):
        return datetime.now(UTC).isoformat()
    if isinstance(kind, mi.BytesType):
        return ""
    if isinstance(kind, (mi.ListType, mi.DictType)):
        return [] if isinstance(kind, mi.ListType) else {}
    if isinstance(kind, mi.StructType):
        return {f.encode_name: minimal(f.type) for f in kind.fields if f.required}
    raise AssertionError(f"no minimal value for {kind}")


def frame(request: type[msgspec.Struct]) -> dict[str, Any]:
    fields = minimal(mi.type_info(request))
    fields.pop("type", None)
    return fields


@pytest.mark.parametrize("request_type", REQUESTS, ids=operation)
def test_every_minimal_frame_decodes(request_type):
    """The matrix sends frames the decoder accepts, or it would test validation instead."""
    msgspec.json.decode(msgspec.json.encode({**frame(request_type), "type": operation(request_type)}),
                        type=request_type)


def test_every_operation_is_routed():
    assert {operation(r) for r in REQUESTS} == {route.operation for route in ROUTES.values()}


async def answer(gateway, connect, role: str | None, op: str, fields: dict[str, Any]) -> dict[str, Any]:
    client = await connect()
    if role is not None:
        _, token = mint(gateway, role)
        await client.call("auth", {"token": token})
    reply, _ = await client.call(op, fields)
    await client.close()
    assert isinstance(reply, dict)
    return reply


@pytest.mark.parametrize("role", [None, *ROLES])
async def test_role_matrix(gateway, connect, role):
    routes = list(ROUTES.values())
    replies = await asyncio.gather(*(answer(gateway, connect, role, r.operation, frame(r.request)) for r in routes))
    for route, reply in zip(routes, replies, strict=True):
        code = reply.get("code")
        role_check = code == "forbidden" and "may not call" in reply["message"]
        if route.roles is None or (role is not None and role in route.roles):
            # past the role check (a domain rule may still refuse: chat rooms answer `forbidden`)
            assert not role_check, (route.operation, role, reply)
            assert not (code == "unauthorized" and route.operation not in CREDENTIAL_CHECKS), (route.operation, reply)
        elif role is None:
            assert code == "unauthorized", (route.operation, reply)
        else:
            assert role_check, (route.operation, role, reply)


async def test_public_operations_return_real_results_for_each_role(gateway, connect):
    for role in ROLES:
        client = await connect()
        user_id, token = mint(gateway, role, str(uuid.uuid4()))
        reply, _ = await client.call("auth", {"token": token})
        assert reply["type"] == "result" and reply["user_id"] == user_id and reply["role"] == role
        reply, _ = await client.call("ping", {})
        assert reply["type"] == "result"


# -- the matrix against other people's objects ------------------------------------------------
# Brands and SKUs are public (`catalog.list`): only changing them, or reading their history, is
# kept to their merchants. These operations name them without that.
PUBLIC_PRODUCTS = ("order.create", "catalog.guides")
# A technician within reach was announced the order while it was open: that it was taken since is
# the race's answer (`conflict`), not a leak.
POOL = ("order.accept", "order.decline")


def fields_named(request: type[msgspec.Struct], *names: str) -> list[str]:
    return [f.name for f in mi.type_info(request).fields if f.name in names]  # type: ignore[attr-defined]


async def strangers_world(signed_in) -> dict[str, Any]:
    """A brand with a SKU, a consumer's order in it accepted by a technician; then a consumer, an
    on-duty technician beside the order and a merchant of another brand, none of them party to it."""
    admin, _ = await signed_in("admin")
    brand, sku = await brand_with_sku(admin)
    place = spot()
    owner, _ = await signed_in("consumer")
    order = (await owner.request(order_at(place, brand=brand, sku=sku))).order
    assigned, assigned_id = await technician(signed_in, place)
    await assigned.request(OrderAccept(order_id=order.id))
    other_brand, _ = await brand_with_sku(admin)
    _, merchant_id = await signed_in("merchant")
    await admin.request(MerchantBrandsSet(merchant_id=merchant_id, brands=[other_brand]))
    _, stranger_tech = await technician(signed_in, place)
    return {"admin": admin, "order_id": order.id, "technician_id": assigned_id,
            "values": {"order_id": order.id, "brand": brand, "sku": sku},
            "users": {"consumer": str(uuid.uuid4()), "technician": stranger_tech, "merchant": merchant_id}}


@pytest.mark.parametrize("role", ["consumer", "technician", "merchant"])
async def test_no_role_reaches_another_partys_order_or_brand(gateway, connect, signed_in, role):
    """Every operation naming an order (or, for merchants, changing a brand or SKU), sent by a
    consumer, a technician or a merchant who is not party to it: `not_found`, never a result and
    never a `forbidden` that would confirm the order exists; the order is unchanged. Generated
    from the route table, so a new operation is covered."""
    world = await strangers_world(signed_in)
    client = await connect()
    _, token = mint(gateway, role, world["users"][role])
    await client.call("auth", {"token": token})
    tried = []
    for route in ROUTES.values():
        if route.roles is None or role not in route.roles:
            continue  # the role matrix above covers those
        named = fields_named(route.request, "order_id") or (
            fields_named(route.request, "brand", "sku") if role == "merchant"
            and route.operation not in PUBLIC_PRODUCTS else [])
        if not named:
            continue
        fields = frame(route.request) | {name: world["values"][name] for name in named}
        fields |= {name: "x" for name in fields_named(route.request, "text") if name not in fields}
        reply, _ = await client.call(route.operation, fields)
        allowed = ("not_found", "conflict") if route.operation in POOL and role == "technician" else ("not_found",)
        if route.operation.startswith("payment.") and gateway.services.stripe is None:
            allowed += ("unavailable",)  # no Stripe here: tests/test_payments.py tries strangers with it
        assert reply.get("type") == "error" and reply["code"] in allowed, (route.operation, role, reply)
        tried.append(route.operation)
    assert "order.get" in tried or (role == "merchant" and "catalog.sku.save" in tried)
    after = (await world["admin"].request(OrderGet(order_id=world["order_id"]))).order
    assert (after.state, after.technician_id) == ("accepted", world["technician_id"])
