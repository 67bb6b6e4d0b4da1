"""Money in PostgreSQL: customers, the payment of each order, Stripe events (stored, then applied
once), connected accounts, the durable scheduler of Stripe calls, and executed transfers."""

import uuid
from datetime import datetime
from typing import TypeAlias

import asyncpg
from prometheus_client import Counter

JOB_RUNS = Counter("money_job_runs", "Runs of the jobs that move money, by kind (capture, cancel, refund, transfer,"
                   " reversal) and how they ended (done, skipped, waiting, retry, failed)", ["kind", "outcome"],
                   registry=None)

Conn: TypeAlias = asyncpg.Connection | asyncpg.Pool
JOB_KINDS = ("capture", "cancel", "refund", "transfer", "reversal")
UNSETTLED = ("pending", "running", "waiting", "failed")  # job states an operator counts; done and skipped pile up


# -- customers and connected accounts -------------------------------------------------------
async def customer_id(db: Conn, user_id: str) -> str | None:
    found: str | None = await db.fetchval("SELECT customer_id FROM stripe_customers WHERE user_id = $1", user_id)
    return found


async def keep_customer_id(db: Conn, user_id: str, customer: str) -> str:
    """Record the user's customer id unless one is recorded already; returns the one that stands."""
    kept: str = await db.fetchval(
        "INSERT INTO stripe_customers (user_id, customer_id) VALUES ($1, $2)"
        " ON CONFLICT (user_id) DO UPDATE SET user_id = excluded.user_id RETURNING customer_id", user_id, customer)
    return kept


async def account(db: Conn, user_id: str) -> asyncpg.Record | None:
    return await db.fetchrow("SELECT * FROM payout_accounts WHERE user_id = $1", user_id)


async def keep_account(db: Conn, user_id: str, account_id: str) -> asyncpg.Record:
    row: asyncpg.Record = await db.fetchrow(
        "INSERT INTO payout_accounts (user_id, account_id) VALUES ($1, $2)"
        " ON CONFLICT (user_id) DO UPDATE SET updated_at = payout_accounts.updated_at RETURNING *",
        user_id, account_id)
    return row


async def update_account(db: Conn, account_id: str, *, payouts_enabled: bool, details_submitted: bool,
                         currently_due: list[str]) -> str | None:
    """Record the account's state; returns its technician (None for an account not ours)."""
    user: str | None = await db.fetchval(
        "UPDATE payout_accounts SET payouts_enabled = $2, details_submitted = $3, currently_due = $4,"
        " updated_at = now() WHERE account_id = $1 RETURNING user_id",
        account_id, payouts_enabled, details_submitted, currently_due)
    return user


# -- payments -------------------------------------------------------------------------------
async def payment(db: Conn, order_id: uuid.UUID) -> asyncpg.Record | None:
    return await db.fetchrow("SELECT * FROM payments WHERE order_id = $1", order_id)


async def keep_payment(db: Conn, order_id: uuid.UUID, intent_id: str, policy: str, amount: int,
                       currency: str) -> asyncpg.Record:
    row: asyncpg.Record = await db.fetchrow(
        "INSERT INTO payments (order_id, intent_id, policy, amount_cents, currency) VALUES ($1, $2, $3, $4, $5)"
        " ON CONFLICT (order_id) DO UPDATE SET updated_at = payments.updated_at RETURNING *",
        order_id, intent_id, policy, amount, currency)
    return row


async def lock_payment(conn: asyncpg.Connection, intent_id: str) -> asyncpg.Record | None:
    """The payment with its order's state, locked until the transaction ends (one event at a time per order)."""
    return await conn.fetchrow(
        "SELECT p.*, o.state AS order_state, o.payment_state, o.consumer_id, o.technician_id, o.brand_id"
        " FROM payments p JOIN orders o ON o.id = p.order_id WHERE p.intent_id = $1 FOR UPDATE OF p",
        intent_id)


async def record_payment(conn: asyncpg.Connection, order_id: uuid.UUID, *, state: str, charge: str | None,
                         captured: int, refunded: int, error: str | None) -> None:
    await conn.execute(
        "UPDATE payments SET charge_id = coalesce($2, charge_id), captured_cents = $3, refunded_cents = $4,"
        " last_error = $5, updated_at = now() WHERE order_id = $1", order_id, charge, captured, refunded, error)
    await conn.execute("UPDATE orders SET payment_state = $2 WHERE id = $1", order_id, state)


