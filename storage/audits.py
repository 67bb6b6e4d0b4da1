"""Audits in PostgreSQL: the checks (each one SQL statement over the whole tables), the runs, and
the anomalies each run found. An anomaly is kept once by its fingerprint, so one found again by a
later run keeps its first_seen_at and is not new."""

import json
import uuid
from collections.abc import Sequence
from typing import Any, TypeAlias

import asyncpg

Conn: TypeAlias = asyncpg.Connection | asyncpg.Pool
SCHEDULE_LOCK = "audits"  # one scheduled run at a time across every gateway process

# Every check answers (kind, order_id, brand_id, fingerprint, evidence). `grace` is how long a
# follow-up may lag behind the change that calls for it before its absence is an anomaly.
# A transfer's expected amount is worked out as handlers.money.scheduler.share does it, from the
# figures the transfer was decided on (its job's request: captured, fee_bp; the refunded basis):
# max(captured - refunded, 0) * (10000 - fee_bp) // 10000, in bigint so a large price cannot overflow.
TRANSFER_MISSING = """
SELECT 'transfer_missing' AS kind, o.id AS order_id, o.brand_id, 'transfer_missing:' || o.id AS fingerprint,
       jsonb_build_object('order_state', o.state, 'payment_state', o.payment_state,
                          'captured_cents', p.captured_cents, 'refunded_cents', p.refunded_cents,
                          'expected_cents', x.expected, 'technician_id', o.technician_id,
                          'transfer_job', j.state, 'since', o.updated_at) AS evidence
FROM orders o JOIN payments p ON p.order_id = o.id
LEFT JOIN money_jobs j ON j.order_id = o.id AND j.kind = 'transfer' AND j.step = 0
CROSS JOIN LATERAL (SELECT greatest(p.captured_cents - p.refunded_cents, 0)::bigint * (10000 - $2::int) / 10000
                    AS expected) x
WHERE o.state = 'completed' AND o.payment_state IN ('paid', 'partially_refunded') AND p.captured_cents > 0
  AND o.updated_at < now() - $1 * interval '1 second' AND x.expected > 0
  AND NOT EXISTS (SELECT 1 FROM transfers t WHERE t.order_id = o.id)
  AND (j.id IS NULL OR j.state IN ('done', 'skipped'))
"""

TRANSFER_WITHOUT_CAPTURE = """
SELECT 'transfer_without_capture', t.order_id, o.brand_id, 'transfer_without_capture:' || t.transfer_id,
       jsonb_build_object('transfer_id', t.transfer_id, 'transfer_cents', t.amount_cents,
                          'technician_id', t.technician_id, 'intent_id', p.intent_id,
                          'payment_state', o.payment_state, 'captured_cents', coalesce(p.captured_cents, 0))
FROM transfers t JOIN orders o ON o.id = t.order_id LEFT JOIN payments p ON p.order_id = t.order_id
WHERE p.order_id IS NULL OR p.captured_cents <= 0
   OR coalesce(o.payment_state, '') NOT IN ('paid', 'partially_refunded', 'refunded')
"""

TRANSFER_AMOUNT = """
SELECT 'transfer_amount_mismatch', t.order_id, o.brand_id,
       'transfer_amount_mismatch:' || t.transfer_id || ':' || t.amount_cents,
       jsonb_build_object('transfer_id', t.transfer_id, 'transfer_cents', t.amount_cents,
                          'expected_cents', x.expected, 'captured_cents', d.captured,
                          'refunded_basis', t.refunded_basis, 'fee_bp', d.fee_bp, 'price_cents', o.price_cents)
FROM transfers t JOIN orders o ON o.id = t.order_id JOIN payments p ON p.order_id = t.order_id
LEFT JOIN money_jobs j ON j.order_id = t.order_id AND j.kind = 'transfer' AND j.step = 0
CROSS JOIN LATERAL (SELECT coalesce((j.request ->> 'captured')::int, p.captured_cents) AS captured,
                           coalesce((j.request ->> 'fee_bp')::int, $1::int) AS fee_bp) d
CROSS JOIN LATERAL (SELECT greatest(d.captured - t.refunded_basis, 0)::bigint * (10000 - d.fee_bp) / 10000
                    AS expected) x
WHERE p.captured_cents > 0 AND t.amount_cents <> x.expected
"""

