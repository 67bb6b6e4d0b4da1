"""The Stripe SDK as the handlers use it: one async client, Stripe's errors mapped to ours in one
place, and the payment state read off Stripe's own objects (Stripe is the source of truth)."""

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import stripe

from handlers.errors import N_, BadRequest, GatewayError, Unavailable

log = logging.getLogger(__name__)


class PaymentDeclined(GatewayError):
    code = "payment_declined"
    default_message = N_("The card was declined. Please use another payment method.")


@dataclass(frozen=True, slots=True)
class StripeSettings:
    api_key: str
    api_base: str = "https://api.stripe.com"
    webhook_secret: str | None = None
    webhook_tolerance_s: int = 300
    connect_country: str = "US"
    timeout_s: float = 15.0


@dataclass(slots=True)
class StripeAccess:
    client: stripe.StripeClient
    settings: StripeSettings
    # Applying an event holds a pooled connection (and a row lock) across one Stripe call: at most
    # this many at once, so a burst of webhooks while Stripe is slow cannot take the whole pool.
    applying: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(3))

    @classmethod
    def of(cls, settings: StripeSettings) -> "StripeAccess":
        client = stripe.StripeClient(
            settings.api_key, base_addresses={"api": settings.api_base, "connect": settings.api_base},
            # Bounded: an event is applied while its payment's row is locked, a job while its lease runs.
            http_client=stripe.HTTPXClient(timeout=settings.timeout_s), max_network_retries=2)
        return cls(client, settings)


@contextlib.contextmanager
def calling_stripe() -> Iterator[None]:
    """Turn Stripe's failures into the gateway's errors: a declined card is the user's to fix, an
    outage is `unavailable`, anything else Stripe refuses is a bug on our side (logged)."""
    try:
        yield
    except stripe.CardError as exc:
        raise PaymentDeclined(details={"decline_code": exc.code} if exc.code else None) from None
    except (stripe.APIConnectionError, stripe.RateLimitError, stripe.APIError) as exc:
        log.warning("Stripe unreachable: %s", exc)
        raise Unavailable() from None
    except stripe.InvalidRequestError as exc:
        log.error("Stripe refused a request: %s", exc)
        raise BadRequest(N_("The payment provider refused the request.")) from None
    except stripe.StripeError as exc:
        log.error("Stripe error: %s", exc)
        raise Unavailable() from None


def charge_figures(intent: Any) -> tuple[int, int, str | None]:
    """(captured, refunded, charge id) of a PaymentIntent retrieved with `expand=["latest_charge"]`.
    (Since API version 2025-03-31 the part of an authorization that a partial capture releases is
    not counted as refunded; the SDK pins a newer version.)"""
    charge = intent.latest_charge
    if charge is None or isinstance(charge, str):
        return intent.amount_received or 0, 0, charge
    captured = getattr(charge, "amount_captured", None) or intent.amount_received or 0
    return captured, charge.amount_refunded, charge.id


def payment_state(intent: Any) -> tuple[str, str | None, int, int, str | None]:
    """(payment state, charge id, captured cents, refunded cents, last error) of a PaymentIntent
    retrieved with `expand=["latest_charge"]`."""
    captured, refunded, charge_id = charge_figures(intent)
    error = intent.last_payment_error.message if intent.last_payment_error else None
    status = intent.status
    if status == "succeeded":
        state = "paid" if refunded == 0 else "refunded" if refunded >= captured else "partially_refunded"
    elif status == "requires_capture":
        state = "authorized"
    elif status == "processing":
        state = "processing"
    elif status == "canceled":
        state = "canceled"
    elif status == "requires_payment_method" and error:
        state = "failed"
    else:
        state = "unpaid"
    return state, charge_id, captured, refunded, error
