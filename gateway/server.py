"""The gateway process: the websocket server, its HTTP endpoints, sweeps and graceful shutdown."""

import asyncio
import contextlib
import gc
import logging
import math
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec
from prometheus_client import Histogram
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.frames import CloseCode
from websockets.http11 import Request as HttpRequest
from websockets.http11 import Response
from websockets.protocol import State

from gateway.config import Config
from gateway.connection import UNREACHABLE, Deliveries, Session
from gateway.delivery import Hub
from gateway.metrics import Metrics
from handlers.context import Identity
from handlers.errors import BadRequest
from handlers.orders import location
from handlers.registry import ROUTES
from handlers.routing import Route
from handlers.services import Services
from protocol.codec import CODECS, JSON, JSON_SUBPROTOCOL, SUBPROTOCOLS
from protocol.frames import Request
from storage import geo, lifecycle, payments, push
from storage.db import pool_waiting
from storage.push import Presence

log = logging.getLogger(__name__)
WS_PATH = "/ws"
# Connections the kernel queues for accept(). asyncio's default of 100 overflows when a stopping
# node's thousands of apps reconnect within a tenth of a second: the handshakes it drops stall in
# TCP retransmits for seconds (bench.storm). Linux caps it at net.core.somaxconn (4096 by default).
LISTEN_BACKLOG = 4096
WAVE_EVERY_S = 0.1  # SHUTDOWN_SPREAD_S: a wave of close frames this often



def select_subprotocol(connection: ServerConnection, offered: Sequence[str]) -> str | None:
    """MessagePack when asked for; JSON otherwise, also for clients that offer nothing."""
    for name in SUBPROTOCOLS:
        if name in offered:
            return name
    return None


