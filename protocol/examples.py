"""Example frames for the AsyncAPI document, taken from the protocol guide (docs/protocol.md).

A ```json block of the guide holds frames, one after another, a line optionally starting with
`>` (sent) or `<` (received). A frame becomes an example of its message only when it decodes as
that message: a request as its operation, a `result` as the reply of the request with its `id`
in the same block, an `error` with a known code, an event as its type. Frames abridged with
`...` do not decode and are left out, so an example never shows what the gateway would refuse.
"""

import json
import re
from typing import Any

import msgspec

from protocol.codec import JSON
from protocol.frames import Error, Event, Request

Examples = dict[type[msgspec.Struct], list[dict[str, Any]]]
_BLOCK = re.compile(r"^```json\n(.*?)^```", re.MULTILINE | re.DOTALL)
_PROMPT = re.compile(r"^[<>] ?", re.MULTILINE)


def frames(guide: str) -> list[list[Any]]:
    """The JSON values of each ```json block, in order; text that is not JSON is skipped."""
    blocks = []
    decoder = json.JSONDecoder()
    for match in _BLOCK.finditer(guide):
        text = _PROMPT.sub("", match.group(1))
        values, at = [], 0
        while at < len(text):
            start = text.find("{", at)
            if start < 0:
                break
            try:
                value, at = decoder.raw_decode(text, start)
            except json.JSONDecodeError:
                at = text.find("\n", start) + 1 or len(text)  # an abridged frame: on to the next line
                continue
            values.append(value)
        blocks.append(values)
    return blocks


def _decodes(value: Any, kind: type[Any]) -> bool:
    try:
        msgspec.json.decode(json.dumps(value), type=kind)  # as the wire would carry it
    except msgspec.ValidationError:
        return False
    return True


def from_guide(guide: str, codes: set[str]) -> Examples:
    examples: Examples = {}
    for block in frames(guide):
        sent: dict[str, type[msgspec.Struct]] = {}  # request id -> its reply type
        for value in block:
            if not isinstance(value, dict):
                continue
            kind: type[msgspec.Struct] | None = None
            if value.get("type") == "result":
                kind = sent.get(str(value.get("id")))
                if kind is not None and not _decodes(value, kind):
                    kind = None
            elif value.get("type") == "error":
                kind = Error if value.get("code") in codes and _decodes(value, Error) else None
            else:
                decoded: Request | Event
                try:
                    decoded = JSON.decode_request(json.dumps(value))
                except msgspec.DecodeError:
                    try:
                        decoded = JSON.decode_event(json.dumps(value).encode())
                    except msgspec.DecodeError:
                        continue
                kind = type(decoded)
                if isinstance(decoded, Request) and decoded.id is not None:
                    sent[decoded.id] = decoded.reply
            if kind is not None and value not in examples.setdefault(kind, []):
                examples[kind].append(value)
    return examples