# What a refund after the transfer should have taken back, as handlers.money.scheduler's reversal
# decides it: the transfer's share of what was refunded after its amount was worked out.
REFUND_NOT_REVERSED = """
SELECT 'refund_not_reversed', t.order_id, o.brand_id,
       'refund_not_reversed:' || t.order_id || ':' || p.refunded_cents,
       jsonb_build_object('transfer_id', t.transfer_id, 'transfer_cents', t.amount_cents,
                          'refunded_cents', p.refunded_cents, 'refunded_basis', t.refunded_basis,
                          'captured_cents', p.captured_cents, 'expected_reversed_cents', r.owed,
                          'reversed_cents', t.reversed_cents)
FROM transfers t JOIN payments p ON p.order_id = t.order_id JOIN orders o ON o.id = t.order_id
CROSS JOIN LATERAL (SELECT least(t.amount_cents::bigint, t.amount_cents::bigint
                                 * (p.refunded_cents - t.refunded_basis) / (p.captured_cents - t.refunded_basis))
                    AS owed) r
WHERE p.refunded_cents > t.refunded_basis AND p.captured_cents > t.refunded_basis
  AND r.owed > t.reversed_cents AND p.updated_at < now() - $1 * interval '1 second'
  AND NOT EXISTS (SELECT 1 FROM money_jobs j WHERE j.order_id = t.order_id AND j.kind = 'reversal'
                  AND j.state IN ('pending', 'running'))
"""

# $1 here is how overdue a pending job (or a running job's lease) may be: no scheduler is running it.
MONEY_JOBS = """
SELECT CASE WHEN j.state = 'failed' THEN 'money_job_failed' ELSE 'money_job_stuck' END, j.order_id, o.brand_id,
       CASE WHEN j.state = 'failed' THEN 'money_job_failed:' ELSE 'money_job_stuck:' END || j.id,
       jsonb_build_object('job_id', j.id, 'job_kind', j.kind, 'step', j.step, 'state', j.state,
                          'attempts', j.attempts, 'last_error', j.last_error, 'due_at', j.due_at,
                          'lease_until', j.lease_until, 'updated_at', j.updated_at,
                          'overdue_s', CASE WHEN j.state = 'failed' THEN NULL ELSE
                              round(extract(epoch FROM now() - coalesce(j.lease_until, j.due_at))) END)
FROM money_jobs j JOIN orders o ON o.id = j.order_id
WHERE (j.state = 'failed' OR (j.state = 'pending' AND j.due_at < now() - $1 * interval '1 second')
       OR (j.state = 'running' AND j.lease_until < now() - $1 * interval '1 second'))
"""

STRIPE_EVENTS = """
SELECT 'stripe_event_unapplied', p.order_id, o.brand_id, 'stripe_event_unapplied:' || e.id,
       jsonb_build_object('event_id', e.id, 'event_type', e.type, 'source', e.source, 'created', e.created,
                          'received_at', e.received_at, 'object_id', e.payload -> 'object' ->> 'id',
                          'age_s', round(extract(epoch FROM now() - e.received_at)))
FROM stripe_events e
LEFT JOIN LATERAL (SELECT order_id FROM payments WHERE intent_id = e.payload -> 'object' ->> 'id'
                   UNION ALL SELECT order_id FROM payments WHERE charge_id = e.payload -> 'object' ->> 'id'
                   LIMIT 1) p ON true
LEFT JOIN orders o ON o.id = p.order_id
WHERE e.applied_at IS NULL AND e.received_at < now() - $1 * interval '1 second'
"""

