"""The bounds every request field is declared with, so that what the decoder accepts can be
stored: PostgreSQL text (no NUL), bigint, timestamptz, and the Redis GEO index's latitudes.
A value outside them is `bad_request` naming the field, before any handler runs."""

from datetime import UTC, datetime

import msgspec

INT64_MAX = 2**63 - 1
# Redis GEO indexes use Web Mercator, which ends at these latitudes (Redis refuses beyond them).
MAX_LATITUDE = 85.05112878
# Regex end of string in both Python (`re`, which msgspec uses) and JSON Schema's ECMA dialect:
# `$` would also match before a trailing newline in Python.
END = r"(?![\s\S])"
# Free text: any character but the C0 controls other than tab, newline and carriage return, and DEL.
TEXT = msgspec.Meta(pattern=r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*" + END,
                    extra_json_schema={"description": "No control characters but tab, newline, carriage return"})
# One line (names, ids, tokens, reasons): no control characters at all.
LINE = msgspec.Meta(pattern=r"^[^\x00-\x1f\x7f]*" + END,
                    extra_json_schema={"description": "No control characters"})
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(3000, 1, 1, tzinfo=UTC)
MOMENT = msgspec.Meta(tz=True, extra_json_schema={
    "description": "RFC 3339 with a time zone offset, from 1970-01-01T00:00:00Z until 3000-01-01T00:00:00Z"})


def readable(message: str) -> str:
    """A decoder's message with the text patterns named, not quoted."""
    for meta, name in ((LINE, "without control characters"), (TEXT, "without control characters but tab and newline")):
        message = message.replace(f"matching regex {meta.pattern!r}", name)
    return message


def within_range(value: datetime) -> datetime:
    """`value` in UTC, or ValueError when it is naive or outside what timestamptz and UTC
    conversion can hold (year 1 with a positive offset overflows)."""
    if value.tzinfo is None:
        raise ValueError("a datetime needs a time zone offset")
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the datetime is out of range") from None
    if not EARLIEST <= utc < LATEST:
        raise ValueError("the datetime is out of range (1970 until 3000)")
    return utc


def check_moments(struct: msgspec.Struct, *fields: str) -> None:
    """For a Struct's `__post_init__`: msgspec turns the ValueError into a validation error."""
    for name in fields:
        value = getattr(struct, name)
        if value is not None:
            try:
                within_range(value)
            except ValueError as exc:
                raise ValueError(f"{exc} - at `$.{name}`") from None
