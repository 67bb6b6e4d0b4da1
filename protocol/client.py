"""The client library: one websocket session, typed requests and replies, a queue of events;
and a session that outlives its node (`Reconnecting`).

    async with await Client.connect("ws://127.0.0.1:8080/ws") as client:
        await client.request(Auth(token=token))
        pong = await client.request(Ping())
"""

import asyncio
import contextlib
import itertools
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, TypeVar

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.frames import Frame, Opcode
from websockets.protocol import Event as ProtocolEvent

from protocol.codec import JSON, Codec
from protocol.frames import Error, Event, Reply, Request

R = TypeVar("R", bound=Reply)


class ErrorReply(Exception):
    """The server answered a request with an `error` frame."""

    def __init__(self, error: Error) -> None:
        super().__init__(f"{error.code}: {error.message}")
        self.error = error
        self.code = error.code


class _Connection(ClientConnection):
    """A client connection that says when the server's close frame has arrived (`closing`). The
    TCP connection ends later, when the server has answered the closing handshake: a node that
    closes thousands of sessions at once (a deploy's SIGTERM) takes seconds to get to each, and an
    app waiting for that before reconnecting waits for the whole drain."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.closing = asyncio.Event()

    def process_event(self, event: ProtocolEvent) -> None:
        super().process_event(event)
        if isinstance(event, Frame) and event.opcode is Opcode.CLOSE:
            self.closing.set()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.closing.set()


class Client:
    def __init__(self, ws: ClientConnection, codec: Codec,
                 events: "asyncio.Queue[Event | dict[str, Any]] | None" = None) -> None:
        self.ws = ws
        self.codec = codec
        self.events: asyncio.Queue[Event | dict[str, Any]] = events if events is not None else asyncio.Queue()
        self.unmatched: asyncio.Queue[Any] = asyncio.Queue()  # replies nobody waits for (raw frames)
        self._pending: dict[str, tuple[asyncio.Future[Any], type[Reply] | None]] = {}
        self._ids = itertools.count(1)
        # Set to a list, every frame received is appended to it as plain data (a recording).
        self.received: list[Any] | None = None
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, url: str, *, codec: Codec = JSON, subprotocol: bool = True,
                      events: "asyncio.Queue[Event | dict[str, Any]] | None" = None, **kwargs: Any) -> "Client":
        offer = [codec.subprotocol] if subprotocol else None
        kwargs.setdefault("create_connection", _Connection)
        ws = await connect(url, subprotocols=offer, compression=None, **kwargs)  # type: ignore[arg-type]
        return cls(ws, codec, events)

    async def closing(self) -> None:
        """Return once the server has begun to close the connection (its close frame arrived) or
        the connection is gone, whichever comes first: no reply or event follows a close frame."""
        if isinstance(self.ws, _Connection):
            await self.ws.closing.wait()
        else:
            await self.ws.wait_closed()

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


# Error codes that say "not now" rather than "never": a sign-in refused with one is tried again.
TRANSIENT = frozenset({"unavailable", "rate_limited"})


class Backoff:
    """Exponential backoff with full jitter: the n-th wait in a row is uniform in
    [0, min(cap, base * 2^n)], so a fleet of apps that lost one node spreads its reconnects
    instead of landing on the others at once."""

    def __init__(self, base_s: float = 0.1, cap_s: float = 5.0, rng: random.Random | None = None) -> None:
        self.base_s, self.cap_s = base_s, cap_s
        self.rng = rng or random.Random()
        self.attempt = 0

    def next(self) -> float:
        wait = self.rng.uniform(0, min(self.cap_s, self.base_s * 2.0 ** min(self.attempt, 16)))
        self.attempt += 1
        return wait

    def reset(self) -> None:
        self.attempt = 0


class Reconnecting:
    """A session that survives the loss of its node: when the connection drops (or cannot be
    made) it waits a `Backoff` and connects to the next of `urls` (the fleet's nodes, round robin),
    then runs `on_connect` (sign in again, resume chat with `chat.sync`) before requests go
    through again. Events of every connection land in one queue, `events`.

        async def sign_in(client: Client) -> None:
            await client.request(Auth(token=token))

        async with Reconnecting(["ws://a:8080/ws", "ws://b:8080/ws"], sign_in) as app:
            await app.request(ChatSend(order_id=..., client_id="m1", text="hi"), retry=True)
    """

    def __init__(self, urls: Sequence[str], on_connect: Callable[[Client], Awaitable[None]], *,
                 backoff: Backoff | None = None, codec: Codec = JSON, **connect_kwargs: Any) -> None:
        assert urls, "at least one URL"
        self.urls = list(urls)
        self.on_connect = on_connect
        self.backoff = backoff or Backoff()
        self.codec = codec
        self.connect_kwargs = connect_kwargs
        self.events: asyncio.Queue[Event | dict[str, Any]] = asyncio.Queue()
        self.client: Client | None = None  # the current connection, once signed in
        self.url = self.urls[0]
        self.connections = 0  # signed-in connections so far (1 + reconnects)
        self.attempts = 0  # connections tried so far, signed in or not (refused, timed out, sign-in refused)
        self._next = 0
        self._ready = asyncio.Event()
        self._failed: BaseException | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()  # old connections finishing their close

    async def start(self, timeout: float = 30.0) -> "Reconnecting":
        self._task = asyncio.create_task(self._run(), name="reconnecting")
        await self.session(timeout)
        return self

    async def __aenter__(self) -> "Reconnecting":
        return await self.start()

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.client is not None:
            await self.client.close()
        if self._closing:
            await asyncio.wait(self._closing)

    @property
    def failed(self) -> BaseException | None:
        """Why it gave up (`on_connect` refused: a bad token), else None."""
        return self._failed

    async def session(self, timeout: float = 30.0) -> Client:
        """The signed-in connection, waiting for one while reconnecting."""
        async with asyncio.timeout(timeout):
            while True:
                if self._failed is not None:
                    raise self._failed
                client = self.client
                if self._ready.is_set() and client is not None and client.ws.state.name == "OPEN":
                    return client
                self._ready.clear()
                await self._ready.wait()

    async def request(self, request: Request, timeout: float = 10.0, *, retry: bool = False) -> Any:
        """`Client.request` on the current connection. With `retry`, a request whose connection
        is lost before its reply is sent again on the next one: only for requests that are safe
        to repeat (reads, `chat.send` with its `client_id`, `order.accept`...)."""
        while True:
            client = await self.session()
            try:
                return await client.request(request, timeout)
            except (ConnectionError, ConnectionClosed):
                if not retry:
                    raise
                self._ready.clear()

    async def _run(self) -> None:
        while True:
            self.url = self.urls[self._next % len(self.urls)]
            self._next += 1
            self.attempts += 1
            try:
                client = await Client.connect(self.url, codec=self.codec, events=self.events, **self.connect_kwargs)
            except (OSError, TimeoutError, WebSocketException):
                await asyncio.sleep(self.backoff.next())
                continue
            try:
                await self.on_connect(client)
            except ErrorReply as exc:
                if exc.code in TRANSIENT:  # the node is overloaded or a dependency is down: later, maybe elsewhere
                    await client.close()
                    await asyncio.sleep(self.backoff.next())
                    continue
                self._failed = exc  # refused (a bad token, suspended): reconnecting cannot help
                self._ready.set()
                await client.close()
                return
            except (ConnectionError, ConnectionClosed, TimeoutError):
                await client.close()
                await asyncio.sleep(self.backoff.next())
                continue
            self.client, self.connections = client, self.connections + 1
            self.backoff.reset()
            self._ready.set()
            # Reconnect as soon as the server's close frame arrives (1012 from a node that drains):
            # the old connection finishes its closing handshake meanwhile, in the background.
            await client.closing()
            self._ready.clear()
            self._closing.add(closer := asyncio.create_task(client.close()))
            closer.add_done_callback(self._closing.discard)
            await asyncio.sleep(self.backoff.next())
