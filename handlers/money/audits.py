"""Money and order audits: every order checked against its payment, transfer, reversals, money jobs
and Stripe events, on demand (`admin.audit`) and on a schedule (`AUDIT_INTERVAL_S`, one process of
the fleet at a time). The checks are SQL over whole tables (storage.audits), plus what only Stripe
knows, read for a bounded number of payments: when each uncaptured authorization expires
(`capture_before`), and whether a transfer missing here exists at Stripe. Runs and anomalies are
stored; anomalies a run sees first go to the live feed.

The gateway does not capture early or re-authorize an expiring hold by itself: capturing before the
job is done would charge the consumer for work not done yet, and a new authorization needs the
consumer's card again. The audit flags it (`authorization_expiring`) so staff act in time."""

import asyncio
import contextlib
import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import stripe

from handlers.admin import feed
from handlers.context import Context
from handlers.errors import N_, BadRequest, GatewayError, NotFound
from handlers.money.stripe_api import StripeAccess
from handlers.routing import Router
from protocol.audits import Anomaly, AuditList, AuditRun, Audits, AuditStart
from storage import audits, lifecycle

log = logging.getLogger(__name__)
router = Router()
FEED_LIMIT = 100  # new anomalies a run pushes to the feed (a first run on old data may find thousands)
HOLD = timedelta(days=7)  # Stripe's usual hold on a card authorization, when a charge does not say
Finding = tuple[str, uuid.UUID | None, str | None, str, dict[str, Any]]  # kind, order, brand, fingerprint, evidence


async def audit_now(ctx: Context, trigger: str, by: str | None = None) -> int:
    """Run every check; returns the run's id. What a failing part leaves unchecked is the run's `error`."""
    db, rules = ctx.services.db, ctx.services.money_rules
    run_id = await audits.start_run(db, trigger, by)
    checked, error = False, None
    try:
        rows = await audits.find(db, fee_bp=rules.platform_fee_bp, grace_s=rules.audit_grace_s,
                                 job_stuck_s=rules.audit_job_stuck_s, stuck_after_s=rules.stuck_after_s)
        found: list[Finding] = [(r[0], r[1], r[2], r[3], msgspec.json.decode(r[4])) for r in rows]
        if ctx.services.stripe is not None:
            try:
                await transfers_at_stripe(ctx.services.stripe, found, rules.audit_stripe_limit)
                found += await expiring(ctx, ctx.services.stripe)
                checked = True
            except (stripe.StripeError, GatewayError) as exc:
                error = f"Stripe not (fully) checked: {exc}"[:500]
                log.warning("audit %d: %s", run_id, error)
        new = await audits.record(db, run_id, found)
    except BaseException as exc:  # (a shutdown's cancellation too: the run is not left "still running")
        with contextlib.suppress(Exception):
            await audits.finish_run(db, run_id, stripe_checked=checked, error=repr(exc)[:500])
        raise
    await audits.finish_run(db, run_id, stripe_checked=checked, error=error)
    for anomaly in new[:FEED_LIMIT]:
        await feed.publish(ctx, "audit.anomaly", brand=anomaly["brand_id"],
                           order_id=str(anomaly["order_id"]) if anomaly["order_id"] else None, detail=anomaly["kind"])
    if new:
        log.info("audit %d found %d new anomalies", run_id, len(new))
    return run_id


async def transfers_at_stripe(access: StripeAccess, found: list[Finding], limit: int) -> None:
    """For each missing transfer (the first `limit`), whether Stripe has one for the order that is
    not recorded here (its transfer group): added to the evidence as `stripe_transfers`."""
    calls = asyncio.Semaphore(8)

    async def one(evidence: dict[str, Any], order_id: uuid.UUID) -> None:
        async with calls:
            page = await access.client.v1.transfers.list_async({"transfer_group": f"order-{order_id}", "limit": 10})
        evidence["stripe_transfers"] = [{"id": t.id, "amount_cents": t.amount, "destination": t.destination}
                                        for t in page.data]

    missing = [(f[4], f[1]) for f in found if f[0] == "transfer_missing" and f[1] is not None][:limit]
    await asyncio.gather(*(one(evidence, order_id) for evidence, order_id in missing))


