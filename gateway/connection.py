"""One websocket session: feed frames to the state and the handlers, write replies and events."""

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import asyncpg
import msgspec
from redis import exceptions as redis_errors
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from gateway.delivery import Batches, group_channel, user_channel
from gateway.session import SessionState
from gateway.wire import write_now
from handlers.context import Identity
from handlers.errors import ENDINGS, N_, BadRequest, GatewayError, Internal, RateLimited, TooLarge, Unavailable
from handlers.i18n import negotiate
from handlers.services import Services
from protocol.admin import Unwatched
from protocol.bounds import readable
from protocol.codec import Codec, TooDeep, error_frame
from protocol.frames import Event, Reply
from protocol.messages import BY_TYPE

if TYPE_CHECKING:
    from gateway.server import Gateway

log = logging.getLogger(__name__)
# PostgreSQL or Redis down, restarting, still loading or timing out: the client should retry, nothing is wrong with
# its frame. Any other error of theirs (a Redis ResponseError, an SQL error) is a bug: `internal`. asyncpg raises
# InternalClientError ("another operation is in progress") for the first query on a pooled connection that a stopping
# PostgreSQL terminated while it sat idle; the pool discards that connection (tests/test_restarts.py).
UNREACHABLE = (OSError, TimeoutError, redis_errors.ConnectionError, redis_errors.TimeoutError,
               asyncpg.PostgresConnectionError, asyncpg.exceptions.OperatorInterventionError,
               asyncpg.InternalClientError)


class Deliveries:
    """What every context of this gateway offers handlers: locales and event delivery."""

    __slots__ = ()
    gateway: "Gateway"

    def negotiate_locale(self, requested: str | None) -> str:
        return negotiate(requested)

    async def deliver_to_user(self, user_id: str, event: Event) -> int:
        return await self.gateway.hub.publish(user_channel(user_id), event)

    async def stream_to_user(self, user_id: str, event: Event) -> int:
        return await self.gateway.hub.publish_stream(user_id, event)

    async def deliver_to_group(self, group: str, event: Event) -> int:
        return await self.gateway.hub.publish(group_channel(group), event)

    async def deliver_many(self, batches: Batches) -> None:
        await self.gateway.hub.publish_many(batches)

    async def unwatch_user(self, user_id: str) -> None:
        await self.gateway.hub.unwatch(user_id)

    async def disconnect_user(self, user_id: str, reason: type[GatewayError]) -> int:
        assert ENDINGS.get(reason.code) is reason, f"{reason.__name__} is not in handlers.errors.ENDINGS"
        return await self.gateway.hub.disconnect(user_id, reason.code)


