"""The AI troubleshooter's tables: conversations and their turns (texts and answers sealed by the
caller), order drafts, the guides' full-text search, and the per-consumer quota in Redis."""

import time
import uuid
from datetime import datetime
from typing import Literal, TypeAlias

import asyncpg
import redis.asyncio as aioredis

Db: TypeAlias = asyncpg.Pool | asyncpg.Connection
# An answer in progress for longer than this is taken as lost (its process stopped).
STALE_ANSWER = "2 minutes"


def text_context(conversation_id: uuid.UUID, turn: int) -> str:
    return f"ai_turns.text:{conversation_id}:{turn}"


def answer_context(conversation_id: uuid.UUID, turn: int) -> str:
    return f"ai_turns.answer:{conversation_id}:{turn}"


def draft_context(draft_id: uuid.UUID) -> str:
    return f"ai_drafts.draft:{draft_id}"


def summary_context(order_id: uuid.UUID) -> str:
    return f"orders.ai_summary:{order_id}"


async def product(db: Db, brand: str, sku: str) -> asyncpg.Record | None:
    """The SKU of the brand with its names; `retired` when the brand, the SKU or every price is."""
    return await db.fetchrow(
        "SELECT s.category, s.name, s.names, b.name AS brand_name, (b.retired OR s.retired OR NOT EXISTS ("
        " SELECT 1 FROM catalog_prices p WHERE p.sku_id = s.id AND NOT p.retired)) AS retired"
        " FROM skus s JOIN brands b ON b.id = s.brand_id WHERE s.id = $1 AND s.brand_id = $2", sku, brand)


async def service_types(db: Db) -> list[str]:
    rows: list[asyncpg.Record] = await db.fetch("SELECT id FROM service_types ORDER BY id")
    return [r["id"] for r in rows]


async def guides(db: Db, *, brand: str, sku: str, category: str, locale: str, words: str, latest: str,
                 limit: int = 3) -> list[asyncpg.Record]:
    """The guides that apply to the SKU (its own, its brand's for all or its category, the
    category's), in the locale, ranked by ts_rank against the consumer's words; the more specific
    first among equals. `shared`: lexemes the latest words share with the guide's `call_when`."""
    rows: list[asyncpg.Record] = await db.fetch(
        "SELECT title, symptoms, checks, call_when, likely_parts, urgency,"
        " ts_rank(search, ai_query($4, $5)) AS rank, ai_shared($4, $6, call_when) AS shared"
        " FROM catalog_guides WHERE locale = $4 AND jsonb_array_length(checks) > 0"
        " AND (sku_id = $2 OR (sku_id IS NULL AND brand_id = $1 AND (category IS NULL OR category = $3))"
        " OR (brand_id IS NULL AND category = $3))"
        " ORDER BY rank DESC, (sku_id IS NOT NULL) DESC, (brand_id IS NOT NULL) DESC, updated_at DESC LIMIT $7",
        brand, sku, category, locale, words, latest, limit)
    return rows


async def start(conn: asyncpg.Connection, conversation_id: uuid.UUID, *, consumer_id: str, brand: str, sku: str,
                locale: str, text_enc: bytes, attachments: list[uuid.UUID]) -> asyncpg.Record:
    """A new conversation with its first turn, its answer in progress."""
    row: asyncpg.Record = await conn.fetchrow(
        "INSERT INTO ai_conversations (id, consumer_id, brand_id, sku_id, locale, answering_since)"
        " VALUES ($1, $2, $3, $4, $5, clock_timestamp()) RETURNING *",
        conversation_id, consumer_id, brand, sku, locale)
    await conn.execute("INSERT INTO ai_turns (conversation_id, turn, text_enc, attachments) VALUES ($1, 1, $2, $3)",
                       conversation_id, text_enc, attachments)
    return row


