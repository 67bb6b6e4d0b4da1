"""Orders as their parties see them: create, get, list, timeline, rate."""

import base64
import uuid
from datetime import datetime

import asyncpg
import msgspec

from handlers.accounts.invites import Account, customer_account
from handlers.admin import feed
from handlers.admin.log import STAFF, record_read
from handlers.ai import drafts
from handlers.chat.push import Offline, to_offline
from handlers.context import Context
from handlers.effects import after_commit
from handlers.errors import N_, BadRequest, Conflict, Forbidden, NotFound
from handlers.orders import metrics
from handlers.orders.pool import announce
from handlers.orders.texts import ORDER_UPDATE, status_text
from handlers.orders.views import Contact, Sight, parse_id, seal_customer, view, visible_order
from handlers.routing import Router
from protocol.bounds import within_range
from protocol.orders import (
    OrderCreate,
    OrderCreated,
    OrderGet,
    OrderList,
    OrderPage,
    OrderRate,
    OrderReply,
    OrderStatus,
    OrderTimeline,
    Timeline,
    TimelineEntry,
)
from storage import catalog, orders

router = Router()


async def tell_parties(ctx: Context, row: asyncpg.Record, *others: str | None) -> None:
    """`order.status` to the order's consumer and technician (and anyone else concerned), live."""
    assert ctx.identity is not None
    people = sorted({row["consumer_id"], row["technician_id"], *others} - {None})
    readers: dict[Contact, list[str]] = {}
    for person in people:  # what each sees of a merchant's customer: the consumer all, the technician less
        level = Contact.FULL if person == row["consumer_id"] else \
            Contact.CALL if person == row["technician_id"] else Contact.NONE
        readers.setdefault(level if row.get("customer_enc") is not None else Contact.NONE, []).append(person)
    await ctx.deliver_many([  # one publish for all of them
        (readers_of, OrderStatus(order=await view(ctx, row, contact=level), previous_state=row["previous_state"],
                                 actor_role=ctx.identity.role)) for level, readers_of in readers.items()])
    if row["previous_state"] not in (None, row["state"]):  # a new order is the feed's `order.created`
        metrics.TRANSITIONS.labels(row["state"]).inc()
        await feed.publish(ctx, "order.state", brand=row["brand_id"], order_id=str(row["id"]), state=row["state"],
                           previous_state=row["previous_state"], user_id=ctx.identity.user_id)


async def push_offline(ctx: Context, conn: asyncpg.Connection, row: asyncpg.Record) -> None:
    """Queue the push of the order's new state for its parties with no live session, in the
    transaction (`conn`) that moved it: the move and its push commit together or not at all."""
    assert ctx.identity is not None
    text = status_text(row["previous_state"], row["state"])
    people = [p for p in (row["consumer_id"], row["technician_id"]) if p and p != ctx.identity.user_id]
    if text is not None and people:
        await to_offline(ctx.services, conn, [Offline(
            people, f"status:{row['id']}:{row['updated_at'].timestamp()}", ORDER_UPDATE, text,
            {"type": "order.status", "order_id": str(row["id"]), "state": row["state"]})])


def attachment_ids(values: list[str]) -> list[uuid.UUID]:
    try:
        return [uuid.UUID(v) for v in values]
    except ValueError:
        raise BadRequest(N_("Unknown attachment.")) from None


async def check_attachments(ctx: Context, values: list[str], owner: str) -> list[uuid.UUID]:
    ids = attachment_ids(values)
    if ids and await orders.owned_attachments(ctx.services.db, ids, owner) != len(set(ids)):
        raise BadRequest(N_("Unknown attachment."))
    return ids


