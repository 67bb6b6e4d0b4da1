"""What an engine is given and gives back. The conversation flow (handlers.ai) builds a `Dialogue`
and calls `Engine.answer`; an engine streams readable text through `stream` while it works and
returns the structured answer. Engines: the offline one (troubleshooting guides, full-text search)
and OpenAI's (any OpenAI-compatible server), which falls back to the offline one."""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

import msgspec

from protocol import ai as limits
from protocol.ai import AiAnswer, AiStep, AiTried, Urgency

Stream = Callable[[str], Awaitable[None]]  # the next piece of the answer's readable text


@dataclass(frozen=True, slots=True)
class Photo:
    content_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Turn:
    role: Literal["consumer", "assistant"]
    text: str  # the consumer's words, or the assistant's rendered answer
    answer: AiAnswer | None = None  # the assistant's structured answer
    photos: tuple[Photo, ...] = ()


@dataclass(frozen=True, slots=True)
class Check:
    text: str
    look_for: str
    safety: Literal["safe", "caution", "technician"]  # technician: never offered as a self-repair step


@dataclass(frozen=True, slots=True)
class Guide:
    """A troubleshooting guide as the engines read it (kept with the catalog)."""

    title: str
    symptoms: str
    checks: tuple[Check, ...]
    call_when: str  # when to stop and call a technician
    likely_parts: tuple[str, ...]
    urgency: Urgency = "normal"
    rank: float = 0.0  # how well it matched the consumer's words (full-text search)
    shared: int = 0  # words (lexemes) the consumer's latest reply shares with `call_when`


@dataclass(frozen=True, slots=True)
class Dialogue:
    conversation_id: str
    locale: str  # en, es, zh-Hans: the answer's language
    brand: str  # the brand's name
    sku: str  # the model number
    product: str  # the SKU's name
    category: str  # its category id ('washer', ...)
    service_types: tuple[str, ...]  # what a draft's service_type may be
    turns: tuple[Turn, ...]  # oldest first; the last is the consumer's
    guides: tuple[Guide, ...] = ()  # best matches first
    wants_technician: bool = False  # the consumer asked for one: the verdict must be technician_needed


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


@dataclass(slots=True)
class Result:
    answer: AiAnswer
    engine: str  # 'offline', 'openai'
    usage: Usage = field(default_factory=Usage)
    fallback: str | None = None  # why another engine answered ('timeout', 'rate_limited', 'invalid_output'...)


class Engine(Protocol):
    name: str

    async def answer(self, dialogue: Dialogue, stream: Stream) -> Result:
        """The structured answer to the dialogue's last turn, its readable text streamed first.
        Never raises for a provider's fault: a fallback engine answers instead."""
        ...


# Line breaks inside a field, as spaces: each step is one line of the readable text, so the safety gate
# (which looks at the stream a line at a time) sees a step whole. Character for character, so that the
# text of an answer still being generated stays the start of the final one.
FLAT = str.maketrans({"\n": " ", "\r": " ", "\u2028": " ", "\u2029": " ", "\x85": " "})


def flat(text: str) -> str:
    return text.translate(FLAT)


def render(answer: AiAnswer) -> str:
    """The readable text of an answer, as streamed in `ai.delta` (engines stream its pieces in
    this order: diagnosis, numbered steps, what to report back), a line per step."""
    lines = [flat(answer.diagnosis), ""]
    for number, step in enumerate(answer.steps, 1):
        lines.append(f"{number}. {flat(step.instruction)} — {flat(step.look_for)}")
    if answer.report_back:
        lines += ["", flat(answer.report_back)]
    return "\n".join(lines).strip()


def clip(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[:chars - 1].rstrip() + "…"


def fit(answer: AiAnswer) -> AiAnswer:
    """The answer within AiAnswer's limits: texts cut with an ellipsis, the first steps and parts, the
    newest steps tried (a long conversation's draft). Engines aim to stay within them; this makes sure."""
    steps = [AiStep(instruction=clip(s.instruction, limits.INSTRUCTION_CHARS),
                    look_for=clip(s.look_for, limits.LOOK_FOR_CHARS), technician_only=s.technician_only)
             for s in answer.steps[:limits.MAX_STEPS]]
    draft = answer.draft
    if draft is not None:
        draft = msgspec.structs.replace(
            draft, summary=clip(draft.summary, limits.SUMMARY_CHARS),
            likely_parts=[clip(p, limits.PART_CHARS) for p in draft.likely_parts[:limits.MAX_PARTS]],
            tried=[AiTried(step=clip(t.step, limits.INSTRUCTION_CHARS), outcome=clip(t.outcome, limits.SAID_CHARS))
                   for t in draft.tried[-limits.MAX_TRIED:]])
    return AiAnswer(diagnosis=clip(answer.diagnosis, limits.DIAGNOSIS_CHARS), steps=steps,
                    report_back=clip(answer.report_back, limits.REPORT_BACK_CHARS), verdict=answer.verdict, draft=draft)