# An order's time in its state: since the timeline entry that moved it there (its creation otherwise).
# $1, $2: the states watched and their thresholds in seconds (handlers.money.settings).
ORDER_STUCK = """
SELECT 'order_stuck', o.id, o.brand_id,
       'order_stuck:' || o.id || ':' || o.state || ':' || floor(extract(epoch FROM s.since))::bigint,
       jsonb_build_object('state', o.state, 'since', s.since, 'age_s', round(extract(epoch FROM now() - s.since)),
                          'threshold_s', th.seconds, 'technician_id', o.technician_id,
                          'payment_state', o.payment_state)
FROM orders o
JOIN unnest($1::text[], $2::float8[]) AS th (state, seconds) ON th.state = o.state
CROSS JOIN LATERAL (SELECT coalesce((SELECT max(e.at) FROM order_events e
                                     WHERE e.order_id = o.id AND e.to_state = o.state), o.created_at) AS since) s
WHERE o.created_at < now() - th.seconds * interval '1 second' AND s.since < now() - th.seconds * interval '1 second'
"""


async def find(db: Conn, *, fee_bp: int, grace_s: float, job_stuck_s: float,
               stuck_after_s: Sequence[tuple[str, float]]) -> list[asyncpg.Record]:
    """Every anomaly the database alone shows (the authorizations' deadlines need Stripe)."""
    checks: list[tuple[str, tuple[Any, ...]]] = [
        (TRANSFER_MISSING, (grace_s, fee_bp)), (TRANSFER_WITHOUT_CAPTURE, ()), (TRANSFER_AMOUNT, (fee_bp,)),
        (REFUND_NOT_REVERSED, (grace_s,)), (MONEY_JOBS, (job_stuck_s,)), (STRIPE_EVENTS, (grace_s,)),
        (ORDER_STUCK, ([s for s, _ in stuck_after_s], [t for _, t in stuck_after_s]))]
    found: list[asyncpg.Record] = []
    for sql, args in checks:
        found += await db.fetch(sql, *args)
    return found


async def authorized(db: Conn, limit: int) -> list[asyncpg.Record]:
    """Payments authorized and not captured, the oldest first (their holds expire first)."""
    rows: list[asyncpg.Record] = await db.fetch(
        "SELECT p.order_id, p.intent_id, p.charge_id, p.created_at, o.brand_id, o.state"
        " FROM payments p JOIN orders o ON o.id = p.order_id WHERE o.payment_state = 'authorized'"
        " ORDER BY p.created_at LIMIT $1", limit)
    return rows


# -- runs -----------------------------------------------------------------------------------
async def start_run(db: Conn, trigger: str, by: str | None) -> int:
    run_id: int = await db.fetchval("INSERT INTO audit_runs (trigger, triggered_by) VALUES ($1, $2) RETURNING id",
                                    trigger, by)
    return run_id


async def finish_run(db: Conn, run_id: int, *, stripe_checked: bool, error: str | None) -> None:
    await db.execute("UPDATE audit_runs SET finished_at = clock_timestamp(), stripe_checked = $2, error = $3"
                     " WHERE id = $1", run_id, stripe_checked, error)