async def next_turn(conn: asyncpg.Connection, conversation_id: uuid.UUID, consumer_id: str) -> int | None:
    """The new turn's number when the conversation is the consumer's, active, and has no answer in
    progress (one statement: two replies at once, one wins); None otherwise."""
    turn: int | None = await conn.fetchval(
        "UPDATE ai_conversations SET turns = turns + 1, answering_since = clock_timestamp(),"
        " updated_at = clock_timestamp() WHERE id = $1 AND consumer_id = $2 AND state = 'active'"
        f" AND (answering_since IS NULL OR answering_since < clock_timestamp() - interval '{STALE_ANSWER}')"
        " RETURNING turns", conversation_id, consumer_id)
    return turn


async def add_turn(conn: asyncpg.Connection, conversation_id: uuid.UUID, turn: int, *, text_enc: bytes,
                   attachments: list[uuid.UUID], wants_technician: bool) -> None:
    await conn.execute(
        "INSERT INTO ai_turns (conversation_id, turn, text_enc, attachments, wants_technician)"
        " VALUES ($1, $2, $3, $4, $5)", conversation_id, turn, text_enc, attachments, wants_technician)


async def images(db: Db, ids: list[uuid.UUID]) -> list[asyncpg.Record]:
    """The image attachments among `ids`: their blob names and types."""
    rows: list[asyncpg.Record] = await db.fetch(
        "SELECT id, content_type, sha256, sealed FROM attachments WHERE id = ANY($1::uuid[])"
        " AND content_type LIKE 'image/%'", ids)
    return rows


async def conversation(db: Db, conversation_id: uuid.UUID) -> asyncpg.Record | None:
    return await db.fetchrow(
        "SELECT *, answering_since IS NOT NULL AND answering_since >= clock_timestamp() -"
        f" interval '{STALE_ANSWER}' AS answering FROM ai_conversations WHERE id = $1", conversation_id)


async def turns(db: Db, conversation_id: uuid.UUID) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await db.fetch("SELECT * FROM ai_turns WHERE conversation_id = $1 ORDER BY turn",
                                                conversation_id)
    return rows


# A draft may be ordered from while its conversation is active or ended `give_up` (the consumer gave up on
# doing it themselves: a technician is what is left); ended `fixed` or `ordered`, it may not.
ORDERABLE = "(c.state = 'active' OR c.outcome = 'give_up')"


async def answered(db: asyncpg.Pool, conversation_id: uuid.UUID, turn: int, *, answer_enc: bytes, safety: str,
                   engine: str | None, fallback: str | None, prompt_tokens: int, completion_tokens: int,
                   cost_usd: float, draft: tuple[uuid.UUID, str, bytes] | None) -> uuid.UUID | None:
    """Store a turn's answer and end the answer in progress; its draft (id, service type, sealed draft)
    too while the conversation is orderable (an answer that comes after `ai.end fixed` keeps none).
    The stored draft's id, if any."""
    async with db.acquire() as conn, conn.transaction():
        draft_id: uuid.UUID | None = None
        if draft is not None:
            draft_id = await conn.fetchval(
                "INSERT INTO ai_drafts (id, conversation_id, turn, consumer_id, service_type, draft_enc)"
                " SELECT $1, c.id, $3, c.consumer_id, $4, $5 FROM ai_conversations c"
                f" WHERE c.id = $2 AND {ORDERABLE} RETURNING id",
                draft[0], conversation_id, turn, draft[1], draft[2])
        await conn.execute(
            "UPDATE ai_turns SET answer_enc = $3, safety = $4, engine = $5, fallback = $6, draft_id = $7,"
            " answered_at = clock_timestamp() WHERE conversation_id = $1 AND turn = $2",
            conversation_id, turn, answer_enc, safety, engine, fallback, draft_id)
        await conn.execute(
            "UPDATE ai_conversations SET answering_since = NULL, engine = coalesce($3, engine),"
            " prompt_tokens = prompt_tokens + $4, completion_tokens = completion_tokens + $5,"
            " cost_usd = cost_usd + $6, updated_at = clock_timestamp() WHERE id = $1 AND turns = $2",
            conversation_id, turn, engine, prompt_tokens, completion_tokens, cost_usd)
        return draft_id


