"""One exception per meaning. The gateway maps each to an `error` frame with a stable code and
a message in the session's language; the message ids below are the English source strings."""

from typing import Any, ClassVar


def N_(message: str) -> str:
    """Mark a string for translation where it is declared; it is translated when sent."""
    return message


class GatewayError(Exception):
    code = "internal"
    default_message = N_("Something went wrong on our side. Please try again.")
    # Set: the error ends the session. The gateway sends the error frame, then closes the
    # connection with this code and the error's `code` as the reason.
    close_code: ClassVar[int | None] = None

    def __init__(self, message: str | None = None, *, details: dict[str, Any] | None = None,
                 **params: Any) -> None:
        self.message = message or self.default_message
        self.params = params
        self.details = details
        super().__init__(self.message.format(**params) if params else self.message)


class BadRequest(GatewayError):
    code = "bad_request"
    default_message = N_("The request is not valid.")


class Unauthorized(GatewayError):
    code = "unauthorized"
    default_message = N_("Please sign in first.")


class Forbidden(GatewayError):
    code = "forbidden"
    default_message = N_("You are not allowed to do that.")


class Suspended(GatewayError):
    code = "suspended"
    default_message = N_("This account is suspended. Please contact support.")


class SuspendedSession(Suspended):
    """A suspended user's session: answered, then closed with 4003."""

    close_code = 4003


# The errors a session can be ended with from another gateway process, by code (Context.disconnect_user).
ENDINGS: dict[str, type[GatewayError]] = {SuspendedSession.code: SuspendedSession}


class NotFound(GatewayError):
    code = "not_found"
    default_message = N_("Not found.")


class Conflict(GatewayError):
    code = "conflict"
    default_message = N_("That cannot be done in the current state.")

    def __init__(self, message: str | None = None, *, current_state: str | None = None,
                 **params: Any) -> None:
        details = {"current_state": current_state} if current_state is not None else None
        super().__init__(message, details=details, **params)


class RateLimited(GatewayError):
    code = "rate_limited"
    default_message = N_("Too many requests. Please slow down.")

    def __init__(self, retry_after: float) -> None:
        super().__init__(details={"retry_after": round(retry_after, 3)})


class TooLarge(GatewayError):
    code = "too_large"
    default_message = N_("The frame is larger than {limit} bytes.")


class Unavailable(GatewayError):
    code = "unavailable"
    default_message = N_("The service is temporarily unavailable. Please try again.")


class Internal(GatewayError):
    code = "internal"


def codes() -> list[str]:
    """Every code an error frame can carry: those of GatewayError and of every subclass loaded
    (import handlers.registry first to load every domain's). The AsyncAPI document's `ErrorCode`."""
    found: set[str] = set()
    pending: list[type[GatewayError]] = [GatewayError]
    while pending:
        kind = pending.pop()
        found.add(kind.code)
        pending.extend(kind.__subclasses__())
    return sorted(found)
