"""Technicians are paid through Stripe Connect (separate charges and transfers), and the durable
scheduler that makes every call moving money happen exactly once.

Jobs live in PostgreSQL (`money_jobs`); any number of gateway processes run the scheduler, each
leasing due jobs with SKIP LOCKED. A process that dies mid-call loses its lease and another runs
the job again, with the same Stripe idempotency key, so Stripe moves the money once."""

import asyncio
import logging
import random
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import stripe
from stripe.params import AccountCreateParams

from handlers.context import Context
from handlers.errors import Unavailable
from handlers.payments import stripe_of
from handlers.routing import Router
from handlers.stripe_api import StripeAccess, calling_stripe
from protocol.payments import Onboarding, PayoutItem, PayoutOnboard, PayoutReport, PayoutStatus
from storage import lifecycle, payments, users

log = logging.getLogger(__name__)
router = Router()
BATCH = 20


@router.route(PayoutOnboard, roles=["technician"])
async def onboard(ctx: Context, req: PayoutOnboard) -> Onboarding:
    assert ctx.identity is not None
    access, db, user_id = stripe_of(ctx.services), ctx.services.db, ctx.identity.user_id
    row = await payments.account(db, user_id)
    if row is None:
        params: AccountCreateParams = {"type": "express", "country": access.settings.connect_country,
                                       "capabilities": {"transfers": {"requested": True}},
                                       "metadata": {"user_id": user_id}}
        if email := await users.email_of(db, user_id):
            params["email"] = email
        with calling_stripe():
            account = await access.client.v1.accounts.create_async(params, {"idempotency_key": f"account-{user_id}"})
        row = await payments.keep_account(db, user_id, account.id)
    base = access.public_url.rstrip("/")
    with calling_stripe():
        link = await access.client.v1.account_links.create_async(
            {"account": row["account_id"], "type": "account_onboarding",
             "refresh_url": f"{base}/connect/refresh", "return_url": f"{base}/connect/return"})
    return Onboarding(account_id=row["account_id"], url=link.url,
                      expires_at=datetime.fromtimestamp(link.expires_at, UTC))


@router.route(PayoutStatus, roles=["technician"])
async def status(ctx: Context, req: PayoutStatus) -> PayoutReport:
    assert ctx.identity is not None
    access, db, user_id = stripe_of(ctx.services), ctx.services.db, ctx.identity.user_id
    row = await payments.account(db, user_id)
    if row is not None and not row["payouts_enabled"]:  # maybe onboarding just finished: ask Stripe
        with calling_stripe():
            account = await access.client.v1.accounts.retrieve_async(row["account_id"])
        await record_account(ctx, account)
        row = await payments.account(db, user_id)
    jobs = await payments.payout_jobs(db, user_id)
    totals = await db.fetchrow("SELECT coalesce(sum(amount_cents), 0) AS paid, coalesce(sum(reversed_cents), 0)"
                               " AS reversed FROM transfers WHERE technician_id = $1", user_id)
    return PayoutReport(
        account_id=row["account_id"] if row else None, payouts_enabled=bool(row and row["payouts_enabled"]),
        details_submitted=bool(row and row["details_submitted"]),
        currently_due=list(row["currently_due"]) if row else [], paid_cents=totals["paid"],
        reversed_cents=totals["reversed"],
        transfers=[PayoutItem(order_id=str(j["order_id"]), state=j["state"], due_at=j["due_at"],
                              attempts=j["attempts"], amount_cents=j["transferred_cents"],
                              transfer_id=j["transfer_id"], last_error=j["last_error"]) for j in jobs])


async def record_account(ctx: Context, account: Any) -> None:
    requirements = account.requirements
    due = list(requirements.currently_due or []) if requirements else []
    technician = await payments.update_account(
        ctx.services.db, account.id, payouts_enabled=bool(account.payouts_enabled),
        details_submitted=bool(account.details_submitted), currently_due=due)
    if technician and account.payouts_enabled and await payments.wake_transfers(ctx.services.db, technician):
        log.info("payouts enabled for %s: waiting transfers released", technician)


async def refresh_account(ctx: Context, access: StripeAccess, event_id: str, account_id: str) -> bool:
    """An `account.updated` event: read the account afresh and record it (once per event)."""
    async with ctx.services.db.acquire() as conn, conn.transaction():
        if not await payments.claim_event(conn, event_id):
            return False
        await conn.execute("SELECT 1 FROM payout_accounts WHERE account_id = $1 FOR UPDATE", account_id)
        with calling_stripe():
            account = await access.client.v1.accounts.retrieve_async(account_id)
        await payments.mark_applied(conn, event_id)
    await record_account(ctx, account)
    return True


# -- the scheduler ---------------------------------------------------------------------------
async def run_scheduler(ctx: Context) -> None:
    """Run due money jobs, forever (cancel to stop)."""
    while True:
        jobs: list[asyncpg.Record] = []
        try:
            jobs = await payments.claim_jobs(ctx.services.db, BATCH, ctx.services.rules.money_lease_s)
            for job in jobs:
                await run_job(ctx, job)
        except (OSError, asyncpg.PostgresError) as exc:
            if lifecycle.cancelling():
                raise
            log.warning("money scheduler: %r", exc)
        if not jobs:
            await asyncio.sleep(ctx.services.rules.money_poll_s)


