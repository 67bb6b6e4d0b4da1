"""Making one turn's answer, as a task that outlives the session that asked: the dialogue is read
back from storage, the safety gate looks at the consumer's words before any engine, the engine
streams its text (each line through the gate) as `ai.delta` to every session of the consumer, and
the gated structured answer is stored sealed and sent as `ai.answer`."""

import dataclasses
import importlib
import logging
import uuid
from collections.abc import Awaitable, Callable

import asyncpg
import msgspec

from handlers.ai.engine import Dialogue, Engine, Photo, Result, Turn, fit, render
from handlers.ai.guides import find
from handlers.ai.offline import OfflineEngine, Translate, draft, escalation, pieces, service_type
from handlers.ai.safety import gate_answer, gate_line, hazard_in, safety_answer
from handlers.errors import N_
from handlers.services import Services
from protocol.ai import AiAnswer, AiAnswered, AiDelta, Safety
from protocol.frames import Event
from storage import ai

log = logging.getLogger(__name__)
Deliver = Callable[[str, Event], Awaitable[int]]
ANSWERS = msgspec.json.Decoder(AiAnswer)
MAX_PHOTOS = 4  # the newest photos of a conversation sent to a vision model
FAILED = N_("Sorry, I could not answer just now. Please send your message again, or ask for a technician.")


def engine_for(services: Services) -> Engine:
    """This process's engine, made on first use: `services.ai_engine`'s, else OpenAI's when a key
    is configured (falling back to the offline one), else the offline one."""
    runtime = services.ai_runtime
    if runtime.engine is None:
        offline = OfflineEngine(services.catalogs, services.ai_rules.stream_pause_s)
        if services.ai_engine is not None:
            runtime.engine = services.ai_engine(services)
        elif services.ai_rules.openai_api_key:  # imported only then: the SDK is not needed offline
            module = importlib.import_module("handlers.ai.openai_engine")
            runtime.engine = module.OpenAIEngine(services.ai_rules, fallback=offline)
        else:
            runtime.engine = offline
    return runtime.engine


class Streamer:
    """The engine's text to the consumer's sessions as `ai.delta`, a line at a time so that each
    step's line passes the safety gate before it is shown."""

    def __init__(self, deliver: Deliver, user_id: str, conversation_id: uuid.UUID, turn: int,
                 translate: Translate) -> None:
        self.deliver, self.user_id, self.conversation_id, self.turn = deliver, user_id, conversation_id, turn
        self.translate = translate
        self.buffer, self.seq = "", 0

    async def __call__(self, piece: str) -> None:
        self.buffer += piece
        if "\n" in self.buffer:
            done, _, self.buffer = self.buffer.rpartition("\n")
            await self.emit("".join(gate_line(line, self.translate) + "\n" for line in done.split("\n")))

    async def flush(self) -> None:
        if self.buffer:
            text, self.buffer = gate_line(self.buffer, self.translate), ""
            await self.emit(text)

    async def emit(self, text: str) -> None:
        await self.deliver(self.user_id, AiDelta(conversation_id=str(self.conversation_id), turn=self.turn,
                                                 seq=self.seq, text=text))
        self.seq += 1


async def photos_of(services: Services, ids: list[uuid.UUID]) -> dict[uuid.UUID, Photo]:
    """The consumer's photos for a vision model (only read when OPENAI_VISION is on)."""
    found = {}
    for row in await ai.images(services.db, ids):
        try:
            found[row["id"]] = Photo(row["content_type"], await services.blobs.read(row["sha256"].hex(), row["sealed"]))
        except FileNotFoundError:
            log.warning("attachment %s has no blob", row["id"])
    return found


async def dialogue_of(services: Services, conversation_id: uuid.UUID) -> tuple[Dialogue, asyncpg.Record]:
    """The conversation as engines read it (without guides), and its row."""
    cipher = services.cipher
    conv = await ai.conversation(services.db, conversation_id)
    assert conv is not None
    product = await ai.product(services.db, conv["brand_id"], conv["sku_id"])
    turns: list[Turn] = []
    wants = False
    rows = await ai.turns(services.db, conversation_id)
    vision = bool(services.ai_rules.openai_vision and services.ai_rules.openai_api_key)
    shown = {a for row in rows for a in row["attachments"]}
    photos = await photos_of(services, [a for row in rows for a in row["attachments"]][-MAX_PHOTOS:]) \
        if vision and shown else {}
    for row in rows:
        text = await cipher.decrypt(row["text_enc"], ai.text_context(conversation_id, row["turn"]))
        turns.append(Turn(role="consumer", text=text,
                          photos=tuple(photos[a] for a in row["attachments"] if a in photos)))
        wants = row["wants_technician"]
        if row["answer_enc"] is not None:
            answer = ANSWERS.decode(await cipher.open(row["answer_enc"], ai.answer_context(conversation_id,
                                                                                           row["turn"])))
            turns.append(Turn(role="assistant", text=render(answer), answer=answer))
    names = msgspec.json.decode(product["names"]) if product and product["names"] else {}
    return Dialogue(
        conversation_id=str(conversation_id), locale=conv["locale"],
        brand=product["brand_name"] if product else conv["brand_id"], sku=conv["sku_id"],
        product=names.get(conv["locale"]) or (product["name"] if product else conv["sku_id"]),
        category=product["category"] if product else "", service_types=tuple(await ai.service_types(services.db)),
        turns=tuple(turns), wants_technician=wants), conv


