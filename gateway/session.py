"""Per-session state that knows no sockets: who is signed in, what they may call, how fast."""

from handlers.accounts.metrics import AUTH_FAILURES
from handlers.context import Identity
from handlers.errors import N_, Forbidden, GatewayError, Unauthorized
from handlers.routing import Route


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up; one token per frame."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = now

    def take(self, now: float) -> float:
        """Spend one token; 0.0 when allowed, else the seconds until one is available."""
        tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return 0.0
        self.tokens = tokens
        return (1.0 - tokens) / self.rate


class SessionState:
    __slots__ = ("bucket", "identity", "last_seen")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.identity: Identity | None = None
        self.bucket = TokenBucket(rate, burst, now)
        self.last_seen = now

    def admit(self, route: Route) -> GatewayError | None:
        """Whether the caller may run `route` now: None if so, else the error to answer with."""
        if route.roles is None:
            return None
        if self.identity is None:
            AUTH_FAILURES.labels("not_signed_in").inc()
            return Unauthorized(N_("Please sign in first: send `auth` with your session token."))
        if self.identity.role not in route.roles:
            return Forbidden(N_("Your role may not call {operation}."), operation=route.operation)
        return None
