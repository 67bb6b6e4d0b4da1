"""Order chat rooms: send (idempotent, gap-free sequence), history, sync after a reconnect, read
receipts, typing, and the system messages that narrate the order's progress."""

import time
import uuid

import asyncpg

from handlers.admin.log import record_read
from handlers.chat.writer import members_of as members
from handlers.chat.writer import message as render
from handlers.context import Context
from handlers.errors import N_, BadRequest, Forbidden, NotFound
from handlers.orders.orders import check_attachments
from handlers.orders.texts import SYSTEM_TEXT
from handlers.routing import Router
from protocol.chat import (
    ChatHistory,
    ChatMessage,
    ChatPage,
    ChatRead,
    ChatReadEvent,
    ChatRooms,
    ChatSend,
    ChatSent,
    ChatSync,
    ChatSynced,
    ChatTyping,
    ChatTypingEvent,
    Room,
    Rooms,
    RoomSync,
)
from protocol.frames import Empty
from storage import chat, orders
from storage.db import parse_uuid

router = Router()
TYPING_EVERY_S = 2.0


async def room(ctx: Context, order_id: str, *, write: bool) -> asyncpg.Record:
    """The order whose room the caller may use: its members read and write, admins only read
    (writing is `forbidden`). Anyone else gets `not_found`, like an order that does not exist."""
    who = ctx.identity
    assert who is not None
    try:
        order = await orders.get(ctx.services.db, uuid.UUID(order_id))
    except ValueError:
        order = None
    if order is not None and (who.user_id in members(order) or (who.role == "admin" and not write)):
        return order
    if order is not None and who.role == "admin":
        raise Forbidden(N_("You are not a member of this chat."))
    raise NotFound(N_("No such order."))


async def message(ctx: Context, row: asyncpg.Record, locale: str) -> ChatMessage:
    """As the caller sees it: admins read a hidden message's kept text, members do not."""
    return await render(ctx.services, row, locale, reveal=ctx.identity is not None and ctx.identity.role == "admin")


def _locale(ctx: Context) -> str:
    return ctx.identity.locale if ctx.identity else "en"


@router.route(ChatSend, roles=["consumer", "technician"])
async def send(ctx: Context, req: ChatSend) -> ChatSent:
    who = ctx.identity
    assert who is not None
    if not (req.text and req.text.strip()) and not req.attachments:
        raise BadRequest(N_("A message needs text or attachments."))
    try:
        order_id = parse_uuid(req.order_id)
    except ValueError:
        raise NotFound(N_("No such order.")) from None
    attachments = await check_attachments(ctx, req.attachments, who.user_id) if req.attachments else []
    draft = chat.Draft(order_id, who.user_id, who.role, req.client_id, "text", req.text, tuple(attachments))
    row, duplicate, shown = await ctx.services.chat.post(draft)  # the writer checks the sender is a member
    if shown is None:  # a duplicate: as stored
        shown = await render(ctx.services, row, _locale(ctx))
    return ChatSent(message=shown, duplicate=duplicate)


async def post_system(ctx: Context, order: asyncpg.Record, code: str | None = None) -> None:
    """Tell the room what happened to the order (its new state, or `code`: what staff did), in
    each member's language."""
    code = code or order["state"]
    if code in SYSTEM_TEXT:
        assert ctx.identity is not None
        draft = chat.Draft(order["id"], ctx.identity.user_id, "system", None, "system", system_code=code)
        await ctx.services.chat.post(draft, members(order))


@router.route(ChatHistory, roles=["consumer", "technician", "admin"])
async def history(ctx: Context, req: ChatHistory) -> ChatPage:
    if req.before_seq is not None and req.after_seq is not None:
        raise BadRequest(N_("Give before_seq or after_seq, not both."))
    order = await room(ctx, req.order_id, write=False)
    rows = await chat.page(ctx.services.db, order["id"], before=req.before_seq, after=req.after_seq,
                           limit=req.limit)
    more = len(rows) > req.limit
    rows = rows[:req.limit] if req.after_seq is not None else rows[-req.limit:]
    if ctx.identity is not None and ctx.identity.role == "admin":  # not a member: a read of someone's words
        await record_read(ctx, "transcript", "order", str(order["id"]))
    return ChatPage(order_id=str(order["id"]), messages=[await message(ctx, r, _locale(ctx)) for r in rows],
                    has_more=more)


@router.route(ChatSync, roles=["consumer", "technician"])
async def sync(ctx: Context, req: ChatSync) -> ChatSynced:
    who = ctx.identity
    assert who is not None
    mine = await chat.rooms_of(ctx.services.db, who.user_id, who.role)
    positions = {r["room"]: req.positions.get(str(r["room"]), 0) for r in mine}
    found: dict[uuid.UUID, list[asyncpg.Record]] = {}
    for row in await chat.missed(ctx.services.db, positions, req.limit):
        found.setdefault(row["order_id"], []).append(row)
    return ChatSynced(rooms=[RoomSync(order_id=str(room_id), messages=[await message(ctx, r, who.locale)
                                                                          for r in rows[:req.limit]],
                                      has_more=len(rows) > req.limit) for room_id, rows in found.items()])


@router.route(ChatRead, roles=["consumer", "technician"])
async def read(ctx: Context, req: ChatRead) -> Empty:
    who = ctx.identity
    assert who is not None
    order = await room(ctx, req.order_id, write=True)
    seq = await chat.mark_read(ctx.services.db, order["id"], who.user_id, req.seq)
    others = [m for m in members(order) if m != who.user_id]
    if others:
        await ctx.deliver_many([(others, ChatReadEvent(order_id=str(order["id"]), user_id=who.user_id, seq=seq))])
    return Empty()


@router.route(ChatRooms, roles=["consumer", "technician"])
async def rooms(ctx: Context, req: ChatRooms) -> Rooms:
    who = ctx.identity
    assert who is not None
    listed = []
    for row in await chat.rooms_of(ctx.services.db, who.user_id, who.role):
        last = await message(ctx, row, who.locale) if row["seq"] is not None else None
        listed.append(Room(order_id=str(row["room"]), state=row["state"], last_message=last,
                           unread=row["unread"], read_seq=row["read_seq"]))
    return Rooms(rooms=listed)


@router.route(ChatTyping, roles=["consumer", "technician"])
async def typing(ctx: Context, req: ChatTyping) -> Empty:
    who = ctx.identity
    assert who is not None
    last: dict[str, float] = ctx.memo.setdefault("typing", {})
    now = time.monotonic()
    if now - last.get(req.order_id, 0.0) < TYPING_EVERY_S:
        return Empty()  # too soon: dropped, not an error (apps send it on every keystroke)
    order = await room(ctx, req.order_id, write=True)
    last[req.order_id] = now
    others = [m for m in members(order) if m != who.user_id]
    if others:
        await ctx.deliver_many([(others, ChatTypingEvent(order_id=str(order["id"]), user_id=who.user_id))])
    return Empty()