async def abandon(db: Db, conversation_id: uuid.UUID, turn: int) -> None:
    """The turn's answer will not come: the conversation takes a reply again (the turn stays unanswered)."""
    await db.execute("UPDATE ai_conversations SET answering_since = NULL WHERE id = $1 AND turns = $2",
                     conversation_id, turn)


async def end(db: Db, conversation_id: uuid.UUID, consumer_id: str, outcome: str) -> asyncpg.Record | None:
    return await db.fetchrow(
        "UPDATE ai_conversations SET state = 'ended', outcome = $3, updated_at = clock_timestamp()"
        " WHERE id = $1 AND consumer_id = $2 AND state = 'active' RETURNING *,"
        f" answering_since IS NOT NULL AND answering_since >= clock_timestamp() - interval '{STALE_ANSWER}'"
        " AS answering", conversation_id, consumer_id, outcome)


async def page(db: Db, consumer_id: str, after: tuple[datetime, uuid.UUID] | None, limit: int) -> list[asyncpg.Record]:
    """The consumer's conversations newest first, keyset-paginated on (created_at, id)."""
    at, last = after or (None, None)
    rows: list[asyncpg.Record] = await db.fetch(
        "SELECT *, answering_since IS NOT NULL AND answering_since >= clock_timestamp() -"
        f" interval '{STALE_ANSWER}' AS answering FROM ai_conversations WHERE consumer_id = $1"
        " AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3::uuid))"
        " ORDER BY created_at DESC, id DESC LIMIT $4", consumer_id, at, last, limit)
    return rows


async def draft(db: Db, draft_id: uuid.UUID, consumer_id: str) -> asyncpg.Record | None:
    """The consumer's draft with its product and `orderable` (see ORDERABLE)."""
    return await db.fetchrow(
        f"SELECT d.*, c.brand_id, c.sku_id, {ORDERABLE} AS orderable FROM ai_drafts d"
        " JOIN ai_conversations c ON c.id = d.conversation_id WHERE d.id = $1 AND d.consumer_id = $2",
        draft_id, consumer_id)


async def use_draft(conn: asyncpg.Connection, draft_id: uuid.UUID, consumer_id: str,
                    order_id: uuid.UUID) -> Literal["used", "ordered", "ended"]:
    """In the order's transaction: mark the draft used by the order and its conversation ordered. `ordered`
    when another order used it first, `ended` when the conversation ended meanwhile (`ai.end fixed`); the
    conversation's row is locked first, so an `ai.end` at the same moment either comes before or finds it
    ordered."""
    row = await conn.fetchrow(
        f"SELECT c.id, {ORDERABLE} AS orderable, d.order_id FROM ai_drafts d"
        " JOIN ai_conversations c ON c.id = d.conversation_id WHERE d.id = $1 AND d.consumer_id = $2"
        " FOR UPDATE", draft_id, consumer_id)
    if row is None or row["order_id"] is not None:
        return "ordered"
    if not row["orderable"]:
        return "ended"
    await conn.execute("UPDATE ai_drafts SET order_id = $2 WHERE id = $1", draft_id, order_id)
    await conn.execute(
        "UPDATE ai_conversations SET state = 'ended', outcome = 'ordered', order_id = $2,"
        " updated_at = clock_timestamp() WHERE id = $1", row["id"], order_id)
    return "used"


async def take_quota(redis: aioredis.Redis, user_id: str, limit: int, window_s: float = 3600.0) -> float | None:
    """Count one call against the user's rolling window; None when within `limit`, else the
    seconds until the oldest call leaves the window (the call is then not counted)."""
    key, now, member = f"ai:quota:{user_id}", time.time(), uuid.uuid4().hex
    async with redis.pipeline(transaction=True) as pipe:
        pipe.zremrangebyscore(key, 0, now - window_s)
        pipe.zadd(key, {member: now})
        pipe.zcard(key)
        pipe.zrange(key, 0, 0, withscores=True)
        pipe.expire(key, int(window_s) + 1)
        _, _, count, oldest, _ = await pipe.execute()
    if count <= limit:
        return None
    await redis.zrem(key, member)
    return max(0.001, oldest[0][1] + window_s - now if oldest else window_s)
