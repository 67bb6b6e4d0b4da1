"""The durable scheduler of the calls that move money: capture, cancel, refund, transfer, reversal.

Jobs are rows in PostgreSQL (`money_jobs`), scheduled idempotently from the orders' and payments'
states. Every gateway process runs the scheduler: it leases one due job at a time (SKIP LOCKED)
and holds the order's advisory lock while running it, so two jobs of one order never run at once,
on any process. A job's first run decides its Stripe request from Stripe's own figures and stores
it; every rerun (after a failure, or after its process died mid-call and the lease ran out)
replays exactly that request with the same idempotency key, so Stripe moves the money once."""

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import stripe

from handlers.admin import feed
from handlers.context import Context
from handlers.errors import GatewayError
from handlers.money.cancellation import cancellation_fee
from handlers.money.payments import stripe_of
from handlers.money.stripe_api import charge_figures
from storage import lifecycle, payments

log = logging.getLogger(__name__)
Decision = dict[str, Any] | str  # a request to make, or an outcome without one: skipped, waiting, done


async def run_scheduler(ctx: Context) -> None:
    """Run due money jobs, forever (cancel to stop)."""
    rules = ctx.services.money_rules
    while True:
        jobs: list[asyncpg.Record] = []
        try:
            jobs = await payments.claim_jobs(ctx.services.db, 1, rules.money_lease_s)
            for job in jobs:
                await run_job(ctx, job)
        except Exception:
            if lifecycle.cancelling():
                raise
            log.exception("money scheduler")  # and go on: the job is retried when its lease runs out
        if not jobs:
            await asyncio.sleep(rules.money_poll_s)


async def run_job(ctx: Context, job: asyncpg.Record) -> None:
    rules = ctx.services.money_rules
    async with ctx.services.db.acquire() as conn:
        held: bool | None = None  # unknown until the lock query answers
        try:
            held = await payments.lock_order(conn, job["order_id"])
            if not held:  # another job of this order is running
                await payments.finish_job(conn, job, "pending", retry_in_s=rules.money_poll_s, uncount=True)
                return
            await _attempt(ctx, conn, job)
        finally:
            if held is not False:
                try:
                    await payments.unlock_order(conn, job["order_id"])
                except BaseException:
                    conn.terminate()  # a session that may still hold the lock must not go back to the pool
                    raise


async def _attempt(ctx: Context, conn: asyncpg.Connection, job: asyncpg.Record) -> None:
    rules, kind = ctx.services.money_rules, KINDS[job["kind"]]
    try:
        if job["request"] is None:
            info = await payments.job_context(ctx.services.db, job["order_id"])
            decided = "skipped" if info is None else await kind.decide(ctx, job, info)  # no payment: nothing to do
            if isinstance(decided, str):
                await payments.finish_job(conn, job, decided, uncount=decided == "waiting")
                return
            request = json.loads(await payments.decide(conn, job, json.dumps(decided)))
        else:
            request = json.loads(job["request"])
        result = await kind.send(ctx, job, request)
        await kind.record(ctx, job, request, result)
    except Exception as exc:
        if lifecycle.cancelling():
            raise
        if not isinstance(exc, stripe.StripeError | GatewayError):
            log.exception("%s of order %s", job["kind"], job["order_id"])
        if isinstance(exc, stripe.InvalidRequestError | stripe.CardError):
            # Refused outright, so it moved nothing: the next run decides again from the new figures
            # (a refund may have landed between deciding a transfer and sending it).
            await payments.redecide(conn, job)
        error = str(getattr(exc, "user_message", None) or exc)[:500]
        if job["attempts"] >= rules.money_max_attempts:
            log.error("%s of order %s failed for good after %d attempts: %s", job["kind"], job["order_id"],
                      job["attempts"], error)
            await payments.finish_job(conn, job, "failed", error=error)
        else:
            delay = rules.money_retry_base_s * 2 ** (job["attempts"] - 1) * random.uniform(0.8, 1.2)
            log.warning("%s of order %s failed (attempt %d), retrying in %.1f s: %s", job["kind"], job["order_id"],
                        job["attempts"], delay, error)
            await payments.finish_job(conn, job, "pending", error=error, retry_in_s=delay)
        return
    await payments.finish_job(conn, job, "done", result=result)


def _key(job: asyncpg.Record) -> stripe.RequestOptions:
    return {"idempotency_key": f"{job['kind']}-{job['order_id']}-{job['step']}-{job['generation']}"}