# -- events ---------------------------------------------------------------------------------
async def store_event(db: Conn, event_id: str, kind: str, created: datetime, source: str, payload: str) -> bool:
    """Store a verified event; True unless it was stored and applied before."""
    applied = await db.fetchval(
        "WITH stored AS (INSERT INTO stripe_events (id, type, created, source, payload)"
        " VALUES ($1, $2, $3, $4, $5::jsonb) ON CONFLICT (id) DO NOTHING RETURNING applied_at)"
        " SELECT applied_at IS NOT NULL FROM stored UNION ALL"
        " SELECT applied_at IS NOT NULL FROM stripe_events WHERE id = $1 LIMIT 1",
        event_id, kind, created, source, payload)
    return not applied


async def claim_event(conn: asyncpg.Connection, event_id: str) -> bool:
    """Lock the stored event for this transaction; False when it was applied meanwhile."""
    applied = await conn.fetchval("SELECT applied_at FROM stripe_events WHERE id = $1 FOR UPDATE", event_id)
    return applied is None


async def mark_applied(conn: asyncpg.Connection, event_id: str) -> None:
    await conn.execute("UPDATE stripe_events SET applied_at = now() WHERE id = $1", event_id)


async def seen_events(db: Conn, event_ids: list[str]) -> set[str]:
    """Of these events, the ones already applied."""
    rows = await db.fetch("SELECT id FROM stripe_events WHERE id = ANY($1::text[]) AND applied_at IS NOT NULL",
                          event_ids)
    return {r["id"] for r in rows}


# -- the scheduler --------------------------------------------------------------------------
async def schedule(db: Conn, kind: str, order_id: uuid.UUID, *, step: int = 0, amount: int | None = None,
                   delay_s: float = 0.0, note: str | None = None) -> bool:
    """Schedule a job once: False when (kind, order, step) was scheduled before."""
    status: str = await db.execute(
        "INSERT INTO money_jobs (kind, order_id, step, amount_cents, due_at, note)"
        " VALUES ($1, $2, $3, $4, now() + $5 * interval '1 second', $6) ON CONFLICT DO NOTHING",
        kind, order_id, step, amount, delay_s, note)
    return status != "INSERT 0 0"


async def schedule_settlement(db: Conn, order_id: uuid.UUID | None, *, transfer_delay_s: float,
                              cancel_fee_bp: int) -> None:
    """Schedule what the order's state and payment state call for (every order touched in the last
    week when `order_id` is None): capture a completed order's authorization, pay its technician
    (after the delay), release a cancelled order's authorization (or capture just the cancellation
    fee once a technician had accepted it), refund a cancelled paid order. Idempotent: a job exists
    once per (kind, order, step); amounts are worked out when the job first runs."""
    one = "o.id = $1" if order_id is not None else "$1::uuid IS NULL AND o.updated_at > now() - interval '7 days'"
    await db.execute(
        "INSERT INTO money_jobs (kind, order_id, amount_cents, due_at)"
        " SELECT k.kind, o.id, k.amount, k.due FROM orders o JOIN payments p ON p.order_id = o.id"
        " CROSS JOIN LATERAL (SELECT o.state = 'cancelled' AND o.payment_state = 'authorized'"
        "                            AND o.technician_id IS NOT NULL"
        "                            AND o.price_cents::bigint * $3::int / 10000 > 0 AS fee) f"
        " CROSS JOIN LATERAL (SELECT"
        "   CASE WHEN o.state = 'completed' THEN CASE WHEN o.payment_state = 'authorized' THEN 'capture'"
        "                                             ELSE 'transfer' END"
        "        WHEN o.payment_state IN ('paid', 'partially_refunded') THEN 'refund'"
        "        WHEN f.fee THEN 'capture' ELSE 'cancel' END AS kind,"
        "   CASE WHEN f.fee THEN o.price_cents::bigint * $3::int / 10000 END AS amount,"
        "   CASE WHEN o.state = 'completed' AND o.payment_state <> 'authorized'"
        "        THEN now() + $2 * interval '1 second' ELSE now() END AS due) k"
        f" WHERE {one} AND ("
        "  (o.state = 'completed' AND o.payment_state IN ('authorized', 'paid', 'partially_refunded'))"
        "  OR (o.state = 'cancelled'"
        "      AND o.payment_state IN ('unpaid', 'failed', 'authorized', 'paid', 'partially_refunded')))"
        " ON CONFLICT DO NOTHING", order_id, transfer_delay_s, cancel_fee_bp)


