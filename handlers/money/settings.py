"""The money domain's tunables: fees, the payment policy, payout delay, money jobs' retries, audits."""

from dataclasses import dataclass

# How long an order may stay in a state before the audit calls it stuck (seconds).
STUCK_AFTER_S: tuple[tuple[str, float], ...] = (
    ("awaiting_payment", 3_600.0), ("open", 7_200.0), ("accepted", 86_400.0), ("en_route", 21_600.0),
    ("in_service", 43_200.0))


@dataclass(frozen=True, slots=True)
class MoneyRules:
    platform_fee_bp: int = 1500  # the platform's share of a job's price, in basis points
    payment_policy: str = "capture_at_completion"  # or pay_at_creation
    payout_delay_s: float = 86_400.0  # from a completed, captured job to the technician's transfer
    cancellation_fee_bp: int = 0  # kept from a refund when the order is cancelled after acceptance
    money_max_attempts: int = 8  # then a money job is failed (shown in payout.status and the audit)
    money_retry_base_s: float = 30.0
    money_poll_s: float = 1.0
    money_lease_s: float = 60.0  # a job's runner that has not finished by then is presumed dead
    audit_interval_s: float = 3_600.0  # between scheduled audits across the fleet; 0: none
    audit_grace_s: float = 300.0  # how long a follow-up (a transfer, a reversal, an event applied) may lag
    audit_job_stuck_s: float = 900.0  # a due job (or an expired lease) this much overdue: no scheduler runs it
    audit_capture_margin_s: float = 86_400.0  # an authorization expiring sooner than this is flagged
    audit_stripe_limit: int = 200  # authorizations read from Stripe per run (the oldest first)
    stuck_after_s: tuple[tuple[str, float], ...] = STUCK_AFTER_S
