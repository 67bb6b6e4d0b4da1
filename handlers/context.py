"""What a handler is given: the caller, the services, and a way to deliver events.

The gateway implements `Context`; handlers depend on this declaration only."""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

import asyncpg
import redis.asyncio as aioredis

from protocol.frames import Event

if TYPE_CHECKING:
    from handlers.chat_writer import ChatWriter
    from handlers.i18n import Catalogs
    from handlers.passwords import Passwords
    from handlers.stripe_api import StripeAccess
    from handlers.tokens import TokenIssuer
    from storage.blobs import BlobStore
    from storage.crypto import FieldCipher
    from storage.geo import NearbySearch, PositionWriter

Role = Literal["consumer", "technician", "merchant", "admin", "system"]  # system: the gateway itself
ROLES: tuple[Role, ...] = ("consumer", "technician", "merchant", "admin")


@dataclass(frozen=True, slots=True)
class Identity:
    user_id: str
    role: Role
    locale: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Rules:
    """The domain's tunables, from configuration."""

    radius_mi: float = 50.0  # announcement radius of an order, default radius of the feed
    max_radius_mi: float = 100.0  # the feed's cap
    stale_after_s: float = 300.0  # a position older than this does not count for matching
    platform_fee_bp: int = 1500  # the platform's share of a job's price, in basis points
    upload_dir: str = "var/uploads"
    preview_chars: int = 100  # a push shows this much of a message
    push_max_attempts: int = 8  # then the push goes to the dead letter
    push_retry_base_s: float = 2.0  # backoff: base * 2^(attempt-1), jittered
    push_poll_s: float = 1.0
    payment_policy: str = "capture_at_completion"  # or pay_at_creation
    payout_delay_s: float = 86_400.0  # from a completed, captured job to the technician's transfer
    cancellation_fee_bp: int = 0  # kept from a refund when the order is cancelled after acceptance
    money_max_attempts: int = 8  # then a money job is failed (shown in payout.status and the audit)
    money_retry_base_s: float = 30.0
    money_poll_s: float = 1.0
    money_lease_s: float = 60.0  # a job's runner that has not finished by then is presumed dead


@dataclass(frozen=True, slots=True)
class Services:
    db: asyncpg.Pool
    redis: aioredis.Redis
    tokens: "TokenIssuer"
    passwords: "Passwords"
    cipher: "FieldCipher"
    positions: "PositionWriter"
    nearby: "NearbySearch"
    blobs: "BlobStore"
    rules: Rules
    catalogs: "Catalogs"
    chat: "ChatWriter"
    stripe: "StripeAccess | None" = None  # None: payments are off (no STRIPE_API_KEY)


class Context(Protocol):
    @property
    def identity(self) -> Identity | None: ...

    @property
    def services(self) -> Services: ...

    @property
    def memo(self) -> dict[str, Any]:
        """Per-session state a domain keeps between requests (last position, uploads...)."""

    def on_close(self, callback: Callable[[], object]) -> None:
        """Run `callback` when the session ends (to release what `memo` holds)."""

    async def sign_in(self, identity: Identity) -> None:
        """Bind the session to an authenticated identity (and join its groups)."""

    def negotiate_locale(self, requested: str | None) -> str:
        """The best supported locale for a requested tag."""

    async def deliver_to_user(self, user_id: str, event: Event) -> int:
        """Push `event` to every session of the user, on any gateway process.
        Returns how many sessions of this process received it."""

    async def deliver_to_group(self, group: str, event: Event) -> int:
        """Push `event` to every session in the group, on any gateway process."""

    async def deliver_many(self, batches: list[tuple[list[str], Event]]) -> None:
        """Push each event to every session of its users, on any process, in one broadcast."""
