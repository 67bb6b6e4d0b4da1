"""The "Help with AI" operations: ai.start, ai.reply, ai.end, ai.get, ai.list. A turn's answer is
made by a task (handlers.ai.answering) that outlives the session; the reply says which turn."""

import base64
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime

import asyncpg

from handlers.admin import feed
from handlers.ai.answering import Deliver, answer_turn, engine_for
from handlers.ai.safety import hazard_in
from handlers.ai.views import conversation_view
from handlers.context import Context
from handlers.errors import N_, BadRequest, Conflict, NotFound, RateLimited
from handlers.orders.orders import check_attachments
from handlers.routing import Router
from handlers.services import Services
from protocol.ai import (
    AiAnswered,
    AiConversationReply,
    AiEnd,
    AiGet,
    AiList,
    AiPage,
    AiReply,
    AiStart,
    AiTurnStarted,
)
from protocol.bounds import within_range
from storage import ai

__all__ = ["engine_for", "router"]
log = logging.getLogger(__name__)
router = Router()


def parse_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound(N_("No such conversation.")) from None


async def owned(ctx: Context, conversation_id: str) -> asyncpg.Record:
    """The caller's conversation; `not_found` alike for another consumer's and a missing one."""
    assert ctx.identity is not None
    row = await ai.conversation(ctx.services.db, parse_id(conversation_id))
    if row is None or row["consumer_id"] != ctx.identity.user_id:
        raise NotFound(N_("No such conversation."))
    return row


async def take_quota(ctx: Context) -> None:
    assert ctx.identity is not None
    wait = await ai.take_quota(ctx.services.redis, ctx.identity.user_id, ctx.services.ai_rules.quota_per_hour)
    if wait is not None:
        raise RateLimited(wait)


Told = Callable[[AiAnswered], Awaitable[None]]  # what the live feed is told of an answer


async def run(services: Services, deliver: Deliver, stream_to: Deliver, told: Told, conversation_id: uuid.UUID,
              turn: int, hazard: bool = False) -> None:
    """Answer the turn in one of the process's answering slots; a turn whose words tell of a hazard takes none:
    its fixed safety answer asks no engine, and must not wait behind answers held up by a slow provider."""
    try:
        async with contextlib.nullcontext() if hazard else services.ai_runtime.slots(services.ai_rules.max_answering):
            answered = await answer_turn(services, deliver, stream_to, conversation_id, turn)
    except Exception:  # the turn stays unanswered; answer_turn freed the conversation if it could
        log.exception("the answer to %s turn %d was lost", conversation_id, turn)
    else:
        await told(answered)


def answer_later(ctx: Context, brand: str, conversation_id: uuid.UUID, turn: int, said: str) -> None:
    """Answer in a task of this process; the live feed learns each answer's verdict, safety and engine
    (never its words: the back office reads those in admin.order, logged)."""
    assert ctx.identity is not None
    consumer_id = ctx.identity.user_id

    async def told(answered: AiAnswered) -> None:
        how = f"safety {answered.safety}" if answered.safety != "none" else f"turn {answered.turn}"
        await feed.publish(ctx, "ai.conversation", brand=brand, user_id=consumer_id, state=answered.answer.verdict,
                           conversation_id=str(conversation_id), detail=how)

    answering = run(ctx.services, ctx.deliver_to_user, ctx.stream_to_user, told, conversation_id, turn,
                    hazard_in(said))
    ctx.services.ai_runtime.spawn(answering, name=f"ai-answer-{conversation_id}-{turn}")


