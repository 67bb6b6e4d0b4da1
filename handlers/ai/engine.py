"""What an engine is given and gives back. The conversation flow (handlers.ai) builds a `Dialogue`
and calls `Engine.answer`; an engine streams readable text through `stream` while it works and
returns the structured answer. Engines: the offline one (troubleshooting guides, full-text search)
and OpenAI's (any OpenAI-compatible server), which falls back to the offline one."""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from protocol.ai import AiAnswer, Urgency

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


def render(answer: AiAnswer) -> str:
    """The readable text of an answer, as streamed in `ai.delta` (engines stream its pieces in
    this order: diagnosis, numbered steps, what to report back)."""
    lines = [answer.diagnosis, ""]
    for number, step in enumerate(answer.steps, 1):
        lines.append(f"{number}. {step.instruction} — {step.look_for}")
    if answer.report_back:
        lines += ["", answer.report_back]
    return "\n".join(lines).strip()
