"""Technicians are paid through Stripe Connect (separate charges and transfers): onboarding to an
Express account, the payout status, and `account.updated` events. The transfers themselves are
jobs of the money scheduler (handlers.money.scheduler)."""

import logging
from datetime import UTC, datetime
from typing import Any

import asyncpg
from stripe.params import AccountCreateParams

from handlers.context import Context
from handlers.money.payments import stripe_of
from handlers.money.stripe_api import StripeAccess, calling_stripe
from handlers.routing import Router
from protocol.payments import Onboarding, PayoutItem, PayoutOnboard, PayoutReport, PayoutStatus
from storage import payments, users

log = logging.getLogger(__name__)
router = Router()


@router.route(PayoutOnboard, roles=["technician"])
async def onboard(ctx: Context, req: PayoutOnboard) -> Onboarding:
    assert ctx.identity is not None
    access, db, user_id = stripe_of(ctx.services), ctx.services.db, ctx.identity.user_id
    row = await payments.account(db, user_id)
    if row is None:
        params: AccountCreateParams = {"type": "express", "country": access.settings.connect_country,
                                       "capabilities": {"transfers": {"requested": True}},
                                       "metadata": {"user_id": user_id}}
        if email := await users.email_of(db, ctx.services.cipher, user_id):
            params["email"] = email
        with calling_stripe():
            account = await access.client.v1.accounts.create_async(params, {"idempotency_key": f"account-{user_id}"})
        row = await payments.keep_account(db, user_id, account.id)
    public = ctx.services.public_url  # Stripe's hosted pages send technicians back to the HTTP side
    with calling_stripe():
        link = await access.client.v1.account_links.create_async(
            {"account": row["account_id"], "type": "account_onboarding",
             "refresh_url": public.to("/connect/refresh"), "return_url": public.to("/connect/return")})
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
        await release_waiting(ctx, await record_account(db, account))
        row = await payments.account(db, user_id)
    jobs = await payments.payout_jobs(db, user_id)
    paid, reversed_total = await payments.payout_totals(db, user_id)
    return PayoutReport(
        account_id=row["account_id"] if row else None, payouts_enabled=bool(row and row["payouts_enabled"]),
        details_submitted=bool(row and row["details_submitted"]),
        currently_due=list(row["currently_due"]) if row else [], paid_cents=paid,
        reversed_cents=reversed_total,
        transfers=[PayoutItem(order_id=str(j["order_id"]), state=j["state"], due_at=j["due_at"],
                              attempts=j["attempts"], amount_cents=j["transferred_cents"],
                              transfer_id=j["transfer_id"], last_error=j["last_error"]) for j in jobs])


async def record_account(conn: asyncpg.Connection | asyncpg.Pool, account: Any) -> str | None:
    """Record the account as Stripe has it; returns its technician when payouts are enabled."""
    requirements = account.requirements
    due = list(requirements.currently_due or []) if requirements else []
    technician = await payments.update_account(
        conn, account.id, payouts_enabled=bool(account.payouts_enabled),
        details_submitted=bool(account.details_submitted), currently_due=due)
    return technician if account.payouts_enabled else None


async def release_waiting(ctx: Context, technician: str | None) -> None:
    if technician and await payments.wake_transfers(ctx.services.db, technician):
        log.info("payouts enabled for %s: waiting transfers released", technician)


async def refresh_account(ctx: Context, access: StripeAccess, event_id: str, account_id: str) -> bool:
    """An `account.updated` event: read the account afresh and record it, once per event. The
    account's row is locked meanwhile, so two events cannot record in the wrong order."""
    async with access.applying, ctx.services.db.acquire() as conn, conn.transaction():
        if not await payments.claim_event(conn, event_id):
            return False
        await conn.execute("SELECT 1 FROM payout_accounts WHERE account_id = $1 FOR UPDATE", account_id)
        with calling_stripe():
            account = await access.client.v1.accounts.retrieve_async(account_id)
        technician = await record_account(conn, account)
        await payments.mark_applied(conn, event_id)
    await release_waiting(ctx, technician)  # (a crash here: the reconciler's sweep releases them)
    return True