async def record(db: Conn, run_id: int, findings: Sequence[tuple[str, uuid.UUID | None, str | None, str,
                                                              dict[str, Any]]]) -> list[asyncpg.Record]:
    """Keep the run's findings (kind, order, brand, fingerprint, evidence), one multi-row statement;
    returns the anomalies first seen by this run."""
    unique = {f[3]: f for f in findings}.values()  # a fingerprint once per run
    await db.execute(
        "WITH found AS (SELECT * FROM unnest($2::text[], $3::text[], $4::uuid[], $5::text[], $6::text[])"
        "               AS f (fingerprint, kind, order_id, brand_id, evidence)),"
        " kept AS (INSERT INTO audit_anomalies (fingerprint, kind, order_id, brand_id, first_run, last_run)"
        "          SELECT fingerprint, kind, order_id, brand_id, $1::bigint, $1::bigint FROM found"
        "          ON CONFLICT (fingerprint) DO UPDATE SET last_run = excluded.last_run RETURNING id, fingerprint)"
        " INSERT INTO audit_findings (run_id, anomaly_id, evidence)"
        " SELECT $1, kept.id, found.evidence::jsonb FROM kept JOIN found USING (fingerprint)",
        run_id, [f[3] for f in unique], [f[0] for f in unique], [f[1] for f in unique], [f[2] for f in unique],
        [json.dumps(f[4], default=str) for f in unique])
    rows: list[asyncpg.Record] = await db.fetch(
        "SELECT id, kind, order_id, brand_id FROM audit_anomalies WHERE first_run = $1 ORDER BY id", run_id)
    return rows


RUN_COLUMNS = (
    "r.*, (SELECT coalesce(jsonb_object_agg(c.kind, c.n), '{}')::text FROM"
    "      (SELECT a.kind, count(*) AS n FROM audit_findings f JOIN audit_anomalies a ON a.id = f.anomaly_id"
    "       WHERE f.run_id = r.id GROUP BY a.kind) c) AS counts,"
    " (SELECT count(*) FROM audit_anomalies a WHERE a.first_run = r.id) AS new")


async def run(db: Conn, run_id: int) -> asyncpg.Record | None:
    return await db.fetchrow(f"SELECT {RUN_COLUMNS} FROM audit_runs r WHERE r.id = $1", run_id)


async def runs(db: Conn, *, before: int | None, limit: int) -> list[asyncpg.Record]:
    """Runs, newest first (keyset on the id)."""
    rows: list[asyncpg.Record] = await db.fetch(
        f"SELECT {RUN_COLUMNS} FROM audit_runs r WHERE ($1::bigint IS NULL OR r.id < $1) ORDER BY r.id DESC"
        " LIMIT $2", before, limit)
    return rows


async def anomalies(db: Conn, run_id: int, *, kind: str | None, order_id: uuid.UUID | None, before: int | None,
                    limit: int) -> list[asyncpg.Record]:
    """A run's anomalies with the evidence it saw, the most recently first seen first (keyset on the id)."""
    rows: list[asyncpg.Record] = await db.fetch(
        "SELECT a.id, a.kind, a.order_id, a.brand_id, a.first_seen_at, a.first_run = f.run_id AS new,"
        " f.evidence::text AS evidence FROM audit_findings f JOIN audit_anomalies a ON a.id = f.anomaly_id"
        " WHERE f.run_id = $1 AND ($2::text IS NULL OR a.kind = $2) AND ($3::uuid IS NULL OR a.order_id = $3)"
        " AND ($4::bigint IS NULL OR a.id < $4) ORDER BY a.id DESC LIMIT $5",
        run_id, kind, order_id, before, limit)
    return rows


# -- the schedule ---------------------------------------------------------------------------
async def lock_schedule(conn: asyncpg.Connection) -> bool:
    """Take the scheduled audits' lock for this connection's session (released when it ends)."""
    taken: bool = await conn.fetchval("SELECT pg_try_advisory_lock(hashtextextended($1, 13))", SCHEDULE_LOCK)
    return taken


async def unlock_schedule(conn: asyncpg.Connection) -> None:
    await conn.execute("SELECT pg_advisory_unlock(hashtextextended($1, 13))", SCHEDULE_LOCK)


async def scheduled_due(db: Conn, interval_s: float) -> bool:
    """Whether the fleet's last scheduled run started at least `interval_s` ago (or there was none)."""
    due: bool = await db.fetchval(
        "SELECT coalesce(max(started_at) < clock_timestamp() - $1 * interval '1 second', true)"
        " FROM audit_runs WHERE trigger = 'schedule'", interval_s)
    return due
