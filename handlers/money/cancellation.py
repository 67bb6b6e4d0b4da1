"""What cancelling an order does with its payment, by the money rules: the terms staff are shown
before cancelling (`admin.cancel.preview`) and told after (`admin.cancel`). The money jobs that
carry them out (handlers.money.scheduler, storage.payments.schedule_settlement) apply the same rules."""

import asyncpg

from handlers.context import Context
from handlers.money.settings import MoneyRules
from protocol.moderation import CancelTerms, Settlement
from protocol.orders import OrderState
from storage import payments


def cancellation_fee(rules: MoneyRules, price_cents: int, technician_id: str | None) -> int:
    """The fee the consumer pays for cancelling once a technician was assigned (rounded down)."""
    return price_cents * rules.cancellation_fee_bp // 10_000 if technician_id else 0


async def terms(ctx: Context, order: asyncpg.Record, state: OrderState | None = None) -> CancelTerms:
    """The terms for the order as it is (its technician, price and payment as last heard from
    Stripe), cancelled from its state (or `state`, for an order just cancelled). Works out what the
    scheduler's jobs will ask Stripe for, before any is decided."""
    pay = await payments.payment(ctx.services.db, order["id"]) if ctx.services.stripe is not None else None
    paying = order["payment_state"]
    fee = cancellation_fee(ctx.services.money_rules, order["price_cents"], order["technician_id"])
    settlement: Settlement = "none"
    fee_cents = refund = released = 0
    if pay is not None and paying == "authorized":
        settlement, fee_cents = ("capture_fee", fee) if fee > 0 else ("release", 0)
        released = pay["amount_cents"] - fee_cents
    elif pay is not None and paying in ("unpaid", "failed"):
        settlement = "void"
    elif pay is not None and paying in ("paid", "partially_refunded"):
        captured, refunded = pay["captured_cents"], pay["refunded_cents"]
        in_flight = await payments.decided(ctx.services.db, order["id"], "refund")
        refund = max(min(captured - fee - refunded, captured - refunded - in_flight), 0)
        settlement, fee_cents = ("refund", fee) if refund > 0 else ("none", 0)
    return CancelTerms(order_id=str(order["id"]), state=state or order["state"], payment_state=paying,
                       settlement=settlement, currency=order["currency"], price_cents=order["price_cents"],
                       fee_cents=fee_cents, refund_cents=refund, released_cents=released)
