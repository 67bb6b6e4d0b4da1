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
from protocol.messages import REQUESTS, operation
from tests.conftest import mint

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
