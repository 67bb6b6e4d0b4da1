"""The reconnect storm's cheaper technician apps: on the wire what `protocol.client.Reconnecting`
does for bench/storm_clients.py's library apps, on `bench.session.Session` (websockets' Sans-I/O
protocol over uvloop transports) instead of websockets' asyncio connection.

The same frames (`auth`, `tech.duty` on the first connection only, an acknowledged
`location.update`, with the library's request ids), the same subprotocol offer, the same timeouts
(the opening handshake's 10 s, a reply's 30 s, a closing handshake's 10 s), the same reconnects
(when the server's close frame arrives, after a `protocol.client.Backoff()`, to the fleet's URLs
round robin; a sign-in refused with a code of `protocol.client.TRANSIENT` tried again after the
backoff, any other refusal final). What it leaves out is client-side work an app on its own phone
does not take from the servers' cores: a reader task and a keepalive task per connection, a future
and a lock per frame, and decoding every `order.available` (only its order id is read). It sends
no keepalive pings of its own (the library's every 20 s); it answers the server's."""

import asyncio
import time
from collections.abc import Callable

import msgspec
from websockets.exceptions import WebSocketException
from websockets.protocol import State
from websockets.typing import Subprotocol
from websockets.uri import WebSocketURI, parse_uri

from bench.session import AVAILABLE, ERROR, ORDER_ID, RESULT, Session
from protocol.auth import Auth
from protocol.client import TRANSIENT, Backoff
from protocol.codec import JSON
from protocol.frames import Error, Request
from protocol.location import Duty, LocationAck, LocationUpdate

OPEN_TIMEOUT_S = 10.0  # websockets' connect(): TCP connect and opening handshake
REPLY_TIMEOUT_S = 30.0  # the library apps' per request (bench/storm_clients.py)
CLOSE_TIMEOUT_S = 10.0  # websockets' close_timeout: the closing handshake, then the connection is aborted
SUBPROTOCOLS = [Subprotocol(JSON.subprotocol)]  # what the library offers


