"""Order drafts from technician_needed answers, as order.create uses them: the caller's own,
unused; the order links the conversation and keeps the draft's summary sealed, which is all its
technician sees of the conversation (`ai_summary` in order.get)."""

import uuid
from dataclasses import dataclass

import asyncpg
import msgspec

from handlers.context import Context
from handlers.errors import N_, Conflict, NotFound
from protocol.ai import AiDraft, AiSummary
from storage import ai

ENDED = N_("The conversation ended as fixed: start a new one, or order without the draft.")


@dataclass(frozen=True, slots=True)
class Draft:
    id: uuid.UUID
    conversation_id: uuid.UUID
    brand: str
    sku: str
    service_type: str
    draft: AiDraft


async def draft_for(ctx: Context, draft_id: str) -> Draft:
    """The caller's unused draft; `not_found` alike for another's and a missing one."""
    assert ctx.identity is not None
    try:
        key = uuid.UUID(draft_id)
    except ValueError:
        raise NotFound(N_("No such draft.")) from None
    row = await ai.draft(ctx.services.db, key, ctx.identity.user_id)
    if row is None:
        raise NotFound(N_("No such draft."))
    if row["order_id"] is not None:
        raise Conflict(N_("This draft has been ordered already."), current_state="ordered")
    if not row["orderable"]:
        raise Conflict(ENDED, current_state="ended")
    found = msgspec.json.decode(await ctx.services.cipher.open(row["draft_enc"], ai.draft_context(key)), type=AiDraft)
    return Draft(key, row["conversation_id"], row["brand_id"], row["sku_id"], row["service_type"], found)


def seal_summary(ctx: Context, order_id: uuid.UUID, draft: Draft) -> bytes:
    d = draft.draft
    summary = AiSummary(summary=d.summary, tried=d.tried, likely_parts=d.likely_parts, urgency=d.urgency)
    return ctx.services.cipher.seal(msgspec.json.encode(summary), ai.summary_context(order_id))


async def use(conn: asyncpg.Connection, ctx: Context, draft: Draft, order_id: uuid.UUID) -> None:
    """In the order's transaction: the draft is used and the conversation `ordered`, or `conflict`
    when another order took the draft meanwhile or the conversation ended as fixed."""
    assert ctx.identity is not None
    used = await ai.use_draft(conn, draft.id, ctx.identity.user_id, order_id)
    if used == "ordered":
        raise Conflict(N_("This draft has been ordered already."), current_state="ordered")
    if used == "ended":
        raise Conflict(ENDED, current_state="ended")


async def summary_of(ctx: Context, row: asyncpg.Record) -> AiSummary | None:
    if row.get("ai_summary_enc") is None:
        return None
    return msgspec.json.decode(await ctx.services.cipher.open(row["ai_summary_enc"], ai.summary_context(row["id"])),
                               type=AiSummary)