async def expiring(ctx: Context, access: StripeAccess) -> list[Finding]:
    """Authorizations whose hold ends within the margin (or has ended), as Stripe's charge says
    (`payment_method_details.card.capture_before`); the oldest `audit_stripe_limit`, 8 calls at a time."""
    rules = ctx.services.money_rules
    rows = await audits.authorized(ctx.services.db, rules.audit_stripe_limit)
    calls = asyncio.Semaphore(8)

    async def one(row: Any) -> Finding | None:
        async with calls:
            try:
                intent = await access.client.v1.payment_intents.retrieve_async(
                    row["intent_id"], {"expand": ["latest_charge"]})
            except stripe.InvalidRequestError:  # Stripe knows no such intent: nothing to read a deadline from
                log.warning("audit: payment intent %s of order %s unknown to Stripe", row["intent_id"],
                            row["order_id"])
                return None
        charge = intent.to_dict().get("latest_charge")
        charge = charge if isinstance(charge, dict) else {}
        card = (charge.get("payment_method_details") or {}).get("card") or {}
        if card.get("capture_before"):
            deadline, estimated = datetime.fromtimestamp(card["capture_before"], UTC), False
        else:  # not said: Stripe's usual hold from the authorization
            created = charge.get("created")
            deadline = (datetime.fromtimestamp(created, UTC) if created else row["created_at"]) + HOLD
            estimated = True
        left = (deadline - datetime.now(UTC)).total_seconds()
        if left > rules.audit_capture_margin_s:
            return None
        return ("authorization_expiring", row["order_id"], row["brand_id"],
                f"authorization_expiring:{row['order_id']}:{charge.get('id') or row['intent_id']}",
                {"intent_id": row["intent_id"], "charge_id": charge.get("id"), "intent_status": intent.status,
                 "capture_before": deadline.isoformat(), "estimated": estimated, "hours_left": round(left / 3600, 1),
                 "expired": left <= 0, "order_state": row["state"]})

    results = await asyncio.gather(*(one(r) for r in rows))
    return [r for r in results if r is not None]


async def run_audits(ctx: Context) -> None:
    """Forever (cancel to stop): every AUDIT_INTERVAL_S, one process of the fleet runs the audit (an
    advisory lock held for the run, and the fleet's last scheduled run at least an interval ago)."""
    interval = ctx.services.money_rules.audit_interval_s
    while True:
        await asyncio.sleep(interval)
        try:
            async with ctx.services.db.acquire() as conn:
                if not await audits.lock_schedule(conn):
                    continue  # another process is running it
                try:
                    if await audits.scheduled_due(conn, interval * 0.9):  # (timers drift a little)
                        await audit_now(ctx, "schedule")
                finally:
                    try:
                        await audits.unlock_schedule(conn)
                    except BaseException:
                        conn.terminate()  # it may still hold the lock: never back to the pool
                        raise
        except Exception:
            if lifecycle.cancelling():
                raise
            log.exception("scheduled audit")  # and again next interval


def run_view(row: Any) -> AuditRun:
    return AuditRun(id=row["id"], started_at=row["started_at"], finished_at=row["finished_at"],
                    trigger=row["trigger"], triggered_by=row["triggered_by"], stripe_checked=row["stripe_checked"],
                    error=row["error"], counts=msgspec.json.decode(row["counts"]), new=row["new"])


async def page(ctx: Context, run_id: int, *, kind: str | None = None, order_id: uuid.UUID | None = None,
               before: int | None = None, limit: int = 100) -> Audits:
    db = ctx.services.db
    run = await audits.run(db, run_id)
    if run is None:
        raise NotFound(N_("No such audit run."))
    rows = await audits.anomalies(db, run_id, kind=kind, order_id=order_id, before=before, limit=limit + 1)
    found = [Anomaly(id=r["id"], kind=r["kind"], order_id=str(r["order_id"]) if r["order_id"] else None,
                     brand=r["brand_id"], evidence=msgspec.json.decode(r["evidence"]), first_seen_at=r["first_seen_at"],
                     new=r["new"]) for r in rows[:limit]]
    return Audits(run=run_view(run), runs=[], anomalies=found,
                  next_before=found[-1].id if len(rows) > limit else None)


@router.route(AuditStart, roles=["admin"])
async def start(ctx: Context, req: AuditStart) -> Audits:
    assert ctx.identity is not None
    return await page(ctx, await audit_now(ctx, "admin", ctx.identity.user_id), limit=req.limit)


@router.route(AuditList, roles=["admin"])
async def listing(ctx: Context, req: AuditList) -> Audits:
    if req.run_id is not None:
        order = None
        if req.order_id is not None:
            try:
                order = uuid.UUID(req.order_id)
            except ValueError:
                raise NotFound(N_("No such order.")) from None
        return await page(ctx, req.run_id, kind=req.kind, order_id=order, before=req.before, limit=req.limit)
    if req.kind is not None or req.order_id is not None:
        raise BadRequest(N_("kind and order_id filter one run's anomalies: give its run_id."))
    rows = await audits.runs(ctx.services.db, before=req.before, limit=req.limit + 1)
    runs = [run_view(r) for r in rows[:req.limit]]
    return Audits(run=None, runs=runs, anomalies=[], next_before=runs[-1].id if len(rows) > req.limit else None)