async def run_job(ctx: Context, job: asyncpg.Record) -> None:
    db, rules = ctx.services.db, ctx.services.rules
    try:
        outcome, result = await RUNNERS[job["kind"]](ctx, job)
    except (stripe.StripeError, Unavailable) as exc:
        error = str(getattr(exc, "user_message", None) or exc)[:500]
        if job["attempts"] >= rules.money_max_attempts:
            log.error("%s of order %s failed for good after %d attempts: %s", job["kind"], job["order_id"],
                      job["attempts"], error)
            await payments.finish_job(db, job["id"], "failed", error=error)
        else:
            delay = rules.money_retry_base_s * 2 ** (job["attempts"] - 1) * random.uniform(0.8, 1.2)
            log.warning("%s of order %s failed (attempt %d), retrying in %.1f s: %s", job["kind"], job["order_id"],
                        job["attempts"], delay, error)
            await payments.finish_job(db, job["id"], "pending", error=error, retry_in_s=delay)
        return
    await payments.finish_job(db, job["id"], outcome, result=result, uncount=outcome == "waiting")


Outcome = tuple[str, str | None]


def _key(job: asyncpg.Record) -> stripe.RequestOptions:
    return {"idempotency_key": f"{job['kind']}-{job['order_id']}-{job['step']}"}


async def _capture(ctx: Context, job: asyncpg.Record) -> Outcome:
    access, info = stripe_of(ctx.services), await payments.job_context(ctx.services.db, job["order_id"])
    if info is None or info["payment_state"] != "authorized":
        return "skipped", None
    intent = await access.client.v1.payment_intents.capture_async(info["intent_id"], None, _key(job))
    return "done", intent.id


async def _cancel(ctx: Context, job: asyncpg.Record) -> Outcome:
    access, info = stripe_of(ctx.services), await payments.job_context(ctx.services.db, job["order_id"])
    if info is None or info["payment_state"] not in ("unpaid", "failed", "authorized"):
        return "skipped", None
    intent = await access.client.v1.payment_intents.cancel_async(
        info["intent_id"], {"cancellation_reason": "requested_by_customer"}, _key(job))
    return "done", intent.id


async def _refund(ctx: Context, job: asyncpg.Record) -> Outcome:
    access, info = stripe_of(ctx.services), await payments.job_context(ctx.services.db, job["order_id"])
    if info is None or not job["amount_cents"] or job["amount_cents"] <= 0:
        return "skipped", None
    refund = await access.client.v1.refunds.create_async(
        {"payment_intent": info["intent_id"], "amount": job["amount_cents"],
         "metadata": {"order_id": str(job["order_id"]), "reason": job["note"] or ""}}, _key(job))
    return "done", refund.id


def share(captured: int, refunded: int, fee_bp: int) -> int:
    """The technician's part of what the consumer paid and kept paid, in cents (rounded down)."""
    return max(captured - refunded, 0) * (10_000 - fee_bp) // 10_000


async def _transfer(ctx: Context, job: asyncpg.Record) -> Outcome:
    """Pay the technician: amount less the platform fee, from this order's charge. Waits (without
    spending attempts) while the technician cannot receive payouts."""
    access, db, rules = stripe_of(ctx.services), ctx.services.db, ctx.services.rules
    info = await payments.job_context(db, job["order_id"])
    if info is None or info["payment_state"] not in ("paid", "partially_refunded") or not info["technician_id"]:
        return "skipped", None
    if await payments.transfer(db, job["order_id"]):
        return "done", None
    if not info["account_id"] or not info["payouts_enabled"]:
        return "waiting", None
    amount = share(info["captured_cents"], info["refunded_cents"], rules.platform_fee_bp)
    if amount <= 0:
        return "skipped", None
    transfer = await access.client.v1.transfers.create_async(
        {"amount": amount, "currency": info["currency"].lower(), "destination": info["account_id"],
         "source_transaction": info["charge_id"], "transfer_group": f"order-{job['order_id']}",
         "metadata": {"order_id": str(job["order_id"]), "technician_id": info["technician_id"]}}, _key(job))
    async with db.acquire() as conn, conn.transaction():
        # The payment's lock orders this against a refund being applied: whichever comes second
        # sees the other, so a refund that raced the transfer still gets its reversal.
        now = await conn.fetchval("SELECT refunded_cents FROM payments WHERE order_id = $1 FOR UPDATE",
                                  job["order_id"])
        await payments.record_transfer(conn, job["order_id"], info["technician_id"], info["account_id"],
                                       transfer.id, transfer.amount, info["refunded_cents"], info["currency"])
        if now > info["refunded_cents"]:
            await payments.schedule(conn, "reversal", job["order_id"], step=now)
    return "done", transfer.id


async def _reversal(ctx: Context, job: asyncpg.Record) -> Outcome:
    """A refund after the payout takes back the technician's share of the refunded amount
    (job step = the refunded total this reversal settles)."""
    access, db, rules = stripe_of(ctx.services), ctx.services.db, ctx.services.rules
    done = await payments.transfer(db, job["order_id"])
    if done is None:
        return "skipped", None
    target = min(done["amount_cents"], (job["step"] - done["refunded_basis"]) * (10_000 - rules.platform_fee_bp)
                 // 10_000)
    amount = target - done["reversed_cents"]
    if amount <= 0:
        return "skipped", None
    reversal = await access.client.v1.transfers.reversals.create_async(
        done["transfer_id"], {"amount": amount, "metadata": {"order_id": str(job["order_id"])}}, _key(job))
    await payments.record_reversal(db, job["order_id"], target)
    return "done", reversal.id


RUNNERS = {"capture": _capture, "cancel": _cancel, "refund": _refund, "transfer": _transfer, "reversal": _reversal}


async def settle(ctx: Context, order_id: uuid.UUID) -> None:
    """After an order's state changed: schedule what its payment now calls for."""
    rules = ctx.services.rules
    if ctx.services.stripe is not None:
        await payments.schedule_settlement(ctx.services.db, order_id, transfer_delay_s=rules.payout_delay_s,
                                           cancel_fee_bp=rules.cancellation_fee_bp)