@router.route(AiStart, roles=["consumer"])
async def start(ctx: Context, req: AiStart) -> AiTurnStarted:
    who = ctx.identity
    assert who is not None
    db, cipher = ctx.services.db, ctx.services.cipher
    product = await ai.product(db, req.brand, req.sku)
    if product is None:  # what order.create says of the same product
        raise BadRequest(N_("No such product and service in the catalog."))
    if product["retired"]:
        raise Conflict(N_("This product or service is retired and can no longer be ordered."),
                       current_state="retired")
    attachments = await check_attachments(ctx, req.attachments, who.user_id)
    await take_quota(ctx)
    locale = ctx.negotiate_locale(req.locale) if req.locale else who.locale
    conversation_id = uuid.uuid4()
    async with db.acquire() as conn, conn.transaction():
        await ai.start(conn, conversation_id, consumer_id=who.user_id, brand=req.brand, sku=req.sku, locale=locale,
                       text_enc=cipher.encrypt(req.description, ai.text_context(conversation_id, 1)),
                       attachments=attachments)
    await feed.publish(ctx, "ai.conversation", brand=req.brand, user_id=who.user_id, state="active",
                       conversation_id=str(conversation_id))
    answer_later(ctx, req.brand, conversation_id, 1, req.description)
    return AiTurnStarted(conversation_id=str(conversation_id), turn=1)


def busy(row: asyncpg.Record) -> Conflict:
    if row["state"] != "active":
        return Conflict(N_("This conversation has ended."), current_state=row["state"])
    return Conflict(N_("The assistant is still answering: wait for its answer."), current_state="answering")


@router.route(AiReply, roles=["consumer"])
async def reply(ctx: Context, req: AiReply) -> AiTurnStarted:
    who = ctx.identity
    assert who is not None
    row = await owned(ctx, req.conversation_id)
    attachments = await check_attachments(ctx, req.attachments, who.user_id)
    if row["state"] != "active" or row["answering"]:
        raise busy(row)
    await take_quota(ctx)
    async with ctx.services.db.acquire() as conn, conn.transaction():
        turn = await ai.next_turn(conn, row["id"], who.user_id)
        if turn is None:  # another reply won meanwhile, or the conversation ended
            now = await ai.conversation(conn, row["id"])
            assert now is not None
            raise busy(now)
        await ai.add_turn(conn, row["id"], turn, attachments=attachments, wants_technician=req.wants_technician,
                          text_enc=ctx.services.cipher.encrypt(req.text, ai.text_context(row["id"], turn)))
    answer_later(ctx, row["brand_id"], row["id"], turn, req.text)
    return AiTurnStarted(conversation_id=str(row["id"]), turn=turn)


@router.route(AiEnd, roles=["consumer"])
async def end(ctx: Context, req: AiEnd) -> AiConversationReply:
    assert ctx.identity is not None
    row = await owned(ctx, req.conversation_id)
    ended = await ai.end(ctx.services.db, row["id"], ctx.identity.user_id, req.outcome)
    if ended is None:
        raise Conflict(N_("This conversation has ended."), current_state="ended")
    await feed.publish(ctx, "ai.conversation", brand=ended["brand_id"], user_id=ctx.identity.user_id,
                       state=req.outcome, conversation_id=str(ended["id"]))
    return AiConversationReply(conversation=await conversation_view(ctx.services, ended))


@router.route(AiGet, roles=["consumer"])
async def get(ctx: Context, req: AiGet) -> AiConversationReply:
    row = await owned(ctx, req.conversation_id)
    return AiConversationReply(conversation=await conversation_view(ctx.services, row))


def encode_cursor(row: asyncpg.Record) -> str:
    return base64.urlsafe_b64encode(f"{row['created_at'].isoformat()}|{row['id']}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        at, conversation_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        return within_range(datetime.fromisoformat(at)), uuid.UUID(conversation_id)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest(N_("The cursor is not valid.")) from None


@router.route(AiList, roles=["consumer"])
async def list_conversations(ctx: Context, req: AiList) -> AiPage:
    assert ctx.identity is not None
    rows = await ai.page(ctx.services.db, ctx.identity.user_id, decode_cursor(req.cursor) if req.cursor else None,
                         req.limit + 1)
    more = len(rows) > req.limit
    rows = rows[:req.limit]
    return AiPage(conversations=[await conversation_view(ctx.services, r, with_turns=False) for r in rows],
                  next_cursor=encode_cursor(rows[-1]) if more else None)
