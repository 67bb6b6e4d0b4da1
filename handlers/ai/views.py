"""A stored conversation as its consumer (and admins, in admin.order) see it: turns opened."""

import uuid

import asyncpg
import msgspec

from handlers.services import Services
from protocol.ai import AiAnswer, AiConversation, AiTurn
from storage import ai

ANSWERS = msgspec.json.Decoder(AiAnswer)


async def turn_view(services: Services, conversation_id: uuid.UUID, row: asyncpg.Record) -> AiTurn:
    cipher, number = services.cipher, row["turn"]
    answer = None if row["answer_enc"] is None else ANSWERS.decode(
        await cipher.open(row["answer_enc"], ai.answer_context(conversation_id, number)))
    return AiTurn(turn=number, text=await cipher.decrypt(row["text_enc"], ai.text_context(conversation_id, number)),
                  attachments=[str(a) for a in row["attachments"]], wants_technician=row["wants_technician"],
                  answer=answer, safety=row["safety"], engine=row["engine"],
                  draft_id=str(row["draft_id"]) if row["draft_id"] else None, created_at=row["created_at"],
                  answered_at=row["answered_at"])


async def conversation_view(services: Services, row: asyncpg.Record, with_turns: bool = True) -> AiConversation:
    turns = [await turn_view(services, row["id"], t) for t in await ai.turns(services.db, row["id"])] \
        if with_turns else []
    return AiConversation(
        id=str(row["id"]), consumer_id=row["consumer_id"], brand=row["brand_id"], sku=row["sku_id"],
        locale=row["locale"], state=row["state"], outcome=row["outcome"], answering=row["answering"],
        engine=row["engine"], prompt_tokens=row["prompt_tokens"], completion_tokens=row["completion_tokens"],
        cost_usd=row["cost_usd"], order_id=str(row["order_id"]) if row["order_id"] else None,
        created_at=row["created_at"], updated_at=row["updated_at"], turns=turns)


async def stored_conversation(services: Services, conversation_id: uuid.UUID) -> AiConversation | None:
    """A conversation by id, whoever's (for staff views: admin.order)."""
    row = await ai.conversation(services.db, conversation_id)
    return None if row is None else await conversation_view(services, row)
