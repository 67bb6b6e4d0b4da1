"""The client library: one websocket session, typed requests and replies, a queue of events.

    async with await Client.connect("ws://127.0.0.1:8080/ws") as client:
        await client.request(Auth(token=token))
        pong = await client.request(Ping())
"""

import asyncio
import contextlib
import itertools
import time
from types import TracebackType
from typing import Any, TypeVar

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from protocol.codec import JSON, Codec
from protocol.frames import Error, Event, Reply, Request

R = TypeVar("R", bound=Reply)


class ErrorReply(Exception):
    """The server answered a request with an `error` frame."""

    def __init__(self, error: Error) -> None:
        super().__init__(f"{error.code}: {error.message}")
        self.error = error
        self.code = error.code


class Client:
    def __init__(self, ws: ClientConnection, codec: Codec) -> None:
        self.ws = ws
        self.codec = codec
        self.events: asyncio.Queue[Event | dict[str, Any]] = asyncio.Queue()
        self.unmatched: asyncio.Queue[Any] = asyncio.Queue()  # replies nobody waits for (raw frames)
        self._pending: dict[str, tuple[asyncio.Future[Any], type[Reply] | None]] = {}
        self._ids = itertools.count(1)
        # Set to a list, every frame received is appended to it as plain data (a recording).
        self.received: list[Any] | None = None
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, url: str, *, codec: Codec = JSON, subprotocol: bool = True,
                      **kwargs: Any) -> "Client":
        offer = [codec.subprotocol] if subprotocol else None
        ws = await connect(url, subprotocols=offer, compression=None, **kwargs)  # type: ignore[arg-type]
        return cls(ws, codec)

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader

    def _next_id(self) -> str:
        return f"c{next(self._ids)}"

    async def request(self, request: Request, timeout: float = 10.0) -> Any:
        """Send a request and wait for its reply (typed as the operation declares); raises
        `ErrorReply` on an `error` frame."""
        if request.id is None:
            request = msgspec.structs.replace(request, id=self._next_id())
        assert request.id is not None
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request.id] = (future, request.reply)
        try:
            await self.ws.send(self.codec.encode(request), text=self.codec.text)
            return await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(request.id, None)

    async def send(self, request: Request) -> None:
        """Send without waiting (fire-and-forget operations)."""
        await self.ws.send(self.codec.encode(request), text=self.codec.text)

    async def call(self, operation: str, arguments: dict[str, Any], timeout: float = 10.0) -> tuple[Any, float]:
        """Send an untyped request (the console's way); returns the reply frame as a dict and
        the round-trip time in seconds."""
        request_id = str(arguments.get("id") or self._next_id())
        frame = {**arguments, "type": operation, "id": request_id}
        return await self.call_raw(self.codec.encode_any(frame), request_id, timeout)

    async def call_raw(self, data: bytes, request_id: str | None, timeout: float = 10.0) -> tuple[Any, float]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        key = request_id if request_id is not None else ""
        self._pending[key] = (future, None)
        started = time.perf_counter()
        try:
            await self.ws.send(data, text=self.codec.text)
            reply = await asyncio.wait_for(future, timeout)
            return reply, time.perf_counter() - started
        finally:
            self._pending.pop(key, None)

    async def next_event(self, timeout: float = 5.0) -> Event | dict[str, Any]:
        return await asyncio.wait_for(self.events.get(), timeout)

    async def _read(self) -> None:
        codec = self.codec
        try:
            async for message in self.ws:
                data = message.encode() if isinstance(message, str) else message
                if self.received is not None:
                    self.received.append(codec.decode_any(data))
                head = codec.decode_head(data)
                if head.type in ("result", "error"):
                    key = head.id if isinstance(head.id, str) else ""
                    waiter = self._pending.get(key)
                    if waiter is None:
                        await self.unmatched.put(codec.decode_any(data))
                        continue
                    future, reply_type = waiter
                    if future.done():
                        continue
                    if reply_type is None:
                        future.set_result(codec.decode_any(data))
                    elif head.type == "error":
                        future.set_exception(ErrorReply(codec.decode_as(data, Error)))
                    else:
                        future.set_result(codec.decode_as(data, reply_type))
                else:
                    try:
                        await self.events.put(codec.decode_event(data))
                    except msgspec.DecodeError:
                        await self.events.put(codec.decode_any(data))
        except ConnectionClosed:
            pass
        finally:
            for future, _ in self._pending.values():
                if not future.done():
                    future.set_exception(ConnectionError("connection closed"))
