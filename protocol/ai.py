"""The "Help with AI" troubleshooter on the wire. `AiAnswer` is declared once: it is what the app
receives in `ai.answer` and, as a strict JSON schema generated from it, what the model must return."""

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from protocol.bounds import LINE, TEXT
from protocol.frames import Event, Reply, Request
from protocol.location import Slug

Verdict = Literal["continue", "resolved", "technician_needed"]
Urgency = Literal["low", "normal", "high", "emergency"]


def bounded(chars: int) -> msgspec.Meta:
    """A text of at most `chars` characters; said in the description too, since strict structured output
    drops maxLength and a model only learns the limit by reading it."""
    return msgspec.Meta(max_length=chars, description=f"at most {chars} characters")


# The answer's limits: what an app lays out, what one model call may write (AI_MAX_OUTPUT_TOKENS caps it
# too), and what a draft carries of a long conversation (the gateway keeps the newest when it is longer).
MAX_STEPS, MAX_TRIED, MAX_PARTS = 8, 30, 12
DIAGNOSIS_CHARS, INSTRUCTION_CHARS, LOOK_FOR_CHARS, REPORT_BACK_CHARS = 800, 500, 400, 500
SUMMARY_CHARS, SAID_CHARS, PART_CHARS = 4000, 2000, 120
Diagnosis = Annotated[str, bounded(DIAGNOSIS_CHARS)]
Instruction = Annotated[str, bounded(INSTRUCTION_CHARS)]
LookFor = Annotated[str, bounded(LOOK_FOR_CHARS)]
ReportBack = Annotated[str, bounded(REPORT_BACK_CHARS)]
Summary = Annotated[str, bounded(SUMMARY_CHARS)]
Said = Annotated[str, bounded(SAID_CHARS)]  # what the consumer said after a step: one of their texts
Part = Annotated[str, bounded(PART_CHARS)]


class AiStep(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One check a non-professional can do safely, and what to look for while doing it."""

    instruction: Instruction
    look_for: LookFor
    # Set by the gateway's safety gate (or the model) when the step touches a hazard: its text is
    # then "a technician must do this" and the consumer is not to try it.
    technician_only: bool


class AiTried(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    step: Instruction
    outcome: Said


class AiDraft(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What the technician is told when the consumer confirms an order from the conversation."""

    service_type: Annotated[str, msgspec.Meta(max_length=64)]  # one of the catalog's service types
    summary: Summary  # the problem, written for the technician
    tried: Annotated[list[AiTried], msgspec.Meta(max_length=MAX_TRIED)]
    likely_parts: Annotated[list[Part], msgspec.Meta(max_length=MAX_PARTS)]
    urgency: Urgency


class AiAnswer(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A structured answer, never free prose. `draft` is set when `verdict` is technician_needed."""

    diagnosis: Diagnosis
    steps: Annotated[list[AiStep], msgspec.Meta(max_length=MAX_STEPS)]
    report_back: ReportBack  # what the consumer should tell the assistant after the steps
    verdict: Verdict
    draft: AiDraft | None


# -- the conversation over the websocket ---------------------------------------------------------
ConversationId = Annotated[str, LINE, msgspec.Meta(min_length=1, max_length=64)]
AiText = Annotated[str, TEXT, msgspec.Meta(min_length=1, max_length=2000)]
AttachmentIds = Annotated[list[Annotated[str, LINE, msgspec.Meta(max_length=64)]], msgspec.Meta(max_length=10)]
Safety = Literal["none", "input_hazard", "output_gated"]
ConversationState = Literal["active", "ended"]
Outcome = Literal["fixed", "give_up", "ordered"]


class AiTurnStarted(Reply):
    """The turn the answer is being made for: it streams as `ai.delta`, then `ai.answer`."""

    conversation_id: str
    turn: int


class AiStart(Request, tag="ai.start"):
    """Ask the assistant about a product of the catalog (what order.create would accept)."""

    brand: Slug
    sku: Annotated[str, LINE, msgspec.Meta(min_length=1, max_length=64, description="model number")]
    description: AiText
    attachments: AttachmentIds = []
    locale: Annotated[str, LINE, msgspec.Meta(max_length=35, description="BCP 47; default: the session's")] \
        | None = None
    reply = AiTurnStarted


class AiReply(Request, tag="ai.reply"):
    """The consumer's answer to the last steps; `wants_technician` asks for an order draft."""

    conversation_id: ConversationId
    text: AiText
    attachments: AttachmentIds = []
    wants_technician: bool = False
    reply = AiTurnStarted


class AiTurn(msgspec.Struct, kw_only=True):
    turn: int
    text: str  # the consumer's words
    attachments: list[str]
    wants_technician: bool
    answer: AiAnswer | None  # null while it is being made
    safety: Safety | None
    engine: str | None  # null: the safety gate answered (no engine was asked)
    draft_id: str | None
    created_at: datetime
    answered_at: datetime | None


class AiConversation(msgspec.Struct, kw_only=True):
    id: str
    consumer_id: str
    brand: str
    sku: str
    locale: str
    state: ConversationState
    outcome: Outcome | None
    answering: bool  # an answer is being made
    engine: str | None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    order_id: str | None
    created_at: datetime
    updated_at: datetime
    turns: list[AiTurn] = []  # ai.get: every turn, oldest first; ai.list: none


class AiConversationReply(Reply):
    conversation: AiConversation


class AiEnd(Request, tag="ai.end"):
    conversation_id: ConversationId
    outcome: Literal["fixed", "give_up"]
    reply = AiConversationReply


class AiGet(Request, tag="ai.get"):
    conversation_id: ConversationId
    reply = AiConversationReply


class AiPage(Reply):
    conversations: list[AiConversation]
    next_cursor: str | None = None


class AiList(Request, tag="ai.list"):
    """The consumer's conversations, newest first; pass `next_cursor` back as `cursor`."""

    cursor: Annotated[str, LINE, msgspec.Meta(max_length=200)] | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=100)] = 20
    reply = AiPage


class AiDelta(Event, tag="ai.delta"):
    """The next piece of an answer's readable text (pieces in `seq` order, from 0)."""

    conversation_id: str
    turn: int
    seq: int
    text: str


class AiAnswered(Event, tag="ai.answer"):
    """The final structured answer of a turn; `draft_id` names the order draft of a technician_needed one."""

    conversation_id: str
    turn: int
    answer: AiAnswer
    safety: Safety
    draft_id: str | None


class AiSummary(msgspec.Struct, kw_only=True):
    """What an order's technician is told of the conversation it came from (never the conversation)."""

    summary: str
    tried: list[AiTried]
    likely_parts: list[str]
    urgency: Urgency