class Gateway:
    def __init__(self, config: Config, services: Services, hub: Hub, metrics: Metrics | None = None) -> None:
        self.config = config
        self.services = services
        self.hub = hub
        self.presence = Presence(services.redis, hub.node.hex(), services.chat_rules.presence_ttl_s)
        self.catalogs = services.catalogs
        self.metrics = metrics or Metrics()
        self.routes: dict[type[Request], Route] = ROUTES
        self.latency: dict[type[Request], Histogram] = {
            r: self.metrics.latency.labels(route.operation) for r, route in ROUTES.items()}
        self.metrics.tally_in.update({route.operation: 0 for route in ROUTES.values()}
                                     | {"invalid": 0, "too_large": 0, "rate_limited": 0})
        self.sessions: set[Session] = set()
        self.draining = False  # set when shutdown begins: readiness answers 503
        self.server: Server | None = None
        self.http_port: int | None = None  # the plain-HTTP side (gateway.web), once started
        self._background: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def restore_positions(self) -> None:
        """Each time the pub/sub connection comes back after a loss (Redis restarted, perhaps
        empty), this process's presence goes back into Redis (delivery routes by it), and the
        positions its technicians last sent, if still fresh, go back into the GEO index at once
        (`handlers.orders.location.restore`)."""
        while True:
            await self.hub.regained.wait()
            self.hub.regained.clear()
            try:  # first where delivery finds this process's users: Redis may have restarted empty
                async with asyncio.timeout(10):
                    await self.presence.restore(self.hub.local_users())
            except UNREACHABLE as exc:
                log.warning("restoring presence after a Redis reconnection failed, retrying: %r", exc)
                await asyncio.sleep(1)
                self.hub.regained.set()
                continue
            fresh_after = time.time() - self.services.order_rules.stale_after_s
            positions = {s.identity.user_id: s.memo["position"] for s in list(self.sessions)
                         if s.identity is not None and s.identity.role == "technician"
                         and s.memo.get("position_at", 0) > fresh_after}
            try:
                restored = await location.restore(self.services, positions)
            except UNREACHABLE as exc:
                log.warning("restoring positions after a Redis reconnection failed, retrying: %r", exc)
                await asyncio.sleep(1)
                self.hub.regained.set()
                continue
            log.info("Redis reconnected: %d technicians' last positions restored", restored)

    async def start(self, sock: Any = None) -> None:
        c = self.config
        where: dict[str, Any] = {"sock": sock} if sock is not None else {"host": c.host, "port": c.port}
        self.server = await serve(
            self.connect, **where,
            subprotocols=list(SUBPROTOCOLS),  # type: ignore[arg-type]
            select_subprotocol=select_subprotocol,  # type: ignore[arg-type]
            process_request=self.http,
            compression=None,  # permessage-deflate costs ~100 KiB per idle session
            max_size=c.max_frame_bytes * 4,  # beyond: close 1009; between 1x and 4x: `too_large`
            ping_interval=c.ping_interval_s,
            ping_timeout=c.ping_interval_s,
            close_timeout=c.ping_interval_s,  # a peer that cannot answer within a heartbeat is gone
            reuse_port=c.workers > 1 and sock is None,
            backlog=LISTEN_BACKLOG,
        )
        await self.presence.start()
        self.spawn(self._sweep())
        self.spawn(self._flush_metrics())
        self.spawn(self.restore_positions())

    @property
    def port(self) -> int:
        assert self.server is not None
        port: int = next(iter(self.server.sockets)).getsockname()[1]
        return port

    async def connect(self, ws: ServerConnection) -> None:
        session = Session(self, ws, CODECS.get(ws.subprotocol or JSON_SUBPROTOCOL, JSON))
        self.sessions.add(session)
        self.metrics.sessions.inc()
        self.metrics.opened.inc()
        try:
            await session.run()
        finally:
            self.sessions.discard(session)
            self.metrics.sessions.dec()
            code = ws.close_code if ws.close_code is not None else 1006  # the code sent, else received
            self.metrics.closed.labels(str(code) if code in CLOSE_CODES else "other").inc()

    async def http(self, connection: ServerConnection, request: HttpRequest) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == WS_PATH:
            return None
        if path in ("/readyz", "/healthz", "/livez"):
            status, report = await self.health(ready=path != "/livez")
            return _response(status, "application/json", msgspec.json.encode(report))
        if path == "/metrics":
            return _response(200, "text/plain; version=0.0.4; charset=utf-8", self.metrics.exposition())
        if path.startswith("/attachments/"):
            # Served by the HTTP side (gateway.web), which streams: a websockets response is
            # whole bytes in memory, and videos reach 100 MB. Apps that still fetch here go there.
            location = self.services.public_url.to(path)
            return _response(307, "text/plain; charset=utf-8", f"moved to {location}\n".encode(),
                             [("Location", location)])
        return _response(404, "text/plain; charset=utf-8", b"not found; the websocket endpoint is /ws\n")

    async def health(self, ready: bool = True) -> tuple[int, dict[str, str]]:
        """(HTTP status, report). Liveness (/livez): the process answers, nothing else asked.
        Readiness (/readyz, and /healthz as before): 200 when PostgreSQL and Redis answer and the
        open-order pool is built and this process hears other processes' events (its pub/sub
        connection is subscribed), 503 once the node drains for shutdown (first, so balancers stop
        sending it sessions before it closes them) or while a dependency is down."""
        if not ready:
            return 200, {"status": "ok"}
        if self.draining:
            return 503, {"status": "draining"}
        checks = await self.dependencies()
        ok = all(v == "ok" for v in checks.values())
        return (200 if ok else 503), {"status": "ok" if ok else "unavailable", **checks}

    async def dependencies(self) -> dict[str, str]:
        """Each dependency readiness needs (postgres, redis, pool): "ok", or "error: <why>"."""

        async def check(name: str, probe: Awaitable[Any]) -> tuple[str, str]:
            try:
                await asyncio.wait_for(probe, timeout=2)
                return name, "ok"
            except Exception as exc:
                return name, f"error: {type(exc).__name__}"

        async def pool_built() -> None:
            if not await self.services.redis.exists(geo.POOL_BUILT):
                raise LookupError("not built")  # being rebuilt from PostgreSQL (Redis lost it)

        async def listening() -> None:
            if not self.hub.listening:
                raise ConnectionError("not listening")  # events from other processes would be missed

        return dict(await asyncio.gather(check("postgres", self.services.db.fetchval("SELECT 1")),
                                         check("redis", self.services.redis.ping()), check("pool", pool_built()),
                                         check("delivery", listening())))

    async def _flush_metrics(self) -> None:
        """Every second: the frame tallies into their counters, the pool's gauges; and how late
        each quarter-second timer fires (the event loop's lag). Every METRICS_DB_INTERVAL_S: the
        gauges read from PostgreSQL (the push outbox, the money jobs)."""
        loop, db, lag, m = asyncio.get_running_loop(), self.services.db, self.metrics.loop_lag, self.metrics
        next_read = loop.time()
        while True:
            for _ in range(4):
                due = loop.time() + 0.25
                await asyncio.sleep(0.25)
                lag.observe(max(loop.time() - due, 0.0))
            m.flush()
            idle = db.get_idle_size()
            m.db_pool.labels("in_use").set(db.get_size() - idle)
            m.db_pool.labels("idle").set(idle)
            m.db_pool.labels("waiting").set(pool_waiting(db))
            for name, verdict in (await self.dependencies()).items():  # what /readyz would say now
                m.dependency_up.labels(name).set(verdict == "ok")
            with contextlib.suppress(*UNREACHABLE):  # Redis down: the gauges keep their last values
                techs, stale, pool = await geo.sizes(self.services.redis, self.config.position_stale_s)
                for what, value in (("technicians", techs), ("stale", stale), ("open_orders", pool)):
                    m.indexed.labels(what).set(value)
            if loop.time() >= next_read:
                next_read = loop.time() + self.config.metrics_db_interval_s
                # with a timeout: with the pool exhausted these wait for a connection, and the gauges
                # above (the waiting callers among them) must go on being updated meanwhile
                with contextlib.suppress(*UNREACHABLE, asyncpg.PostgresError, asyncpg.InterfaceError):  # the same
                    pending, overdue = await asyncio.wait_for(push.outbox_depth(db), timeout=2)
                    m.outbox.labels("pending").set(pending)
                    m.outbox.labels("overdue_seconds").set(overdue)
                    jobs, late = await asyncio.wait_for(payments.job_counts(db), timeout=2)
                    for (kind, state), count in jobs.items():
                        m.money_jobs.labels(kind, state).set(count)
                    m.money_overdue.set(late)

    async def _sweep(self) -> None:
        """Close sessions that went quiet or whose token expired."""
        idle = self.config.idle_timeout_s
        while True:
            await asyncio.sleep(min(5.0, idle / 4))
            now, wall = time.monotonic(), datetime.now(UTC)
            for session in list(self.sessions):
                identity = session.state.identity
                if now - session.state.last_seen > idle:
                    session.close(CloseCode.GOING_AWAY, "idle timeout")
                elif identity is not None and identity.expires_at <= wall:
                    session.close(CloseCode.POLICY_VIOLATION, "session token expired")

    async def shutdown(self) -> None:
        """Stop accepting, close every session with 1012 so apps reconnect elsewhere, drain."""
        if self.server is None:
            return
        self.draining = True  # readiness fails from now on
        log.info("shutting down: closing %d sessions with 1012", len(self.sessions))
        # No garbage collection while the sessions close: closing 10,000 of them made enough
        # short-lived cycles (tasks, frames, exceptions) for collections to take 3.6 s of the
        # 10 s it took (a cProfile of bench.storm's node A), time in which the close frames that
        # send its apps elsewhere waited. The process exits after, or collects again.
        collecting = gc.isenabled()
        gc.disable()
        try:
            await self._close_in_waves()
            self.server.close(code=CloseCode.SERVICE_RESTART, reason="service restart")  # (the rest)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.server.wait_closed(), self.config.shutdown_grace_s)
        finally:
            if collecting:
                gc.enable()
        log.debug("sessions closed; stopping background tasks")
        await lifecycle.stop(list(self._background))
        log.debug("background tasks stopped")

    async def _close_in_waves(self) -> None:
        """With SHUTDOWN_SPREAD_S, stop accepting, then send the close frames a wave every
        WAVE_EVERY_S over that time rather than all at once: the other nodes get the apps'
        handshakes and sign-ins as a stream instead of one burst."""
        assert self.server is not None
        spread = self.config.shutdown_spread_s
        connections = [c for c in self.server.connections if c.protocol.state is State.OPEN]
        if spread <= 0 or not connections:
            return
        self.server.server.close()  # no new sessions: websockets answers handshakes under way with 503
        waves = max(1, min(len(connections), math.ceil(spread / WAVE_EVERY_S)))
        size = math.ceil(len(connections) / waves)
        log.info("closing %d sessions in %d waves over %.1f s", len(connections), waves, spread)
        loop = asyncio.get_running_loop()
        started = loop.time()
        for wave in range(waves):
            await asyncio.sleep(max(0.0, started + wave * spread / waves - loop.time()))
            for connection in connections[wave * size:(wave + 1) * size]:
                if connection.protocol.state is State.OPEN:
                    self.spawn(connection.close(CloseCode.SERVICE_RESTART, "service restart"))


# Close codes counted by their number; any other (an app's own 4xxx) as "other": bounded labels.
CLOSE_CODES = frozenset((1000, 1001, 1002, 1003, 1006, 1007, 1008, 1009, 1011, 1012, 4003))


class RequestContext(Deliveries):
    """The context of an HTTP request: an identity but no session to sign in or keep state in."""

    def __init__(self, gateway: Gateway, identity: Identity) -> None:
        self.gateway = gateway
        self.identity: Identity | None = identity
        self.services = gateway.services
        self.memo: dict[str, Any] = {}

    def on_close(self, callback: Callable[[], object]) -> None:
        callback()

    async def sign_in(self, identity: Identity) -> None:
        raise BadRequest()

    async def join(self, groups: Iterable[str]) -> None:
        raise BadRequest()

    def leave(self, groups: Iterable[str]) -> None:
        pass


def _response(status: int, content_type: str, body: bytes, more: Sequence[tuple[str, str]] = ()) -> Response:
    reason = {200: "OK", 307: "Temporary Redirect", 404: "Not Found", 503: "Service Unavailable"}[status]
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body))),
                       ("Cache-Control", "no-store"), *more])
    return Response(status, reason, headers, body)
