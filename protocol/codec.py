"""JSON (text frames) and MessagePack (binary frames) encodings of the same Structs.

The subprotocol a client asks for picks the codec; `dispatch.v1.json` is the default, also for
clients that offer no subprotocol at all.
"""

from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec

from protocol.frames import Error, Event, Head, Request
from protocol.messages import AnyEvent, AnyRequest

JSON_SUBPROTOCOL = "dispatch.v1.json"
MSGPACK_SUBPROTOCOL = "dispatch.v1.msgpack"
SUBPROTOCOLS = (JSON_SUBPROTOCOL, MSGPACK_SUBPROTOCOL)

T = TypeVar("T")


class TooDeep(msgspec.DecodeError):
    """Nesting beyond what the decoder recurses into (about 1,000 levels). A request's declared
    fields nest a few levels at most and unknown fields are refused, so this only meets values
    skipped on the way to the `type` tag, or a frame that is not a request at all."""


def _too_deep() -> TooDeep:
    return TooDeep("nested too deeply")


@dataclass(frozen=True, eq=False)  # identity hash: codecs key per-format caches
class Codec:
    """Encoders and decoders for one wire format, built once."""

    subprotocol: str
    text: bool  # send as websocket text frames
    _encode: Any
    _requests: Any
    _events: Any
    _heads: Any
    _anything: Any
    _decoder_for: Any  # type -> a decoder for it
    _typed: dict[Any, Any] = field(default_factory=dict)

    def encode(self, frame: msgspec.Struct) -> bytes:
        data: bytes = self._encode(frame)
        return data

    def decode_request(self, data: str | bytes) -> Request:
        """One of `messages.REQUESTS`, validated. str only for JSON: the text of a text frame."""
        try:
            request: Request = self._requests(data)
        except RecursionError:
            raise _too_deep() from None
        return request

    def decode_event(self, data: bytes) -> Event:
        """One of `messages.EVENTS`, validated."""
        try:
            event: Event = self._events(data)
        except RecursionError:
            raise _too_deep() from None
        return event

    def decode_head(self, data: str | bytes) -> Head:
        try:
            head: Head = self._heads(data)
        except RecursionError:
            raise _too_deep() from None
        return head

    def decode_any(self, data: bytes) -> Any:
        try:
            return self._anything(data)
        except RecursionError:
            raise _too_deep() from None

    def decode_as(self, data: bytes, kind: type[T]) -> T:
        decoder = self._typed.get(kind)
        if decoder is None:
            decoder = self._typed[kind] = self._decoder_for(kind)
        try:
            value: T = decoder.decode(data)
        except RecursionError:
            raise _too_deep() from None
        return value

    def encode_any(self, value: Any) -> bytes:
        data: bytes = self._encode(value)
        return data


def _json() -> Codec:
    enc = msgspec.json.Encoder()
    return Codec(
        JSON_SUBPROTOCOL,
        True,
        enc.encode,
        msgspec.json.Decoder(AnyRequest).decode,
        msgspec.json.Decoder(AnyEvent).decode,
        msgspec.json.Decoder(Head).decode,
        msgspec.json.Decoder().decode,
        msgspec.json.Decoder,
    )


def _msgpack() -> Codec:
    enc = msgspec.msgpack.Encoder()
    return Codec(
        MSGPACK_SUBPROTOCOL,
        False,
        enc.encode,
        msgspec.msgpack.Decoder(AnyRequest).decode,
        msgspec.msgpack.Decoder(AnyEvent).decode,
        msgspec.msgpack.Decoder(Head).decode,
        msgspec.msgpack.Decoder().decode,
        msgspec.msgpack.Decoder,
    )


JSON = _json()
MSGPACK = _msgpack()
CODECS = {JSON.subprotocol: JSON, MSGPACK.subprotocol: MSGPACK}


def error_frame(request_id: Any, code: str, message: str, details: dict[str, Any] | None = None) -> Error:
    return Error(id=request_id if isinstance(request_id, str) and len(request_id) <= 64 else None,
                 code=code, message=message, details=details)
