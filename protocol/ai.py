"""The "Help with AI" troubleshooter on the wire. `AiAnswer` is declared once: it is what the app
receives in `ai.answer` and, as a strict JSON schema generated from it, what the model must return."""

from typing import Literal

import msgspec

Verdict = Literal["continue", "resolved", "technician_needed"]
Urgency = Literal["low", "normal", "high", "emergency"]


class AiStep(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One check a non-professional can do safely, and what to look for while doing it."""

    instruction: str
    look_for: str
    # Set by the gateway's safety gate (or the model) when the step touches a hazard: its text is
    # then "a technician must do this" and the consumer is not to try it.
    technician_only: bool


class AiTried(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    step: str
    outcome: str


class AiDraft(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What the technician is told when the consumer confirms an order from the conversation."""

    service_type: str  # one of the catalog's service types
    summary: str  # the problem, written for the technician
    tried: list[AiTried]
    likely_parts: list[str]
    urgency: Urgency


class AiAnswer(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A structured answer, never free prose. `draft` is set when `verdict` is technician_needed."""

    diagnosis: str
    steps: list[AiStep]
    report_back: str  # what the consumer should tell the assistant after the steps
    verdict: Verdict
    draft: AiDraft | None
