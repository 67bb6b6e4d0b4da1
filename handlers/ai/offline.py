"""The offline engine (name "offline"): answers from the troubleshooting guides the flow found
for the consumer's words. First turn: a diagnosis and the first safe checks; "still broken": the
next checks; none left, a technician asked for, or the guide's `call_when` met: an order draft;
"it works": resolved. The embedded default without OPENAI_API_KEY, and OpenAI's fallback."""

import asyncio
import re

from handlers.ai.engine import Check, Dialogue, Result, Stream, render
from handlers.errors import N_
from handlers.i18n import Catalogs
from protocol.ai import AiAnswer, AiDraft, AiStep, AiTried

STEPS_PER_TURN = 3
PIECES = 4  # an answer streams in about this many pieces
CALL_WHEN_SHARED = 2  # lexemes a reply shares with a guide's call_when to mean it (full-text search)

# A reply saying the problem is gone, unless it also says it is not (per language, as data).
FIXED: dict[str, tuple[str, ...]] = {
    "en": (r"\bworks?\b", r"\bworking\b", r"\bfixed\b", r"\bsolved\b", r"\bresolved\b", r"\bthat did it\b",
           r"\bback to normal\b", r"\b(cools?|heats?|drains?|spins?|lights?) (again|now)\b", r"\ball good\b"),
    "es": (r"\bfunciona\w*", r"\barreglad[oa]\b", r"\bsolucionad[oa]\b", r"\bresuelt[oa]\b",
           r"\b(ya )?(enfr[ií]a|calienta|desagua|centrifuga|enciende) (otra vez|de nuevo|ya)\b", r"\btodo bien\b"),
    "zh-Hans": (r"好了", r"修好", r"解决了", r"正常了", r"可以用了", r"能用了", r"恢复正常"),
}
NOT_FIXED: dict[str, tuple[str, ...]] = {
    "en": (r"\bnot\b", r"n't\b", r"\bstill\b", r"\bnever\b", r"\bnothing\b", r"\bstopped\b", r"\bno\b"),
    "es": (r"\bno\b", r"\bsigue\b", r"\btodav[ií]a\b", r"\bnada\b", r"\bnunca\b", r"\bdej[oó] de\b"),
    "zh-Hans": (r"不", r"没", r"还是", r"仍然", r"依然"),
}
_FIXED = [re.compile(p, re.IGNORECASE) for ps in FIXED.values() for p in ps]
_NOT_FIXED = [re.compile(p, re.IGNORECASE) for ps in NOT_FIXED.values() for p in ps]

DIAGNOSIS_FIRST = N_("From what you describe, this looks like: {title}.")
DIAGNOSIS_NEXT = N_("Let's try the next checks for: {title}.")
REPORT_BACK = N_("Do these steps in order and tell me what happened: is it working again?")
RESOLVED = N_("Glad it works again! If the problem comes back, start a new conversation.")
RESOLVED_REPORT = N_("You can close this conversation as fixed.")
ESCALATE = N_("A technician should look at this. I prepared a summary for them: confirm the order draft to book "
              "a visit.")
ESCALATE_NO_GUIDE = N_("I have no troubleshooting guide for this product, so a technician should look at it. I "
                       "prepared a summary for them: confirm the order draft to book a visit.")
ESCALATE_REPORT = N_("Confirm the order draft to book a technician, or tell me if something changed.")
SUMMARY = N_("{product} ({brand} {sku}): {description}")
SUMMARY_REPLIES = N_("After the suggested checks the customer reported: {replies}")
NO_OUTCOME = N_("No outcome reported.")


def said_fixed(text: str) -> bool:
    return any(p.search(text) for p in _FIXED) and not any(p.search(text) for p in _NOT_FIXED)


