"""The Stripe SDK as the handlers use it: one async client, Stripe's errors mapped to ours in one
place, and the payment state read off Stripe's own objects (Stripe is the source of truth)."""

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
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


@dataclass(slots=True)
class StripeAccess:
    client: stripe.StripeClient
    settings: StripeSettings
    public_url: str = ""  # where Stripe's hosted pages send people back: the gateway's HTTP side

    @classmethod
    def of(cls, settings: StripeSettings) -> "StripeAccess":
        client = stripe.StripeClient(
            settings.api_key, base_addresses={"api": settings.api_base, "connect": settings.api_base},
            http_client=stripe.HTTPXClient(), max_network_retries=2)
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


def payment_state(intent: Any) -> tuple[str, str | None, int, int, str | None]:
    """(payment state, charge id, captured cents, refunded cents, last error) of a PaymentIntent
    retrieved with `expand=["latest_charge"]`."""
    charge = intent.latest_charge
    charge_id = charge if isinstance(charge, str) or charge is None else charge.id
    refunded = charge.amount_refunded if charge is not None and not isinstance(charge, str) else 0
    captured = intent.amount_received or 0
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
