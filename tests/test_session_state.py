"""The session state machine without a network: sign-in, roles, the token bucket."""

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from gateway.session import SessionState, TokenBucket
from handlers.admin.notices import notify
from handlers.context import Identity
from handlers.registry import ROUTES
from protocol.admin import Notify
from protocol.auth import Ping


def identity(role: str) -> Identity:
    return Identity("u1", role, "en", datetime.now(UTC))  # type: ignore[arg-type]


def test_public_operations_are_admitted_before_sign_in():
    state = SessionState(10, 10, now=0.0)
    assert state.admit(ROUTES[Ping]) is None
    refused = state.admit(ROUTES[Notify])
    assert refused is not None and refused.code == "unauthorized"


def test_roles_are_checked_after_sign_in():
    state = SessionState(10, 10, now=0.0)
    state.identity = identity("technician")
    refused = state.admit(ROUTES[Notify])
    assert refused is not None and refused.code == "forbidden"
    state.identity = identity("admin")
    assert state.admit(ROUTES[Notify]) is None
    assert ROUTES[Notify].handler.__wrapped__ is notify  # type: ignore[attr-defined]  # the audit log wraps it


def test_bucket_allows_a_burst_then_refills_at_the_rate():
    bucket = TokenBucket(rate=2.0, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == 0.5  # next token in half a second
    assert bucket.take(0.5) == 0.0
    assert bucket.take(0.5) > 0


@given(st.lists(st.floats(min_value=0, max_value=10), min_size=1, max_size=200),
       st.floats(min_value=0.1, max_value=100), st.integers(min_value=1, max_value=50))
def test_bucket_never_admits_more_than_burst_plus_rate_times_elapsed(gaps, rate, burst):
    bucket, now, admitted = TokenBucket(rate, burst, 0.0), 0.0, 0
    for gap in gaps:
        now += gap
        wait = bucket.take(now)
        assert wait >= 0
        admitted += wait == 0.0
    assert admitted <= burst + rate * now + 1e-6