async def _charge_of(ctx: Context, intent_id: str) -> tuple[int, int, str | None]:
    """(captured, refunded, charge id) of a PaymentIntent, as Stripe has them now."""
    intent = await stripe_of(ctx.services).client.v1.payment_intents.retrieve_async(
        intent_id, {"expand": ["latest_charge"]})
    return charge_figures(intent)


async def _nothing(ctx: Context, job: asyncpg.Record, request: dict[str, Any], result: str) -> None:
    """Stripe's event about it brings the new state (handlers.payments.refresh_payment)."""


# -- capture: a completed job's authorization, or just the cancellation fee -------------------
async def _decide_capture(ctx: Context, job: asyncpg.Record, info: asyncpg.Record) -> Decision:
    if info["payment_state"] != "authorized":
        return "skipped"
    return {"intent": info["intent_id"], "amount_to_capture": job["amount_cents"]}


async def _capture(ctx: Context, job: asyncpg.Record, request: dict[str, Any]) -> str:
    params: Any = {"amount_to_capture": request["amount_to_capture"]} if request["amount_to_capture"] else None
    intent = await stripe_of(ctx.services).client.v1.payment_intents.capture_async(request["intent"], params,
                                                                                   _key(job))
    return intent.id


# -- cancel: release a cancelled order's authorization (or an intent never paid) ---------------
async def _decide_cancel(ctx: Context, job: asyncpg.Record, info: asyncpg.Record) -> Decision:
    if info["payment_state"] not in ("unpaid", "failed", "authorized"):
        return "skipped"
    return {"intent": info["intent_id"]}


async def _cancel(ctx: Context, job: asyncpg.Record, request: dict[str, Any]) -> str:
    intent = await stripe_of(ctx.services).client.v1.payment_intents.cancel_async(
        request["intent"], {"cancellation_reason": "requested_by_customer"}, _key(job))
    return intent.id


# -- refund: a cancelled paid order (step 0), or an admin's refund (steps 1, 2...) ------------
async def _decide_refund(ctx: Context, job: asyncpg.Record, info: asyncpg.Record) -> Decision:
    captured, refunded, _ = await _charge_of(ctx, info["intent_id"])
    if job["step"] == 0:  # cancellation: back to what the consumer owes (the fee once accepted)
        fee = cancellation_fee(ctx.services.money_rules, info["price_cents"], info["technician_id"])
        amount = captured - fee - refunded
    else:
        amount = min(job["amount_cents"] or 0, captured - refunded)
    amount = min(amount, captured - refunded - await payments.in_flight(ctx.services.db, job))
    if amount <= 0:
        return "skipped"
    return {"intent": info["intent_id"], "amount": amount, "reason": job["note"] or ""}


async def _refund(ctx: Context, job: asyncpg.Record, request: dict[str, Any]) -> str:
    refund = await stripe_of(ctx.services).client.v1.refunds.create_async(
        {"payment_intent": request["intent"], "amount": request["amount"],
         "metadata": {"order_id": str(job["order_id"]), "reason": request["reason"]}}, _key(job))
    return refund.id


# -- transfer: the technician's share, from the order's charge ---------------------------------
def share(captured: int, refunded: int, fee_bp: int) -> int:
    """The technician's part of what the consumer paid and kept paid, in cents (rounded down)."""
    return max(captured - refunded, 0) * (10_000 - fee_bp) // 10_000


async def _decide_transfer(ctx: Context, job: asyncpg.Record, info: asyncpg.Record) -> Decision:
    """Waits (without spending attempts) while the technician cannot receive payouts."""
    db = ctx.services.db
    if info["payment_state"] not in ("paid", "partially_refunded") or not info["technician_id"]:
        return "skipped"
    if await payments.transfer(db, job["order_id"]):
        return "done"
    if not info["account_id"] or not info["payouts_enabled"]:
        return "waiting"
    captured, refunded, charge = await _charge_of(ctx, info["intent_id"])
    amount = share(captured, refunded, ctx.services.money_rules.platform_fee_bp)
    if amount <= 0:
        return "skipped"
    return {"amount": amount, "currency": info["currency"].lower(), "destination": info["account_id"],
            "charge": charge, "basis": refunded, "captured": captured, "technician": info["technician_id"],
            "fee_bp": ctx.services.money_rules.platform_fee_bp}  # (kept for the audit's check of the amount)