async def make_answer(services: Services, dialogue: Dialogue, brand_id: str,
                      stream: Streamer) -> tuple[AiAnswer, Safety, Result | None]:
    """(answer, safety, the engine's result: None when the safety gate answered alone)."""
    t = Translate(services.catalogs, dialogue.locale)
    said = [turn.text for turn in dialogue.turns if turn.role == "consumer"]
    if any(hazard_in(text) for text in said):  # before any engine, on every turn once said
        found = draft(dialogue, t)
        answer = safety_answer(t, found.summary, found.service_type)
        for piece in pieces(render(answer)):
            await stream(piece)
        return answer, "input_hazard", None
    guides = await find(services, brand=brand_id, sku=dialogue.sku, category=dialogue.category,
                        locale=dialogue.locale, words=said)
    dialogue = dataclasses.replace(dialogue, guides=guides)
    result = await engine_for(services).answer(dialogue, stream)
    answer, gated = gate_answer(result.answer, t)
    if dialogue.wants_technician and answer.verdict != "technician_needed":
        answer = escalation(dialogue, t)
    if answer.verdict == "technician_needed":
        made = answer.draft or draft(dialogue, t)
        if made.service_type not in dialogue.service_types:
            made = msgspec.structs.replace(made, service_type=service_type(dialogue))
        answer = msgspec.structs.replace(answer, draft=made)
    elif answer.draft is not None:
        answer = msgspec.structs.replace(answer, draft=None)
    return fit(answer), "output_gated" if gated else "none", result


async def answer_turn(services: Services, deliver: Deliver, stream_to: Deliver, conversation_id: uuid.UUID,
                      turn: int) -> AiAnswered:
    """Answer the conversation's turn: its text as `ai.delta`s through `stream_to`, its answer through
    `deliver`. Whatever the engine does, the turn gets an answer (a "could not
    answer" one at worst); should even that not be stored (storage down, the task cancelled at shutdown),
    the conversation is freed at once, so that `ai.reply` need not wait for the answer to go stale."""
    stored = False
    try:
        conv = await ai.conversation(services.db, conversation_id)
        assert conv is not None
        consumer_id = conv["consumer_id"]
        t = Translate(services.catalogs, conv["locale"])
        stream = Streamer(stream_to, consumer_id, conversation_id, turn, t)
        safety: Safety
        try:
            dialogue, _ = await dialogue_of(services, conversation_id)
            answer, safety, result = await make_answer(services, dialogue, conv["brand_id"], stream)
            await stream.flush()
        except Exception:
            log.exception("answering %s turn %d failed", conversation_id, turn)
            answer, safety, result = AiAnswer(diagnosis=t(FAILED), steps=[], report_back="", verdict="continue",
                                              draft=None), "none", None
        draft_id = await store(services, conversation_id, turn, answer, safety, result)
        stored = True
        answered = AiAnswered(conversation_id=str(conversation_id), turn=turn, answer=answer, safety=safety,
                              draft_id=str(draft_id) if draft_id else None)
        await deliver(consumer_id, answered)
        return answered
    finally:
        if not stored:
            try:
                await ai.abandon(services.db, conversation_id, turn)
            except Exception:  # the answer goes stale instead (storage.ai.STALE_ANSWER)
                log.exception("conversation %s could not be freed after turn %d", conversation_id, turn)


async def store(services: Services, conversation_id: uuid.UUID, turn: int, answer: AiAnswer, safety: Safety,
                result: Result | None) -> uuid.UUID | None:
    """Store the answer sealed, and its draft while the conversation may still be ordered from; the draft's id."""
    cipher = services.cipher
    sealed_draft = None
    if answer.draft is not None:
        draft_id = uuid.uuid4()
        sealed_draft = (draft_id, answer.draft.service_type,
                        cipher.seal(msgspec.json.encode(answer.draft), ai.draft_context(draft_id)))
    usage = result.usage if result is not None else None
    return await ai.answered(
        services.db, conversation_id, turn,
        answer_enc=cipher.seal(msgspec.json.encode(answer), ai.answer_context(conversation_id, turn)),
        safety=safety, engine=result.engine if result is not None else None,
        fallback=result.fallback if result is not None else None,
        prompt_tokens=usage.prompt_tokens if usage else 0, completion_tokens=usage.completion_tokens if usage else 0,
        cost_usd=usage.cost_usd if usage else 0.0, draft=sealed_draft)
