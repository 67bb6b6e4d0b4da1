"""The money domain's tunables: fees, the payment policy, payout delay, money jobs' retries."""

from dataclasses import dataclass


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