class Session(Deliveries):
    """Implements handlers' `Context` for one connection, and delivery's `Sink`."""

    __slots__ = ("_closers", "_ending", "_memo", "_outbox", "_overflowed", "_timer", "_writer", "channels", "codec",
                 "gateway", "groups", "state", "ws")

    def __init__(self, gateway: "Gateway", ws: ServerConnection, codec: Codec) -> None:
        self.gateway = gateway
        self.ws = ws
        self.codec = codec
        config = gateway.config
        self.state = SessionState(config.rate_per_s, config.rate_burst, time.monotonic())
        self.channels: tuple[str, ...] = ()  # the identity's: its user's and its role's
        self.groups: set[str] | None = None  # channels joined on request (the back office's feed)
        self._outbox: collections.deque[bytes] | None = None  # events waiting for the writer
        self._writer: asyncio.Task[None] | None = None
        self._overflowed = False
        self._ending = False  # ended (suspended): no frame is acted on while the close goes out
        self._memo: dict[str, Any] | None = None  # created on first use: most sessions never need it
        self._closers: list[Callable[[], object]] | None = None
        self._timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            config.auth_timeout_s, self._auth_deadline)

    # -- Context ---------------------------------------------------------------------------
    @property
    def identity(self) -> Identity | None:
        return self.state.identity

    @property
    def services(self) -> Services:
        return self.gateway.services

    async def sign_in(self, identity: Identity) -> None:
        self.state.identity = identity
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        channels = (user_channel(identity.user_id), group_channel("role:" + identity.role))
        if channels != self.channels:
            self.gateway.hub.leave(self, self.channels)
            if self.groups:  # another identity: what the last one watched is not its to see
                self.gateway.hub.leave(self, self.groups)
                self.groups = None
            self.channels = channels
            self.gateway.presence.set(identity.user_id, True)
            async with asyncio.timeout(5):  # Redis must confirm the subscriptions and the presence
                await asyncio.gather(self.gateway.hub.join(self, channels), self.gateway.presence.settled())

    async def join(self, groups: Iterable[str]) -> None:
        channels = [group_channel(g) for g in groups]
        self.groups = (self.groups or set()) | set(channels)
        async with asyncio.timeout(5):
            await self.gateway.hub.join(self, channels)

    def leave(self, groups: Iterable[str]) -> None:
        channels = [c for c in (group_channel(g) for g in groups) if self.groups and c in self.groups]
        if channels and self.groups is not None:
            self.gateway.hub.leave(self, channels)
            self.groups.difference_update(channels)

    @property
    def memo(self) -> dict[str, Any]:
        if self._memo is None:
            self._memo = {}
        return self._memo

    def on_close(self, callback: Callable[[], object]) -> None:
        if self._closers is None:
            self._closers = []
        self._closers.append(callback)

    # -- the frame loop --------------------------------------------------------------------
    async def run(self) -> None:
        # recv() gives text frames as str, binary ones as bytes: the frame's kind, at the cost of
        # a UTF-8 check websockets does anyway (invalid UTF-8 closes with 1007 there).
        recv, write = self.ws.recv, self.write
        try:
            while True:
                reply = await self.handle(await recv())
                if reply is not None:
                    write(reply)
        except ConnectionClosed:
            pass
        finally:
            self.close_down()

    async def handle(self, data: str | bytes) -> bytes | None:
        """One frame in (str: a text frame, bytes: a binary one), at most one frame out."""
        gateway, state = self.gateway, self.state
        if self._ending:
            return None
        now = time.monotonic()
        state.last_seen = now
        limit, size = gateway.config.max_frame_bytes, len(data)
        if size > limit or (size * 4 > limit and type(data) is str and not data.isascii()
                            and len(data.encode()) > limit):  # the limit is in bytes, as on the wire
            gateway.metrics.tally_in["too_large"] += 1
            return self._error(data, TooLarge(limit=limit))
        wait = state.bucket.take(now)
        if wait:
            gateway.metrics.tally_in["rate_limited"] += 1  # never decoded: its operation is unknown
            return self._error(data, RateLimited(wait))
        if (type(data) is str) is not self.codec.text:
            gateway.metrics.tally_in["invalid"] += 1
            return self._error(data, BadRequest(
                N_("This session speaks JSON: send every frame as a text frame.") if self.codec.text else
                N_("This session speaks MessagePack: send every frame as a binary frame.")))
        try:
            request = self.codec.decode_request(data)
        except msgspec.DecodeError as exc:
            return self._error(data, self._bad_frame(data, exc))
        route = gateway.routes[type(request)]
        tally = gateway.metrics.tally_in
        tally[route.operation] += 1
        refused = state.admit(route)
        if refused is not None:
            return self._error(data, refused, request.id)
        try:
            reply: Reply | None = await route.handler(self, request)
        except GatewayError as exc:
            if exc.close_code is not None:
                self.end(exc, request.id)
                return None
            return self._error(data, exc, request.id)
        except UNREACHABLE as exc:
            log.warning("%s: a dependency is unreachable: %r", route.operation, exc)
            return self._error(data, Unavailable(), request.id)
        except Exception:
            log.exception("handler for %s failed", route.operation)
            return self._error(data, Internal(), request.id)
        if request.id is None and request.silent_without_id:
            return None  # a stream frame: counted above, too many and too cheap to time one by one
        gateway.latency[route.request].observe(time.monotonic() - now)
        if reply is None:
            return None
        reply.id = request.id
        gateway.metrics.tally_out["result"] += 1
        return self.codec.encode(reply)

    def _bad_frame(self, data: str | bytes, exc: msgspec.DecodeError) -> GatewayError:
        self.gateway.metrics.tally_in["invalid"] += 1
        try:
            kind = self.codec.decode_head(data).type
        except TooDeep:
            return BadRequest(N_("The frame is nested too deeply."))
        except msgspec.DecodeError:
            kind = None
        if kind is None:
            return BadRequest(N_("Every frame must be an object with a string `type`."))
        if kind not in BY_TYPE:
            return BadRequest(N_("Unknown operation {operation}."), operation=kind[:64])
        return BadRequest(N_("The request is not valid: {detail}"), detail=readable(str(exc)))

    def _error(self, data: str | bytes, exc: GatewayError, request_id: object = None) -> bytes:
        if request_id is None and (type(data) is str) is self.codec.text:  # a frame of the right kind
            # that failed to decode may still carry its id
            try:
                request_id = self.codec.decode_head(data).id
            except msgspec.DecodeError:
                pass
        return self._error_frame(exc, request_id)

    def _error_frame(self, exc: GatewayError, request_id: object) -> bytes:
        gateway = self.gateway
        gateway.metrics.errors.labels(exc.code).inc()
        gateway.metrics.tally_out["error"] += 1
        locale = self.state.identity.locale if self.state.identity else "en"
        message = gateway.catalogs.translate(locale, exc.message, **exc.params)
        return self.codec.encode(error_frame(request_id, exc.code, message, exc.details))

    def unwatch(self) -> None:
        """Stop watching the feed on another's word (delivery's `Sink`): the memberships it was
        scoped by changed; the app is told and may watch again."""
        if self.groups:
            self.gateway.hub.leave(self, self.groups)
            self.groups = None
            self.push(self.codec.encode(Unwatched(reason="memberships")))

    def disconnect(self, reason: str) -> None:
        """End the session on another's word (delivery's `Sink`): `reason` is an ENDINGS code."""
        self.end(ENDINGS[reason](), None)

    def end(self, exc: GatewayError, request_id: object) -> None:
        """Send `exc` as an error frame, act on no frame after it, take no more events, and close
        with its close code once what was written before has gone out."""
        if self._ending:
            return
        assert exc.close_code is not None
        self._ending = True
        self.write(self._error_frame(exc, request_id))
        hub = self.gateway.hub
        hub.leave(self, self.channels)  # the rest (presence, callbacks) when the connection is gone
        if self.groups:
            hub.leave(self, self.groups)
        self.gateway.spawn(self._close_when_written(exc.close_code, exc.code))

    async def _close_when_written(self, code: int, reason: str) -> None:
        writer = self._writer
        if writer is not None and not writer.done():  # a slow reader: the error frame waits in the outbox
            await asyncio.wait([writer], timeout=self.gateway.config.ping_interval_s)
        await self.ws.close(code, reason)

    # -- events ----------------------------------------------------------------------------
    def push(self, frame: bytes) -> None:
        """Deliver an event frame (delivery's `Sink`)."""
        self.gateway.metrics.tally_out["event"] += 1
        self.write(frame)

    def write(self, frame: bytes) -> None:
        """Send a frame. While the peer keeps up it goes straight to the socket: one write of a
        ready-made websocket frame, no task, no await (an order announced to thousands of sessions
        costs thousands of writes, not thousands of tasks). Otherwise it waits in the outbox behind
        a writer that respects the socket's flow control; a session that lets too many pile up is
        closed, not buffered."""
        if self._overflowed:
            return
        ws = self.ws
        if not self._outbox and write_now(ws, frame, self.codec.text):
            return
        outbox = self._outbox
        if outbox is None:
            outbox = self._outbox = collections.deque()
        if len(outbox) >= self.gateway.config.outbox_limit:
            self._overflowed = True
            if self._writer is not None and not self._writer.done():
                self._writer.cancel()
            outbox.clear()
            self.gateway.metrics.slow_consumers.inc()
            self.gateway.spawn(self._evict())
            return
        outbox.append(frame)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())

    async def _write(self) -> None:
        outbox, send, text = self._outbox, self.ws.send, self.codec.text
        assert outbox is not None
        try:
            while outbox:
                await send(outbox.popleft(), text=text)
        except ConnectionClosed:
            outbox.clear()

    async def _evict(self) -> None:
        """Close a slow reader with 1008. What waited in the outbox is dropped; the few frames already
        in the socket's buffers stay whole, and a reader that resumes reads them, then the close
        frame. One that does not resume within a heartbeat is cut off."""
        try:
            async with asyncio.timeout(self.gateway.config.ping_interval_s):
                await self.ws.close(CloseCode.POLICY_VIOLATION, "slow consumer: outgoing queue full")
        except TimeoutError:
            self.ws.transport.abort()

    def _auth_deadline(self) -> None:
        self._timer = None
        if self.state.identity is None:
            self.gateway.spawn(self.ws.close(CloseCode.POLICY_VIOLATION, "authentication timeout"))

    def close(self, code: int, reason: str) -> None:
        self.gateway.spawn(self.ws.close(code, reason))

    def close_down(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()
        hub = self.gateway.hub
        hub.leave(self, self.channels)
        if self.groups:
            hub.leave(self, self.groups)
            self.groups = None
        identity = self.state.identity
        if identity is not None and user_channel(identity.user_id) not in hub.channels:  # its last session here
            self.gateway.presence.set(identity.user_id, False)
        self.channels = ()
        for callback in self._closers or ():
            try:
                callback()
            except Exception:
                log.exception("session close callback failed")
        self._closers = None