@router.route(OrderCreate, roles=["consumer", "merchant"])
async def create(ctx: Context, req: OrderCreate) -> OrderCreated:
    who = ctx.identity
    assert who is not None
    db = ctx.services.db
    brands: list[str] = []
    if who.role == "merchant":
        if (not req.consumer_id) == (req.customer is None):
            raise BadRequest(N_("A merchant orders for a customer: give either customer or consumer_id."))
        brands = await catalog.merchant_brands(db, who.user_id)
        if req.brand is None or req.brand not in brands:
            raise Forbidden(N_("You may only order for your own brands."))
    elif req.customer is not None:
        raise BadRequest(N_("Only a merchant orders for a customer: leave customer out."))
    if req.window_start and req.window_end and req.window_end <= req.window_start:
        raise BadRequest(N_("The time window ends before it starts."))
    draft = None
    brand, sku, service = req.brand, req.sku, req.service_type
    if req.draft_id is not None:
        if who.role != "consumer":  # a draft is a consumer's own
            raise NotFound(N_("No such draft."))
        draft = await drafts.draft_for(ctx, req.draft_id)
        if (brand or draft.brand, sku or draft.sku, service or draft.service_type) != (
                draft.brand, draft.sku, draft.service_type):
            raise BadRequest(N_("The order does not match its draft: leave brand, sku and service_type out or give "
                                "the draft's."))
        brand, sku, service = draft.brand, draft.sku, draft.service_type
    if brand is None or sku is None or service is None:
        raise BadRequest(N_("Give brand, sku and service_type, or a draft_id."))
    price = await orders.catalog_price(db, brand, sku, service)
    if price is None:
        raise BadRequest(N_("No such product and service in the catalog."))
    if price["retired"]:  # the brand, the SKU or this price: orders made before keep their price
        raise Conflict(N_("This product or service is retired and can no longer be ordered."),
                       current_state="retired")
    order_id = uuid.uuid4()
    attachments = await check_attachments(ctx, req.attachments, who.user_id)
    address_enc = ctx.services.cipher.encrypt(req.address, f"orders.address:{order_id}")
    customer = req.customer
    customer_enc = None if customer is None else seal_customer(ctx, order_id, customer.name.strip(),
                                                               customer.phone, customer.email.strip())
    # The invited account, the order and its push commit together: a refused order leaves no account.
    async with db.acquire() as conn, conn.transaction():
        if customer is not None:
            account = await customer_account(ctx, conn, customer, brands)
        else:  # a consumer's own order, or a merchant's for a consumer it names
            account = Account(req.consumer_id if who.role == "merchant" and req.consumer_id else who.user_id)
        if draft is not None:
            await drafts.use(conn, ctx, draft, order_id)
        row = await orders.create(
            conn, order_id, consumer_id=account.user_id, created_by=who.user_id, actor_role=who.role,
            brand=brand, sku=sku, service=service, description=req.description,
            address_enc=address_enc, lat=req.lat, lng=req.lng, attachments=attachments,
            window_start=req.window_start, window_end=req.window_end, price_cents=price["price_cents"],
            currency=price["currency"], paid=ctx.services.stripe is not None, customer_enc=customer_enc,
            ai_conversation_id=draft.conversation_id if draft else None,
            ai_summary_enc=drafts.seal_summary(ctx, order_id, draft) if draft else None)
        await push_offline(ctx, conn, row)
    if who.role == "merchant":
        await after_commit("order.status of a new order", tell_parties(ctx, row))
    metrics.CREATED.inc()
    metrics.TRANSITIONS.labels(row["state"]).inc()  # entered awaiting_payment or open
    await feed.publish(ctx, "order.created", brand=row["brand_id"], order_id=str(order_id), state=row["state"],
                       user_id=who.user_id, amount_cents=row["price_cents"])
    if draft is not None:
        await feed.publish(ctx, "ai.conversation", brand=row["brand_id"], user_id=who.user_id, state="ordered",
                           conversation_id=str(draft.conversation_id), order_id=str(order_id))
    if row["state"] == "open":  # else it opens once paid (handlers.money.payments)
        await after_commit("announcing a new order", announce(ctx, row))
    return OrderCreated(order=await view(ctx, row), claim_code=account.claim_code,
                        claim_expires_at=account.claim_expires_at)


@router.route(OrderGet, roles=["consumer", "technician", "merchant", "admin"])
async def get(ctx: Context, req: OrderGet) -> OrderReply:
    row, seen = await visible_order(ctx, req.order_id)
    return OrderReply(order=await view(ctx, row, seen))


def encode_cursor(row: asyncpg.Record) -> str:
    return base64.urlsafe_b64encode(f"{row['created_at'].isoformat()}|{row['id']}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        at, order_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        return within_range(datetime.fromisoformat(at)), uuid.UUID(order_id)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest(N_("The cursor is not valid.")) from None


@router.route(OrderList, roles=["consumer", "technician", "merchant", "admin"])
async def list_orders(ctx: Context, req: OrderList) -> OrderPage:
    who = ctx.identity
    assert who is not None
    column = {"consumer": "consumer_id", "technician": "technician_id", "merchant": "brand_id"}.get(who.role)
    value: str | list[str] | None = who.user_id if column else None  # admins: every order
    if column == "brand_id":
        value = await catalog.merchant_brands(ctx.services.db, who.user_id)
    rows = await orders.page(ctx.services.db, column=column, value=value, state=req.state,
                             after=decode_cursor(req.cursor) if req.cursor else None, limit=req.limit + 1)
    more = len(rows) > req.limit
    rows = rows[:req.limit]
    if who.role in STAFF:  # the wrapper logs the call, not whose contact it showed
        for row in rows:
            if row["customer_enc"] is not None:
                await record_read(ctx, "customer", "order", str(row["id"]))
    return OrderPage(orders=[await view(ctx, row) for row in rows],
                     next_cursor=encode_cursor(rows[-1]) if more else None)


@router.route(OrderTimeline, roles=["consumer", "technician", "merchant", "admin"])
async def timeline(ctx: Context, req: OrderTimeline) -> Timeline:
    row, seen = await visible_order(ctx, req.order_id)
    if seen is Sight.POOL:
        raise NotFound(N_("No such order."))
    entries = [TimelineEntry(at=e["at"], actor_id=e["actor_id"], actor_role=e["actor_role"],
                             from_state=e["from_state"], to_state=e["to_state"],
                             details=msgspec.json.decode(e["details"]))
               for e in await orders.timeline(ctx.services.db, row["id"])]
    return Timeline(order_id=str(row["id"]), entries=entries)


@router.route(OrderRate, roles=["consumer"])
async def rate(ctx: Context, req: OrderRate) -> OrderReply:
    assert ctx.identity is not None
    order_id = parse_id(req.order_id)
    row = await orders.rate(ctx.services.db, order_id, ctx.identity.user_id, req.stars, req.comment)
    if row is None:
        current, _ = await visible_order(ctx, req.order_id)
        if current["state"] != "completed":
            raise Conflict(N_("Only a completed order can be rated."), current_state=current["state"])
        raise Conflict(N_("This order has been rated already."), current_state=current["state"])
    return OrderReply(order=await view(ctx, row))
