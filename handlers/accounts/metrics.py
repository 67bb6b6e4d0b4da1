"""The accounts domain's Prometheus metrics; gateway.metrics registers them. The label is a closed
set of reasons, never a user id or an e-mail."""

from prometheus_client import Counter

AUTH_FAILURES = Counter("auth_failures", "Sign-ins and authenticated calls refused, by reason: token_expired, "
                        "token_invalid (session tokens, on the websocket and the HTTP side), wrong_password, "
                        "refresh_invalid, suspended, not_signed_in (an operation sent before `auth`)", ["reason"],
                        registry=None)
REASONS = ("token_expired", "token_invalid", "wrong_password", "refresh_invalid", "suspended", "not_signed_in")
for _reason in REASONS:
    AUTH_FAILURES.labels(_reason)  # every reason exported from the start, at 0: rates need no first failure

ALL = (AUTH_FAILURES,)
