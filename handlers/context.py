"""What a handler is given: the caller, the services, and a way to deliver events.

The gateway implements `Context`; handlers depend on this declaration only. The kernel (this
module, routing, errors, i18n) imports no domain; `services` and `registry` put the domains together."""

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from protocol.frames import Event

if TYPE_CHECKING:
    from handlers.errors import GatewayError
    from handlers.services import Services

Role = Literal["consumer", "technician", "merchant", "admin", "system"]  # system: the gateway itself
ROLES: tuple[Role, ...] = ("consumer", "technician", "merchant", "admin")


@dataclass(frozen=True, slots=True)
class Identity:
    user_id: str
    role: Role
    locale: str
    expires_at: datetime


class Context(Protocol):
    @property
    def identity(self) -> Identity | None: ...

    @property
    def services(self) -> "Services": ...

    @property
    def memo(self) -> dict[str, Any]:
        """Per-session state a domain keeps between requests (last position, uploads...)."""

    def on_close(self, callback: Callable[[], object]) -> None:
        """Run `callback` when the session ends (to release what `memo` holds)."""

    async def sign_in(self, identity: Identity) -> None:
        """Bind the session to an authenticated identity (and join its groups)."""

    def negotiate_locale(self, requested: str | None) -> str:
        """The best supported locale for a requested tag."""

    async def join(self, groups: Iterable[str]) -> None:
        """Add the session to more groups (beyond its user's and role's); returns once this process
        receives their events. The groups are left with `leave`, a new identity or the session."""

    def leave(self, groups: Iterable[str]) -> None:
        """Leave groups joined with `join` (unknown ones are ignored)."""

    async def deliver_to_user(self, user_id: str, event: Event) -> int:
        """Push `event` to every session of the user, on any gateway process.
        Returns how many sessions of this process received it."""

    async def stream_to_user(self, user_id: str, event: Event) -> int:
        """`deliver_to_user` for one of many events in quick succession (an answer's text as it is
        made): where the user's sessions are is looked up about once a second, not per event, so a
        session the user opens on another process meanwhile may miss up to a second of them."""

    async def deliver_to_group(self, group: str, event: Event) -> int:
        """Push `event` to every session in the group, on any gateway process."""

    async def deliver_many(self, batches: list[tuple[list[str], Event]]) -> None:
        """Push each event to every session of its users, on any process, in one broadcast."""

    async def unwatch_user(self, user_id: str) -> None:
        """Stop every session of the user watching the live feed, on every process: the brands it
        was scoped by changed. Each such session gets `admin.unwatched`."""

    async def disconnect_user(self, user_id: str, reason: "type[GatewayError]") -> int:
        """End every session of the user, on any gateway process: each is sent `reason` as an error
        frame, then closed with its `close_code` (one of handlers.errors.ENDINGS). Returns how many
        sessions of this process were ended (the others end theirs once Redis carries the word)."""
