"""Oversight of orders: the back office's order board (`admin.orders`: search, filters, sorts,
keyset pages with a total, CSV export) and one order whole (`admin.order`). Admins see every
brand, merchants their brands' orders only: another brand's order is `not_found`, like a missing one."""

import base64
import binascii
import csv
import io
import re
import uuid
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from handlers.admin.log import record_read
from handlers.ai.views import stored_conversation as ai_conversation
from handlers.catalog.scope import check_brand, scope
from handlers.chat.rooms import message
from handlers.context import Context
from handlers.errors import N_, BadRequest
from handlers.orders.views import view, visible_order
from handlers.routing import Router
from protocol.bounds import within_range
from protocol.orders import TimelineEntry
from protocol.oversight import (
    AdminOrder,
    AdminOrders,
    ChatEvent,
    MoneyJob,
    OrderBoard,
    OrderFile,
    OrderRow,
    PaymentInfo,
    Photo,
    StripeEvent,
    TransferInfo,
)
from storage import chat, orders, oversight, payments

router = Router()
TRANSCRIPT_MESSAGES = 100  # the newest; older ones page back with chat.history (a reply stays well under 1 MiB)
ID_PREFIX = re.compile(r"[0-9a-fA-F-]{1,36}")
CSV_COLUMNS = tuple(OrderRow.__struct_fields__)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what spreadsheets would evaluate or mangle


# -- the board ----------------------------------------------------------------------------------
def encode_cursor(sort: str, key: datetime, order_id: str) -> str:
    raw = f"{sort}|{key.isoformat()}|{order_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, sort: str) -> tuple[datetime, uuid.UUID]:
    """The (sort key, id) the previous page ended at; `bad_request` for a cursor of another sort."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        made_for, key, order_id = raw.split("|")
        if made_for != sort:
            raise ValueError(made_for)
        return within_range(datetime.fromisoformat(key)), uuid.UUID(order_id)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadRequest(N_("This cursor does not belong to this search: start again without it.")) from None


def id_range(q: str) -> tuple[uuid.UUID, uuid.UUID] | None:
    """The ids an order id's first characters cover (None when `q` cannot begin an order id)."""
    if not ID_PREFIX.fullmatch(q):
        return None
    digits = q.replace("-", "").lower()
    if not digits or len(digits) > 32:
        return None
    return uuid.UUID(digits.ljust(32, "0")), uuid.UUID(digits.ljust(32, "f"))


def as_row(r: asyncpg.Record) -> OrderRow:
    return OrderRow(id=str(r["id"]), state=r["state"], brand=r["brand_id"], sku=r["sku_id"],
                    service_type=r["service_type"], consumer_id=r["consumer_id"], technician_id=r["technician_id"],
                    price_cents=r["price_cents"], currency=r["currency"], payment_state=r["payment_state"],
                    payout_state=r["payout_state"], rating=r["rating"], created_at=r["created_at"],
                    updated_at=r["updated_at"], state_since=r["state_since"])


