"""Writing a ready-made websocket frame straight to the socket, as sessions do while the peer keeps
up (no task, no await per frame). Small and free of the gateway's other imports, so the benchmarks'
bare baseline writes the same way (bench/bare.py)."""

import struct
from typing import Any

from websockets.protocol import State

HIGH_WATER = 64 * 1024  # bytes unsent in the socket's buffer beyond which frames queue in the outbox


def frame_header(length: int, text: bool) -> bytes:
    """RFC 6455 header of a final, unmasked (server-to-client) text or binary frame."""
    first = 0x81 if text else 0x82
    if length < 126:
        return bytes((first, length))
    if length < 65536:
        return struct.pack("!BBH", first, 126, length)
    return struct.pack("!BBQ", first, 127, length)


def write_now(ws: Any, frame: bytes, text: bool) -> bool:
    """Write the frame to the connection's transport if it is open and its buffer is under the
    high-water mark; False when the caller must queue it (or send it with flow control)."""
    if ws.protocol.state is State.OPEN and ws.transport.get_write_buffer_size() <= HIGH_WATER:
        ws.transport.write(frame_header(len(frame), text) + frame)
        return True
    return False
