"""The Stripe SDK as the handlers use it: one async client, Stripe's errors mapped to ours in one
place, and the payment state read off Stripe's own objects (Stripe is the source of truth)."""

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import stripe
from prometheus_client import Counter, Histogram

from handlers.errors import N_, BadRequest, GatewayError, Unavailable

log = logging.getLogger(__name__)

STRIPE_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0)
STRIPE_SECONDS = Histogram("money_stripe_request_seconds", "Stripe API requests: each HTTP attempt (the SDK's "
                           "retries are attempts of their own), answered or not", buckets=STRIPE_BUCKETS,
                           registry=None)
STRIPE_REQUESTS = Counter("money_stripe_requests", "Stripe API requests (each attempt), by outcome: ok, declined "
                          "(402), rate_limited (429), client_error (another 4xx), server_error (5xx), timeout, "
                          "connection (no answer)", ["outcome"], registry=None)
STRIPE_OUTCOMES = ("ok", "declined", "rate_limited", "client_error", "server_error", "timeout", "connection")
for _name in STRIPE_OUTCOMES:
    STRIPE_REQUESTS.labels(_name)


def _outcome(status: int) -> str:
    if status < 400:
        return "ok"
    return {402: "declined", 429: "rate_limited"}.get(status, "client_error" if status < 500 else "server_error")


class MeasuredHTTPXClient(stripe.HTTPXClient):
    """The SDK's httpx client with every request timed and its outcome counted."""

    async def request_async(self, method: str, url: str, headers: Mapping[str, str],
                            post_data: Any = None) -> tuple[bytes, int, Mapping[str, str]]:
        started = time.perf_counter()
        try:
            content, status, response_headers = await super().request_async(method, url, headers, post_data)
        except stripe.APIConnectionError as exc:
            timed_out = isinstance(exc.__cause__, httpx.TimeoutException)
            STRIPE_REQUESTS.labels("timeout" if timed_out else "connection").inc()
            raise
        finally:
            STRIPE_SECONDS.observe(time.perf_counter() - started)
        STRIPE_REQUESTS.labels(_outcome(status)).inc()
        return content, status, response_headers


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
            http_client=MeasuredHTTPXClient(timeout=settings.timeout_s), max_network_retries=2)
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
