"""The envelope every domain shares: requests, their replies, errors and pushed events."""

from typing import Annotated, Any, ClassVar

import msgspec

# No character check: an id is only echoed back (in an encoded frame), never stored or logged,
# and a pattern would cost ~0.4 us on every frame of the hottest path (location.update).
RequestId = Annotated[str, msgspec.Meta(min_length=1, max_length=64, description="Client-chosen request id")]


class Reply(msgspec.Struct, tag="result", tag_field="type", kw_only=True):
    """Success reply to a request; `id` echoes the request's id."""

    id: RequestId | None = None


class Request(msgspec.Struct, tag_field="type", kw_only=True, forbid_unknown_fields=True):
    """A client request. `type` names the operation; `id` is echoed in its reply. A field the
    operation does not declare is refused (`bad_request` naming it), so a frame is never nested
    deeper than its operation's fields.

    A request without `id` still gets its reply (with `id: null`) unless the operation is
    declared fire-and-forget.
    """

    id: RequestId | None = None
    reply: ClassVar[type[Reply]] = Reply
    # Streams (location updates) skip the reply when the frame has no `id`: one frame per update.
    silent_without_id: ClassVar[bool] = False


class Event(msgspec.Struct, tag_field="type", kw_only=True):
    """A frame the server pushes on its own; it never carries an `id`."""


class Error(msgspec.Struct, tag="error", tag_field="type", kw_only=True):
    """Failure reply. `code` is stable and machine-readable; `message` is localized."""

    id: RequestId | None = None
    code: str
    message: str
    details: dict[str, Any] | None = None


class Head(msgspec.Struct):
    """The two fields every frame starts with; decoded first when the full type is unknown."""

    type: str | None = None
    id: Any = None


class Empty(Reply):
    """A reply with nothing to say beyond success."""


# Every code an error frame can carry. The AsyncAPI document's `ErrorCode` is derived from the
# gateway's error types (handlers.errors.codes); tests/test_protocol.py keeps this list equal to it.
ERROR_CODES = (
    "bad_request",
    "unauthorized",
    "forbidden",
    "suspended",
    "not_found",
    "conflict",
    "payment_declined",
    "rate_limited",
    "too_large",
    "unavailable",
    "internal",
)