async def claim_jobs(db: Conn, limit: int, lease_s: float) -> list[asyncpg.Record]:
    """Due jobs (and jobs whose runner's lease ran out: it died), leased to this process.
    SKIP LOCKED lets every gateway process run the scheduler at once without taking the same job."""
    rows: list[asyncpg.Record] = await db.fetch(
        "UPDATE money_jobs j SET state = 'running', attempts = j.attempts + 1,"
        " lease_until = now() + $2 * interval '1 second', updated_at = now()"
        " FROM (SELECT id FROM money_jobs WHERE (state = 'pending' AND due_at <= now())"
        "       OR (state = 'running' AND lease_until < now())"
        "       ORDER BY due_at LIMIT $1 FOR UPDATE SKIP LOCKED) due"
        " WHERE j.id = due.id RETURNING j.*", limit, lease_s)
    return rows


async def finish_job(db: Conn, job: asyncpg.Record, state: str, *, result: str | None = None,
                     error: str | None = None, retry_in_s: float | None = None, uncount: bool = False) -> None:
    """Record a run: done, skipped, failed, waiting (for the technician's account), or pending again
    after `retry_in_s`. `uncount` takes back the attempt (waiting is not failing). Only the run that
    holds the job records (a runner whose lease ran out and was taken over records nothing)."""
    if not uncount or state != "pending":  # not a run (another job of the order held the lock)
        JOB_RUNS.labels(job["kind"], state if retry_in_s is None or state != "pending" else "retry").inc()
    await db.execute(
        "UPDATE money_jobs SET state = $2, result = coalesce($3, result), last_error = $4, lease_until = NULL,"
        " due_at = CASE WHEN $5::float8 IS NULL THEN due_at ELSE now() + $5 * interval '1 second' END,"
        " attempts = attempts - $6::int, updated_at = now() WHERE id = $1 AND state = 'running' AND attempts = $7",
        job["id"], state, result, error, retry_in_s, int(uncount), job["attempts"])


async def decide(conn: asyncpg.Connection, job: asyncpg.Record, request: str) -> str:
    """Fix the Stripe request a job makes, once: every later run replays exactly this one (same
    parameters, same idempotency key), whatever changed meanwhile. Returns the request that stands."""
    stood: str = await conn.fetchval(
        "UPDATE money_jobs SET request = coalesce(request, $2::jsonb), decided_at = coalesce(decided_at, now())"
        " WHERE id = $1 RETURNING request::text",
        job["id"], request)
    return stood


async def redecide(db: Conn, job: asyncpg.Record) -> None:
    """Forget the job's request (Stripe refused it without doing anything): its next run decides
    afresh, under a new idempotency key."""
    await db.execute("UPDATE money_jobs SET request = NULL, decided_at = NULL, generation = generation + 1"
                     " WHERE id = $1 AND attempts = $2", job["id"], job["attempts"])


async def in_flight(db: Conn, job: asyncpg.Record) -> int:
    """What the order's other jobs of the same kind have decided to ask Stripe for and not done yet."""
    total: int = await db.fetchval(
        "SELECT coalesce(sum((request->>'amount')::int), 0) FROM money_jobs WHERE order_id = $1 AND kind = $2"
        " AND id <> $3 AND request IS NOT NULL AND state IN ('pending', 'running')",
        job["order_id"], job["kind"], job["id"])
    return total


async def job_counts(db: Conn) -> tuple[dict[tuple[str, str], int], float]:
    """Fleet-wide: the jobs in each unsettled state by (kind, state), every pair present (0 when
    none), and how many seconds the most overdue pending job has been due (0 when none is)."""
    counts = dict.fromkeys(((kind, state) for kind in JOB_KINDS for state in UNSETTLED), 0)
    for row in await db.fetch("SELECT kind, state, count(*) AS n FROM money_jobs WHERE state = ANY($1::text[])"
                              " GROUP BY kind, state", list(UNSETTLED)):
        counts[row["kind"], row["state"]] = row["n"]
    overdue: float = await db.fetchval(
        "SELECT coalesce(extract(epoch FROM now() - min(due_at)), 0)::float8 FROM money_jobs"
        " WHERE state = 'pending' AND due_at <= now()")
    return counts, max(overdue, 0.0)


async def lock_order(conn: asyncpg.Connection, order_id: uuid.UUID) -> bool:
    """Take the order's money lock for this connection's session (one job per order at a time,
    across processes; released when the session ends, so a dead process frees it)."""
    taken: bool = await conn.fetchval("SELECT pg_try_advisory_lock(hashtextextended($1::uuid::text, 5))", order_id)
    return taken


async def unlock_order(conn: asyncpg.Connection, order_id: uuid.UUID) -> None:
    await conn.execute("SELECT pg_advisory_unlock(hashtextextended($1::uuid::text, 5))", order_id)


