"""Builders for order tests: technicians placed on the map, consumers' orders, unique places.

Every test works at its own spot on the globe (spots are >150 miles apart), so announcements
of one test never reach another's technicians although they share one Redis."""

import asyncio
import itertools
import math
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from protocol.catalog import BrandSave, PriceSave, SkuSave
from protocol.client import Client, ErrorReply
from protocol.location import Duty, LocationUpdate
from protocol.orders import OrderCreate

_spots = itertools.count()


def spot() -> tuple[float, float]:
    k = next(_spots)
    return -55.0 + (k // 30) * 4.0, -170.0 + (k % 30) * 11.0


def offset(place: tuple[float, float], north_mi: float = 0.0, east_mi: float = 0.0) -> tuple[float, float]:
    lat, lng = place
    return lat + north_mi / 69.05, lng + east_mi / (69.17 * math.cos(math.radians(lat)))


SignIn = Callable[..., Awaitable[tuple[Client, str]]]


async def technician(signed_in: SignIn, place: tuple[float, float], **duty: Any) -> tuple[Client, str]:
    """An on-duty technician whose position is in the index (the update is acknowledged)."""
    client, user_id = await signed_in("technician", **duty.pop("connect", {}))
    await client.request(Duty(on_duty=True, **duty))
    await client.request(LocationUpdate(lat=place[0], lng=place[1]))
    return client, user_id


def order_at(place: tuple[float, float], **fields: Any) -> OrderCreate:
    values: dict[str, Any] = {"brand": "whirlpool", "sku": "WRF535SWHZ", "service_type": "repair",
                              "description": "Fridge is warm, compressor clicks", "address": "12 Elm Street, Apt 3",
                              "lat": place[0], "lng": place[1]}
    return OrderCreate(**(values | fields))


async def events(client: Client, kind: str, count: int = 1, timeout: float = 20.0) -> list[Any]:
    """The next `count` events of `kind`, skipping others."""
    found: list[Any] = []
    async with asyncio.timeout(timeout):
        while len(found) < count:
            event = await client.next_event(timeout=timeout)
            if getattr(event, "__struct_config__", None) and event.__struct_config__.tag == kind:
                found.append(event)
    return found


async def quiet(client: Client, kind: str, wait: float = 0.5) -> bool:
    """True when no event of `kind` arrives within `wait` seconds."""
    try:
        await events(client, kind, timeout=wait)
    except TimeoutError:
        return True
    return False


async def refused(client: Client, request: Any) -> ErrorReply:
    """The error reply a request gets (the test fails if it succeeds)."""
    with pytest.raises(ErrorReply) as caught:
        await client.request(request)
    return caught.value


def fresh(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def brand_with_sku(admin: Client, price_cents: int = 20000) -> tuple[str, str]:
    """A brand of the test's own with one washer SKU priced for repair."""
    brand, sku = fresh("brand"), fresh("SKU").upper()
    await admin.request(BrandSave(brand=brand, name="Test brand"))
    await admin.request(SkuSave(sku=sku, brand=brand, category="washer", name="Test washer"))
    await admin.request(PriceSave(sku=sku, service_type="repair", price_cents=price_cents))
    return brand, sku