def cell(value: Any) -> str | int:
    """A CSV cell: numbers as they are, text with a leading quote where a spreadsheet would
    otherwise read a formula (CSV injection), empty for null."""
    if value is None:
        return ""
    if isinstance(value, int):
        return value
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def as_csv(rows: list[OrderRow]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")  # RFC 4180: CRLF, quotes doubled, quoted where needed
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow([cell(getattr(row, column)) for column in CSV_COLUMNS])
    return out.getvalue()


@router.route(AdminOrders, roles=["merchant", "admin"])
async def board(ctx: Context, req: AdminOrders) -> OrderBoard:
    brands = await scope(ctx)
    if req.brand is not None:
        check_brand(brands, req.brand)  # another brand: `not_found`, like a brand that does not exist
    q = req.q.strip() if req.q is not None else None
    if q is not None and not q:
        raise BadRequest(N_("Search for an order id or a SKU."))
    filters = oversight.Filters(
        brands=brands, brand=req.brand, states=req.state, sku=req.sku, technician_id=req.technician_id,
        consumer_id=req.consumer_id, created_from=req.created_from, created_to=req.created_to,
        payment_states=req.payment_state, payout_states=req.payout_state, stuck_minutes=req.stuck_minutes,
        id_range=id_range(q) if q else None, q_sku=q)
    sort, descending = req.sort.removeprefix("-"), req.sort.startswith("-")
    after = decode_cursor(req.cursor, req.sort) if req.cursor else None
    total, rows = await oversight.board(ctx.services.db, filters, sort=sort, descending=descending, after=after,
                                        limit=req.limit + 1)
    page = [as_row(r) for r in rows[:req.limit]]
    last = rows[req.limit - 1] if len(rows) > req.limit else None
    cursor = encode_cursor(req.sort, last[sort], str(last["id"])) if last is not None else None
    if req.format == "csv":
        return OrderBoard(orders=[], total=total, next_cursor=cursor, csv=as_csv(page))
    return OrderBoard(orders=page, total=total, next_cursor=cursor)


# -- one order whole ----------------------------------------------------------------------------
@router.route(AdminOrder, roles=["merchant", "admin"])
async def order_file(ctx: Context, req: AdminOrder) -> OrderFile:
    who = ctx.identity
    assert who is not None
    row, _ = await visible_order(ctx, req.order_id)  # merchants: their brands' only, else `not_found`
    admin, db, order_id = who.role == "admin", ctx.services.db, row["id"]
    derived = await oversight.board_row(db, order_id)
    assert derived is not None
    timeline = [TimelineEntry(at=e["at"], actor_id=e["actor_id"], actor_role=e["actor_role"],
                              from_state=e["from_state"], to_state=e["to_state"],
                              details=msgspec.json.decode(e["details"]))
                for e in await orders.timeline(db, order_id)]
    chat_events = []
    for m in await oversight.system_messages(db, order_id):
        shown = await message(ctx, m, who.locale)
        chat_events.append(ChatEvent(seq=m["seq"], code=m["system_code"], text=shown.text, sent_at=m["created_at"]))
    paid, sent = await payments.payment(db, order_id), await payments.transfer(db, order_id)
    objects = [v for v in (paid and paid["intent_id"], paid and paid["charge_id"], sent and sent["transfer_id"]) if v]
    found = await oversight.attachments(db, list(row["completion_attachments"]))
    photos = [Photo(attachment_id=str(a), content_type=found[a]["content_type"] if a in found else None,
                    size=found[a]["size"] if a in found else None,
                    url=ctx.services.public_url.to(f"/attachments/{a}")) for a in row["completion_attachments"]]
    reply = OrderFile(
        order=await view(ctx, row), payout_state=derived["payout_state"], state_since=derived["state_since"],
        timeline=timeline, chat_events=chat_events, payment=_payment(paid, admin),
        stripe_events=[StripeEvent(id=e["id"], type=e["type"], created=e["created"], source=e["source"],
                                   received_at=e["received_at"], applied_at=e["applied_at"])
                       for e in await oversight.stripe_events(db, objects)] if admin and objects else [],
        transfer=None if sent is None else TransferInfo(
            technician_id=sent["technician_id"], transfer_id=sent["transfer_id"] if admin else None,
            amount_cents=sent["amount_cents"], reversed_cents=sent["reversed_cents"], currency=sent["currency"],
            created_at=sent["created_at"]),
        money_jobs=[MoneyJob(id=j["id"], kind=j["kind"], step=j["step"], state=j["state"], attempts=j["attempts"],
                             amount_cents=j["amount_cents"], last_error=j["last_error"] if admin else None,
                             due_at=j["due_at"], result=j["result"] if admin else None,  # Stripe's ids and words
                             note=j["note"], created_at=j["created_at"],
                             updated_at=j["updated_at"]) for j in await payments.jobs_of(db, order_id)],
        completion_photos=photos)
    if row["customer_enc"] is not None:  # a merchant's order: `order.customer` shows their contact
        await record_read(ctx, "customer", "order", str(order_id))
    if admin:
        newest = await chat.page(db, order_id, before=None, after=None, limit=TRANSCRIPT_MESSAGES)
        shown_rows = newest[-TRANSCRIPT_MESSAGES:]
        reply.transcript = [await message(ctx, m, who.locale) for m in shown_rows]
        reply.transcript_more = len(newest) > TRANSCRIPT_MESSAGES
        await record_read(ctx, "transcript", "order", str(order_id))
        if row["ai_conversation_id"] is not None:
            reply.ai = await ai_conversation(ctx.services, row["ai_conversation_id"])
            await record_read(ctx, "ai_conversation", "order", str(order_id))
    return reply


def _payment(row: asyncpg.Record | None, admin: bool) -> PaymentInfo | None:
    if row is None:
        return None
    return PaymentInfo(policy=row["policy"], amount_cents=row["amount_cents"], currency=row["currency"],
                       captured_cents=row["captured_cents"], refunded_cents=row["refunded_cents"],
                       last_error=row["last_error"], intent_id=row["intent_id"] if admin else None,
                       charge_id=row["charge_id"] if admin else None, created_at=row["created_at"],
                       updated_at=row["updated_at"])