def pieces(text: str, count: int = PIECES) -> list[str]:
    """`text` cut at line ends into about `count` pieces that join back into it."""
    lines = text.splitlines(keepends=True) or [text]
    size = max(1, -(-len(lines) // count))
    return ["".join(lines[i:i + size]) for i in range(0, len(lines), size)]


def service_type(dialogue: Dialogue) -> str:
    return "repair" if "repair" in dialogue.service_types or not dialogue.service_types else dialogue.service_types[0]


def draft(dialogue: Dialogue, translate_: "Translate") -> AiDraft:
    """The order draft of a conversation: its summary, the steps given with what the consumer said
    after each, the best guide's likely parts and urgency."""
    consumer = [t for t in dialogue.turns if t.role == "consumer"]
    description = consumer[0].text if consumer else ""
    replies = [t.text for t in consumer[1:]]
    summary = translate_(SUMMARY, product=dialogue.product, brand=dialogue.brand, sku=dialogue.sku,
                         description=description)
    if replies:
        summary += " " + translate_(SUMMARY_REPLIES, replies=" / ".join(replies))
    tried: list[AiTried] = []
    for index, turn in enumerate(dialogue.turns):
        if turn.role != "assistant" or turn.answer is None:
            continue
        after = next((t.text for t in dialogue.turns[index + 1:] if t.role == "consumer"), translate_(NO_OUTCOME))
        tried += [AiTried(step=s.instruction, outcome=after) for s in turn.answer.steps if not s.technician_only]
    best = dialogue.guides[0] if dialogue.guides else None
    return AiDraft(service_type=service_type(dialogue), summary=summary, tried=tried,
                   likely_parts=list(best.likely_parts) if best else [], urgency=best.urgency if best else "normal")


class Translate:
    def __init__(self, catalogs: Catalogs, locale: str) -> None:
        self.catalogs, self.locale = catalogs, locale

    def __call__(self, message: str, **params: str) -> str:
        return self.catalogs.translate(self.locale, message, **params)


def escalation(dialogue: Dialogue, translate_: Translate) -> AiAnswer:
    return AiAnswer(diagnosis=translate_(ESCALATE if dialogue.guides else ESCALATE_NO_GUIDE), steps=[],
                    report_back=translate_(ESCALATE_REPORT), verdict="technician_needed",
                    draft=draft(dialogue, translate_))


class OfflineEngine:
    name = "offline"

    def __init__(self, catalogs: Catalogs, pause_s: float = 0.0) -> None:
        self.catalogs = catalogs
        self.pause_s = pause_s  # between streamed pieces (tests slow it down to disconnect mid-stream)

    def decide(self, dialogue: Dialogue) -> AiAnswer:
        t = Translate(self.catalogs, dialogue.locale)
        consumer = [turn for turn in dialogue.turns if turn.role == "consumer"]
        if dialogue.wants_technician:
            return escalation(dialogue, t)
        if len(consumer) > 1:
            if said_fixed(consumer[-1].text):
                return AiAnswer(diagnosis=t(RESOLVED), steps=[], report_back=t(RESOLVED_REPORT), verdict="resolved",
                                draft=None)
            if any(g.shared >= CALL_WHEN_SHARED for g in dialogue.guides):
                return escalation(dialogue, t)
        offered = {s.instruction for turn in dialogue.turns if turn.answer is not None for s in turn.answer.steps}
        seen: set[str] = set()
        remaining: list[Check] = []
        for guide in dialogue.guides:
            for check in guide.checks:
                if check.safety != "technician" and check.text not in offered and check.text not in seen:
                    seen.add(check.text)
                    remaining.append(check)
        if not remaining:
            return escalation(dialogue, t)
        title = dialogue.guides[0].title
        return AiAnswer(
            diagnosis=t(DIAGNOSIS_FIRST if not offered else DIAGNOSIS_NEXT, title=title),
            steps=[AiStep(instruction=c.text, look_for=c.look_for, technician_only=False)
                   for c in remaining[:STEPS_PER_TURN]],
            report_back=t(REPORT_BACK), verdict="continue", draft=None)

    async def answer(self, dialogue: Dialogue, stream: Stream) -> Result:
        answer = self.decide(dialogue)
        for number, piece in enumerate(pieces(render(answer))):
            if number and self.pause_s:
                await asyncio.sleep(self.pause_s)
            await stream(piece)
        return Result(answer=answer, engine=self.name)