class Refused(Exception):
    """A sign-in's request answered with an `error` frame."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class Connection(Session):
    """One connection of an app: the opening handshake (`handshake` settles when it is over, well
    or not), then `auth` as the session's hello; `closing` settles when the server's close frame
    arrives or the connection is gone. Each `order.available` goes to `delivered` (its order id,
    when it arrived)."""

    def __init__(self, uri: WebSocketURI, hello: bytes, delivered: Callable[[str, float], None]) -> None:
        super().__init__(uri, hello, SUBPROTOCOLS)
        loop = asyncio.get_running_loop()
        self.handshake: asyncio.Future[None] = loop.create_future()
        self.closing: asyncio.Future[None] = loop.create_future()
        self.delivered = delivered

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self.handshake.done() and self.ws.state is not State.CONNECTING:
            self.handshake.set_result(None)
        if self.ws.close_rcvd is not None and not self.closing.done():
            self.closing.set_result(None)
            self._fail(ConnectionError("closed by the server"))  # no reply follows a close frame

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        for future in (self.handshake, self.closing):
            if not future.done():
                future.set_result(None)

    def _message(self, data: bytes) -> None:
        if data.startswith(AVAILABLE):  # also before the auth reply: the session hears from the moment it joins
            self.delivered(bytes(data[ORDER_ID]).decode(), time.monotonic())
        elif data.startswith(RESULT) or data.startswith(ERROR):  # replies come in order: no ids to match
            super()._message(data)

    async def answer(self, frame: bytes | None = None) -> bytes:
        """The reply to `frame` (None: to the hello), within REPLY_TIMEOUT_S; `Refused` on an error."""
        async with asyncio.timeout(REPLY_TIMEOUT_S):
            reply = await (self.opened if frame is None else self.request(frame))
        if reply.startswith(ERROR):
            raise Refused(JSON.decode_as(reply, Error).code)
        return reply

    async def finish(self) -> None:
        """Close as `Client.close()` does: a close frame (unless one was exchanged), up to
        CLOSE_TIMEOUT_S for the TCP connection to end, then abort it."""
        self.close()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self.closed
        except TimeoutError:
            self.abort()


def _frame(request: Request, request_id: str) -> bytes:
    return JSON.encode(msgspec.structs.replace(request, id=request_id))


class SansioTechnician:
    """A technician's app: `start` connects to the first URL and returns once it is signed in and
    on duty there; from then on it reconnects by itself until `close`. `ready_at` holds when each
    connection was back (its `location.update` reply said on duty)."""

    def __init__(self, urls: list[str], token: str, position: tuple[float, float],
                 delivered: Callable[[str, float], None], refused: dict[str, int]) -> None:
        self.urls = urls
        self.uris = [parse_uri(url) for url in urls]
        self.delivered = delivered
        self.refused = refused  # shared by a process's apps: code -> count
        self.backoff = Backoff()
        # the library's ids: c1, c2... on each new connection
        self.auth = _frame(Auth(token=token), "c1")
        self.duty = _frame(Duty(on_duty=True), "c2")
        lat, lng = position
        self.located = (_frame(LocationUpdate(lat=lat, lng=lng), "c3"), _frame(LocationUpdate(lat=lat, lng=lng), "c2"))
        self.ready_at: list[float] = []
        self.off_duty = 0  # connections whose location.update reply said on_duty false
        self.attempts = 0
        self.failed: BaseException | None = None  # a final refusal (or a bug of this app): it gave up
        self.url = urls[0]
        self.connection: Connection | None = None  # the signed-in one
        self._signed_in: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, timeout: float) -> None:
        self._signed_in = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run())
        self._task.add_done_callback(self._ended)
        async with asyncio.timeout(timeout):
            await self._signed_in
        if self.failed is not None:
            raise self.failed

    def node(self) -> str | None:
        """The URL of the node it is signed in on now, if any."""
        open_now = self.connection is not None and self.connection.ws.state is State.OPEN
        return self.url if open_now else None

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self.connection is not None:
            await self.connection.finish()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        for n in range(10**9):
            self.url, uri = self.urls[n % len(self.urls)], self.uris[n % len(self.uris)]
            self.attempts += 1
            connection = Connection(uri, self.auth, self.delivered)
            if not await self._open(connection, uri):
                connection.abort()
                await asyncio.sleep(self.backoff.next())
                continue
            try:
                await self._sign_in(connection)
            except Refused as refusal:
                self.refused[refusal.code] = self.refused.get(refusal.code, 0) + 1
                await connection.finish()
                if refusal.code not in TRANSIENT:  # a bad token, suspended: reconnecting cannot help
                    self.failed = refusal
                    self._settle()
                    return
                await asyncio.sleep(self.backoff.next())
                continue
            except (ConnectionError, TimeoutError, WebSocketException):
                await connection.finish()
                await asyncio.sleep(self.backoff.next())
                continue
            self.connection = connection
            self.backoff.reset()
            self._settle()
            await connection.closing  # the server's close frame (1012 from a node that drains), or the end
            # the old connection finishes its closing handshake meanwhile; the protocol has answered the close
            loop.call_later(CLOSE_TIMEOUT_S, connection.abort)
            await asyncio.sleep(self.backoff.next())

    async def _open(self, connection: Connection, uri: WebSocketURI) -> bool:
        """Connect and finish the opening handshake within OPEN_TIMEOUT_S: False if refused (a 503
        from a stopping node), dropped, or not in time."""
        try:
            async with asyncio.timeout(OPEN_TIMEOUT_S):
                await asyncio.get_running_loop().create_connection(lambda: connection, uri.host, uri.port)
                await connection.handshake
        except (OSError, TimeoutError, WebSocketException):
            return False
        return connection.ws.state is State.OPEN

    async def _sign_in(self, connection: Connection) -> None:
        await connection.answer()
        first = not self.ready_at
        if first:
            await connection.answer(self.duty)
        ack = JSON.decode_as(await connection.answer(self.located[0 if first else 1]), LocationAck)
        if not ack.on_duty:
            self.off_duty += 1
            return
        self.ready_at.append(time.monotonic())

    def _ended(self, task: "asyncio.Task[None]") -> None:
        if not task.cancelled() and task.exception() is not None:  # counted as gave up, not lost silently
            self.failed = task.exception()
            self._settle()

    def _settle(self) -> None:
        if self._signed_in is not None and not self._signed_in.done():
            self._signed_in.set_result(None)
