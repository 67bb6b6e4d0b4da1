"""What a handler is given: the caller, the services, and a way to deliver events.

The gateway implements `Context`; handlers depend on this declaration only."""

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Literal, Protocol

import asyncpg
import redis.asyncio as aioredis

from protocol.frames import Event

if TYPE_CHECKING:
    from handlers.passwords import Passwords
    from handlers.tokens import TokenIssuer
    from storage.crypto import FieldCipher

Role = Literal["consumer", "technician", "merchant", "admin"]
ROLES: tuple[Role, ...] = ("consumer", "technician", "merchant", "admin")


@dataclass(frozen=True, slots=True)
class Identity:
    user_id: str
    role: Role
    locale: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Services:
    db: asyncpg.Pool
    redis: aioredis.Redis
    tokens: "TokenIssuer"
    passwords: "Passwords"
    cipher: "FieldCipher"


class Context(Protocol):
    @property
    def identity(self) -> Identity | None: ...

    @property
    def services(self) -> Services: ...

    async def sign_in(self, identity: Identity) -> None:
        """Bind the session to an authenticated identity (and join its groups)."""

    def negotiate_locale(self, requested: str | None) -> str:
        """The best supported locale for a requested tag."""

    async def deliver_to_user(self, user_id: str, event: Event) -> int:
        """Push `event` to every session of the user, on any gateway process.
        Returns how many sessions of this process received it."""

    async def deliver_to_group(self, group: str, event: Event) -> int:
        """Push `event` to every session in the group, on any gateway process."""
