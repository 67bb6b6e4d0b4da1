"""Stripe's events, the only way money state changes here: each verified event is stored first
(deduplicated by id), then applied once, from a webhook or from the reconciler that lists
recent events, so one whose webhook was lost is applied anyway."""

import asyncio
import json
import logging
import time
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg

from handlers.context import Context
from handlers.errors import GatewayError
from handlers.money.payments import refresh_payment, stripe_of
from handlers.money.payouts import refresh_account
from handlers.money.stripe_api import calling_stripe
from storage import lifecycle, payments

log = logging.getLogger(__name__)
T = TypeVar("T")
RECONCILE_MARGIN_S = 600.0  # events are listed again for this long after a pass (clock skew, late commits)


async def apply_event(ctx: Context, event: dict[str, Any], source: str) -> bool:
    """Store then apply a verified event; False when it had been applied already. Raises
    `Unavailable` when Stripe cannot be asked now: the event stays stored and unapplied, and
    Stripe's retry (or the reconciler) applies it later."""
    access, db = stripe_of(ctx.services), ctx.services.db
    event_id, kind = event["id"], event["type"]
    created = datetime.fromtimestamp(event["created"], UTC)
    obj = event["data"]["object"]
    # Only what names the object: events carry personal data (billing details, e-mails, a
    # technician's identity), and applying one re-reads the object from Stripe anyway.
    reference = {"object": {"id": obj.get("id"), "object": obj.get("object")}}
    if not await payments.store_event(db, event_id, kind, created, source, json.dumps(reference)):
        return False
    if kind.startswith("payment_intent."):
        return await refresh_payment(ctx, access, event_id, obj["id"])
    if kind.startswith("charge.") and obj.get("payment_intent"):
        return await refresh_payment(ctx, access, event_id, obj["payment_intent"])
    if kind == "account.updated":
        return await refresh_account(ctx, access, event_id, obj["id"])
    async with db.acquire() as conn, conn.transaction():  # nothing to do for it but remember it
        applied = await payments.claim_event(conn, event_id)
        await payments.mark_applied(conn, event_id)
    return applied


async def reconcile(ctx: Context, lookback_s: float) -> int:
    """Apply the recent events Stripe has that we have not applied (a webhook that never came,
    or one that came while Stripe could not be asked). Returns how many were applied."""
    access, db = stripe_of(ctx.services), ctx.services.db
    since = int(datetime.now(UTC).timestamp() - lookback_s)
    listed: list[dict[str, Any]] = []
    params: dict[str, Any] = {"created": {"gte": since}, "limit": 100}
    with calling_stripe():
        while True:  # newest first, page by page
            page = await access.client.v1.events.list_async(params)  # type: ignore[arg-type]
            listed.extend(e.to_dict() for e in page.data)
            if not page.has_more or not page.data:
                break
            params = {**params, "starting_after": page.data[-1].id}
    done = await payments.seen_events(db, [e["id"] for e in listed])
    applied = 0
    for event in reversed(listed):  # oldest first; one that cannot be applied now does not hold up the rest
        if event["id"] in done:
            continue
        try:
            applied += await apply_event(ctx, event, "reconcile")
        except (GatewayError, asyncpg.PostgresError) as exc:
            log.warning("reconciler: event %s not applied: %r", event["id"], exc)
    return applied


async def run_reconciler(ctx: Context, interval_s: float, lookback_s: float) -> None:
    """Forever (cancel to stop): reconcile events, then schedule any settlement a crash left
    unscheduled and release waiting transfers. Every process may run it: applying is exactly-once,
    scheduling idempotent. One chore failing does not skip the other."""
    since = time.time() - lookback_s  # a full look back at start, then what came since the last pass
    while True:
        began = time.time()
        applied = await _chore("events", reconcile(ctx, began - since))
        if applied is not None:
            since = began - RECONCILE_MARGIN_S
            if applied:
                log.info("reconciler applied %d Stripe events that no webhook had brought", applied)
        await _chore("settlements", _settle_all(ctx))
        await asyncio.sleep(interval_s)


async def _settle_all(ctx: Context) -> None:
    rules, db = ctx.services.money_rules, ctx.services.db
    await payments.schedule_settlement(db, None, transfer_delay_s=rules.payout_delay_s,
                                       cancel_fee_bp=rules.cancellation_fee_bp)
    await payments.wake_transfers(db)


async def _chore(name: str, work: Awaitable[T]) -> T | None:
    """The chore's result, or None when it failed (logged; it runs again next pass)."""
    try:
        return await work
    except Exception as exc:
        if lifecycle.cancelling():
            raise
        log.warning("reconciler (%s): %r", name, exc)
        return None