async def wake_transfers(db: Conn, technician: str | None = None) -> int:
    """Transfers waiting for a technician's payouts, released now that they are enabled (the
    technician's, or everyone's whose account is enabled: the sweep for a wake-up that raced)."""
    status: str = await db.execute(
        "UPDATE money_jobs SET state = 'pending', updated_at = now() WHERE kind = 'transfer' AND state = 'waiting'"
        " AND order_id IN (SELECT o.id FROM orders o JOIN payout_accounts a ON a.user_id = o.technician_id"
        "                  WHERE a.payouts_enabled AND ($1::text IS NULL OR o.technician_id = $1))", technician)
    return int(status.split()[-1])


async def job_context(db: Conn, order_id: uuid.UUID) -> asyncpg.Record | None:
    """What a job needs to run: the order, its payment, its technician's account."""
    return await db.fetchrow(
        "SELECT o.id, o.state, o.payment_state, o.technician_id, o.consumer_id, o.price_cents, p.intent_id,"
        " p.charge_id, p.captured_cents, p.refunded_cents, p.currency, a.account_id, a.payouts_enabled"
        " FROM orders o JOIN payments p ON p.order_id = o.id"
        " LEFT JOIN payout_accounts a ON a.user_id = o.technician_id WHERE o.id = $1", order_id)


async def record_transfer(conn: asyncpg.Connection, order_id: uuid.UUID, technician: str, account_id: str,
                          transfer_id: str, amount: int, refunded_basis: int, currency: str) -> None:
    await conn.execute(
        "INSERT INTO transfers (order_id, technician_id, account_id, transfer_id, amount_cents, refunded_basis,"
        " currency) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (order_id) DO NOTHING",
        order_id, technician, account_id, transfer_id, amount, refunded_basis, currency)


async def transfer(db: Conn, order_id: uuid.UUID) -> asyncpg.Record | None:
    return await db.fetchrow("SELECT * FROM transfers WHERE order_id = $1", order_id)


async def record_reversal(db: Conn, order_id: uuid.UUID, reversed_total: int) -> None:
    """Record the transfer's reversed total as Stripe reports it."""
    await db.execute("UPDATE transfers SET reversed_cents = greatest(reversed_cents, $2) WHERE order_id = $1",
                     order_id, reversed_total)


async def payout_totals(db: Conn, technician: str) -> tuple[int, int]:
    """(transferred, reversed) cents of the technician's executed transfers."""
    row = await db.fetchrow("SELECT coalesce(sum(amount_cents), 0) AS paid, coalesce(sum(reversed_cents), 0)"
                            " AS reversed FROM transfers WHERE technician_id = $1", technician)
    return row["paid"], row["reversed"]


async def payout_jobs(db: Conn, technician: str, limit: int = 50) -> list[asyncpg.Record]:
    """The technician's transfers not done yet, and the latest done ones, newest first."""
    rows: list[asyncpg.Record] = await db.fetch(
        "SELECT j.*, t.amount_cents AS transferred_cents, t.transfer_id FROM money_jobs j"
        " JOIN orders o ON o.id = j.order_id LEFT JOIN transfers t ON t.order_id = j.order_id"
        " WHERE o.technician_id = $1 AND j.kind = 'transfer' ORDER BY j.created_at DESC LIMIT $2",
        technician, limit)
    return rows


async def jobs_of(db: Conn, order_id: uuid.UUID) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await db.fetch(
        "SELECT * FROM money_jobs WHERE order_id = $1 ORDER BY id", order_id)
    return rows


async def job(db: Conn, job_id: int) -> asyncpg.Record | None:
    return await db.fetchrow("SELECT * FROM money_jobs WHERE id = $1", job_id)


async def retry_job(db: Conn, job_id: int, key_life_s: float) -> asyncpg.Record | None:
    """A failed job back to pending, due now, with its attempts counted afresh (the scheduler runs
    it like a new one; its decided request, if any, is replayed with the same idempotency key).
    The last error stays until the next run. None when the job is not failed, or when its request
    was decided longer than `key_life_s` ago (Stripe may have forgotten the key)."""
    row: asyncpg.Record | None = await db.fetchrow(
        "UPDATE money_jobs SET state = 'pending', due_at = now(), attempts = 0, lease_until = NULL,"
        " updated_at = now() WHERE id = $1 AND state = 'failed'"
        " AND (decided_at IS NULL OR decided_at > now() - $2 * interval '1 second') RETURNING *", job_id, key_life_s)
    return row


async def decided(db: Conn, order_id: uuid.UUID, kind: str) -> int:
    """What the order's unfinished jobs of this kind have decided to ask Stripe for."""
    total: int = await db.fetchval(
        "SELECT coalesce(sum((request->>'amount')::int), 0) FROM money_jobs WHERE order_id = $1 AND kind = $2"
        " AND request IS NOT NULL AND state IN ('pending', 'running')", order_id, kind)
    return total
