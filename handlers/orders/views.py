"""Who may see an order, and how much of it: the one place that turns a row into an `Order`."""

import math
import uuid
from enum import Enum

import asyncpg
import msgspec

from handlers.context import Context, Identity
from handlers.errors import N_, Conflict, NotFound
from protocol.orders import Order, OrderCustomer
from storage import catalog, geo, orders

EARTH_RADIUS_MI = 3958.7613


class Sight(Enum):
    FULL = "full"  # the parties: consumer, assigned technician, the brand's merchants, admins
    POOL = "pool"  # technicians looking at an open order: no address, no consumer, approximate position


class Contact(Enum):
    """How much of a merchant's customer's contact a reader of the order sees."""

    FULL = "full"  # name, phone, e-mail: the order's merchants, admins, its consumer
    CALL = "call"  # name and phone: the assigned technician
    NONE = "none"


def contact_for(who: Identity | None, row: asyncpg.Record) -> Contact:
    """What an order's reader with full sight of it sees of the customer's contact."""
    if who is None:
        return Contact.NONE
    if who.role in ("admin", "merchant") or (who.role == "consumer" and row["consumer_id"] == who.user_id):
        return Contact.FULL
    if who.role == "technician" and row["technician_id"] == who.user_id:
        return Contact.CALL
    return Contact.NONE


def seal_customer(ctx: Context, order_id: uuid.UUID, name: str, phone: str, email: str) -> bytes:
    contact = msgspec.json.encode(OrderCustomer(name=name, phone=phone, email=email))
    return ctx.services.cipher.seal(contact, f"orders.customer:{order_id}")


async def customer(ctx: Context, row: asyncpg.Record, contact: Contact) -> OrderCustomer | None:
    if row.get("customer_enc") is None or contact is Contact.NONE:
        return None
    found = msgspec.json.decode(await ctx.services.cipher.open(row["customer_enc"], f"orders.customer:{row['id']}"),
                                type=OrderCustomer)
    return found if contact is Contact.FULL else msgspec.structs.replace(found, email=None)


def state_conflict(row: asyncpg.Record) -> Conflict:
    """What a caller gets when the order has moved on from where their operation applies."""
    return Conflict(N_("The order is {state} now."), current_state=row["state"], state=row["state"])


def parse_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound(N_("No such order.")) from None


def miles(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    """Great-circle distance (haversine), as Redis computes it."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lng2 - lng1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_MI * math.asin(math.sqrt(a))


async def technician_position(ctx: Context, technician: str) -> tuple[float, float] | None:
    """(lng, lat): this session's last update, else the index's."""
    known: tuple[float, float] | None = ctx.memo.get("position")
    if known is not None:
        return known[0], known[1]
    return await geo.position(ctx.services.redis, technician)


async def sight(ctx: Context, who: Identity, row: asyncpg.Record) -> Sight | None:
    if who.role == "admin":
        return Sight.FULL
    if who.role == "consumer":
        return Sight.FULL if row["consumer_id"] == who.user_id else None
    if who.role == "merchant":
        return Sight.FULL if row["brand_id"] in await catalog.merchant_brands(ctx.services.db, who.user_id) else None
    if row["technician_id"] == who.user_id:
        return Sight.FULL
    if row["state"] != "open" or not await within_reach(ctx, who.user_id, row):
        return None
    return Sight.POOL


async def within_reach(ctx: Context, technician: str, row: asyncpg.Record) -> bool:
    """Whether the order lies within the technician's dispatch radius (where the pool shows it while open)."""
    where = await technician_position(ctx, technician)
    return where is not None and miles(row["lat"], row["lng"], where[1], where[0]) <= ctx.services.order_rules.radius_mi


async def visible_order(ctx: Context, order_id: str) -> tuple[asyncpg.Record, Sight]:
    """The order and how much the caller sees; `not_found` both when it does not exist and when
    the caller may not see it, so ids cannot be probed."""
    assert ctx.identity is not None
    row = await orders.get(ctx.services.db, parse_id(order_id))
    seen = None if row is None else await sight(ctx, ctx.identity, row)
    if row is None or seen is None:
        raise NotFound(N_("No such order."))
    return row, seen


def pool_view(row: asyncpg.Record) -> Order:
    return Order(
        id=str(row["id"]), state=row["state"], brand=row["brand_id"], sku=row["sku_id"],
        service_type=row["service_type"], description=row["description"],
        lat=round(row["lat"], 2), lng=round(row["lng"], 2),  # about a kilometre
        attachments=[str(a) for a in row["attachments"]], window_start=row["window_start"],
        window_end=row["window_end"], price_cents=row["price_cents"], currency=row["currency"],
        created_at=row["created_at"], updated_at=row["updated_at"])


async def view(ctx: Context, row: asyncpg.Record, seen: Sight = Sight.FULL, contact: Contact | None = None) -> Order:
    """The order as the caller sees it; `contact`: for a reader other than the caller (events)."""
    order = pool_view(row)
    if seen is Sight.POOL:
        return order
    address = await ctx.services.cipher.decrypt(row["address_enc"], f"orders.address:{row['id']}")
    return msgspec.structs.replace(
        order, lat=row["lat"], lng=row["lng"], address=address, consumer_id=row["consumer_id"],
        technician_id=row["technician_id"],
        customer=await customer(ctx, row, contact or contact_for(ctx.identity, row)),
        completion_attachments=[str(a) for a in row["completion_attachments"]],
        completion_note=row["completion_note"], rating=row["rating"], rating_comment=row["rating_comment"],
        payment_state=row["payment_state"])