async def _transfer(ctx: Context, job: asyncpg.Record, request: dict[str, Any]) -> str:
    transfer = await stripe_of(ctx.services).client.v1.transfers.create_async(
        {"amount": request["amount"], "currency": request["currency"], "destination": request["destination"],
         "source_transaction": request["charge"], "transfer_group": f"order-{job['order_id']}",
         "metadata": {"order_id": str(job["order_id"]), "technician_id": request["technician"]}}, _key(job))
    return transfer.id


async def _record_transfer(ctx: Context, job: asyncpg.Record, request: dict[str, Any], transfer_id: str) -> None:
    async with ctx.services.db.acquire() as conn, conn.transaction():
        # The payment's lock orders this against a refund being applied: whichever comes second
        # sees the other, so a refund made after the amount was decided still gets its reversal.
        refunded = await conn.fetchval("SELECT refunded_cents FROM payments WHERE order_id = $1 FOR UPDATE",
                                       job["order_id"])
        await payments.record_transfer(conn, job["order_id"], request["technician"], request["destination"],
                                       transfer_id, request["amount"], request["basis"],
                                       request["currency"])
        if refunded > request["basis"]:
            await payments.schedule(conn, "reversal", job["order_id"], step=refunded)
        brand = await conn.fetchval("SELECT brand_id FROM orders WHERE id = $1", job["order_id"])
    await feed.publish(ctx, "payout", brand=brand, order_id=str(job["order_id"]), user_id=request["technician"],
                       state="transferred", amount_cents=request["amount"])


# -- reversal: a refund after the payout takes back the technician's share of it ---------------
async def _decide_reversal(ctx: Context, job: asyncpg.Record, info: asyncpg.Record) -> Decision:
    """Step = the refunded total this reversal settles; the target is the transfer's share of
    what was refunded after its amount was decided, less what Stripe reversed already."""
    db = ctx.services.db
    done = await payments.transfer(db, job["order_id"])
    if done is None or info["captured_cents"] <= done["refunded_basis"]:
        return "skipped"
    target = min(done["amount_cents"], done["amount_cents"] * (job["step"] - done["refunded_basis"])
                 // (info["captured_cents"] - done["refunded_basis"]))
    transfer = await stripe_of(ctx.services).client.v1.transfers.retrieve_async(done["transfer_id"])
    await payments.record_reversal(db, job["order_id"], transfer.amount_reversed)
    amount = target - transfer.amount_reversed - await payments.in_flight(db, job)  # and what siblings will reverse
    if amount <= 0:
        return "skipped"
    return {"transfer_id": done["transfer_id"], "amount": amount}


async def _reverse(ctx: Context, job: asyncpg.Record, request: dict[str, Any]) -> str:
    reversal = await stripe_of(ctx.services).client.v1.transfers.reversals.create_async(
        request["transfer_id"], {"amount": request["amount"], "metadata": {"order_id": str(job["order_id"])}},
        _key(job))
    return reversal.id


async def _record_reversal(ctx: Context, job: asyncpg.Record, request: dict[str, Any], reversal_id: str) -> None:
    transfer = await stripe_of(ctx.services).client.v1.transfers.retrieve_async(request["transfer_id"])
    await payments.record_reversal(ctx.services.db, job["order_id"], transfer.amount_reversed)


@dataclass(frozen=True, slots=True)
class Kind:
    decide: Callable[[Context, asyncpg.Record, asyncpg.Record], Awaitable[Decision]]  # (job, job_context)
    send: Callable[[Context, asyncpg.Record, dict[str, Any]], Awaitable[str]]
    record: Callable[[Context, asyncpg.Record, dict[str, Any], str], Awaitable[None]] = _nothing


async def settle(ctx: Context, order_id: Any) -> None:
    """After an order's state changed: schedule what its payment now calls for."""
    rules = ctx.services.money_rules
    if ctx.services.stripe is not None:
        await payments.schedule_settlement(ctx.services.db, order_id, transfer_delay_s=rules.payout_delay_s,
                                           cancel_fee_bp=rules.cancellation_fee_bp)


KINDS = {"capture": Kind(_decide_capture, _capture), "cancel": Kind(_decide_cancel, _cancel),
         "refund": Kind(_decide_refund, _refund), "transfer": Kind(_decide_transfer, _transfer, _record_transfer),
         "reversal": Kind(_decide_reversal, _reverse, _record_reversal)}
