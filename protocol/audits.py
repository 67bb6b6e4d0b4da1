"""Money and order audits (admins): run the checks now, list past runs and what each found."""

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from protocol.bounds import INT64_MAX, LINE
from protocol.frames import Reply, Request

# One per check; docs/protocol.md "Audits" says what each looks at and what its evidence holds.
AnomalyKind = Literal["transfer_missing", "transfer_without_capture", "transfer_amount_mismatch",
                      "refund_not_reversed", "authorization_expiring", "money_job_failed", "money_job_stuck",
                      "stripe_event_unapplied", "order_stuck"]
RunId = Annotated[int, msgspec.Meta(ge=1, le=INT64_MAX)]


class AuditRun(msgspec.Struct, kw_only=True):
    id: int
    started_at: datetime
    finished_at: datetime | None  # null: still running
    trigger: Literal["schedule", "admin"]
    triggered_by: str | None  # the admin's user id
    stripe_checked: bool  # whether the authorizations' deadlines were read from Stripe
    error: str | None  # why the run stopped short; what it found until then is kept
    counts: dict[str, int]  # anomalies found, by kind
    new: int  # of them, first seen by this run


class Anomaly(msgspec.Struct, kw_only=True):
    id: int
    kind: AnomalyKind
    order_id: str | None
    brand: str | None
    evidence: dict[str, Any]  # the figures: expected and found amounts, ids, states, ages
    first_seen_at: datetime  # across runs: the same anomaly found again keeps it
    new: bool  # first seen by this run


class Audits(Reply):
    run: AuditRun | None  # the run asked for (admin.audit: the one just made)
    runs: list[AuditRun]  # admin.audits without run_id: runs, newest first
    anomalies: list[Anomaly]  # the run's, the most recently first seen first
    next_before: int | None  # pass as `before` for the next page; null: no more


class AuditStart(Request, tag="admin.audit"):
    """Run every check now; answers the run with its first `limit` anomalies (more with admin.audits)."""

    limit: Annotated[int, msgspec.Meta(ge=1, le=500)] = 100
    reply = Audits


class AuditList(Request, tag="admin.audits"):
    """Without `run_id`: the runs, newest first. With it: that run's anomalies, filtered."""

    run_id: RunId | None = None
    kind: AnomalyKind | None = None
    order_id: Annotated[str, LINE, msgspec.Meta(min_length=1, max_length=64)] | None = None
    before: RunId | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=500)] = 100
    reply = Audits
