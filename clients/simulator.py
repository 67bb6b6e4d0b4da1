"""The load generator's worker process: simulated technicians and consumers on raw websockets.

The cheapest client path (uvloop, `websockets` and msgspec directly, not the client library), so
that one worker drives thousands of sessions; it reports counters and latency histograms to the
parent (`clients/load.py`) every half second."""

import asyncio
import contextlib
import dataclasses
import itertools
import math
import random
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event as ProcessEvent
from typing import Any

import msgspec
from hdrh.histogram import HdrHistogram
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.typing import Subprotocol

from gateway.config import Config
from gateway.orphans import exit_with_parent
from protocol.auth import Auth, Role
from protocol.client import Backoff
from protocol.codec import JSON_SUBPROTOCOL
from protocol.frames import Error, Head
from protocol.location import Duty, LocationUpdate
from protocol.orders import OrderCreate

HIGHEST_US = 60_000_000  # histograms: 1 µs to 60 s, 3 significant digits
REPORT_EVERY_S = 0.5
REPLY_TIMEOUT_S = 30.0  # auth, tech.duty, order.create
DRAIN_S = 2.0  # at the stop, how long replies still in flight are awaited
RETRY_AFTER_S = 1.0  # a `rate_limited` reply without retry_after waits this long; the pace is at most this
PACE_MARGIN = 1.25  # the longest retry_after is a little under the bucket's period: keep a little slower
SESSIONS_PER_SOURCE = 20_000  # under the ~28,000 ephemeral ports of one source address
METRES_PER_DEGREE = 111_195.0  # of latitude, on the mean Earth sphere
CONNECT_ERRORS = (OSError, WebSocketException, TimeoutError)

# From the demo catalog (storage/migrations/0002_orders.sql): every SKU has every service type.
CATALOG = (("whirlpool", "WRF535SWHZ"), ("whirlpool", "WTW5000DW"), ("samsung", "WF45R6100AW"),
           ("samsung", "RF28R7351SR"), ("samsung", "DVE45R6100W"), ("lg", "LDFN4542S"), ("lg", "LRMVS3006S"),
           ("ge", "JGB735SPSS"), ("ge", "GDT665SSNSS"), ("bosch", "SHPM88Z75N"), ("bosch", "HBL8453UC"),
           ("frigidaire", "FFTR1835VW"), ("frigidaire", "FFEF3054TS"), ("maytag", "MVW6230HW"),
           ("maytag", "MED6230HW"), ("kitchenaid", "KDTM404KPS"), ("kitchenaid", "KRFF507HPS"),
           ("carrier", "24ACC636A003"), ("rheem", "XE50M06ST45U1"), ("rheem", "XG40T06EC36U1"))
SERVICES = ("repair", "installation", "maintenance")
PROBLEMS = ("Stopped working this morning.", "Leaks water on the floor.", "Makes a loud grinding noise.",
            "Shows an error code and will not start.", "New unit, needs installing.", "Yearly check-up.")
STREETS = ("Main St", "Broadway", "Park Ave", "Oak St", "Elm St", "Maple Ave", "2nd Ave", "Lake Dr")

ENCODE = msgspec.json.Encoder().encode
HEAD = msgspec.json.Decoder(Head).decode
ERROR = msgspec.json.Decoder(Error).decode
DUTY = ENCODE(Duty(id="duty", on_duty=True))


def histogram() -> HdrHistogram:
    return HdrHistogram(1, HIGHEST_US, 3)


def since_us(started_ns: int) -> int:
    return max(1, min(HIGHEST_US, (time.perf_counter_ns() - started_ns) // 1000))


@dataclass(frozen=True)
class Plan:
    """One worker's share of the run, pickled to its process."""

    worker: int
    urls: tuple[str, ...]  # the fleet's nodes: a session starts on one (by its index), reconnects to the next
    config: Config  # its secret resolved: the worker mints its sessions' tokens
    prefix: str
    technicians: range  # global indices, interleaved across workers so the ramp stays even
    consumers: range
    total_technicians: int
    total_consumers: int
    city: tuple[float, float]
    spread_km: float
    interval_s: float
    max_rate: bool
    window: int
    order_interval_s: float
    ramp_s: float
    token_ttl_s: float
    source_addresses: bool  # bind sessions to 127.0.0.2, .3, ... (loopback target, many sessions)


@dataclass
class Counters:
    """Cumulative since the worker started; summed over workers by the parent."""

    sent: int = 0
    acked: int = 0
    orders_sent: int = 0
    orders_created: int = 0
    events: int = 0
    connected: int = 0
    ever_connected: int = 0
    signed_in: int = 0
    ever_signed_in: int = 0
    auth_refused: int = 0
    rate_limited: int = 0  # `rate_limited` replies: apart from `errors`, the session waited their retry_after
    rate_limited_retries: int = 0  # requests (auth, tech.duty, order.create) sent again after the wait
    rate_limited_wait_ms: int = 0  # how long sessions held their frames back, in all
    errors: dict[str, int] = field(default_factory=dict)  # error replies (and reply timeouts) by code
    failures: dict[str, int] = field(default_factory=dict)  # connections that failed or dropped, by reason
    examples: dict[str, str] = field(default_factory=dict)  # the first message of each code or reason

    def count(self, table: dict[str, int], key: str, example: str) -> None:
        table[key] = table.get(key, 0) + 1
        self.examples.setdefault(key, example)


@dataclass(frozen=True)
class Report:
    worker: int
    counters: dict[str, Any]
    latency: bytes | None  # hdrh encodings of the values recorded since the previous report
    order_latency: bytes | None
    final: bool = False


class Walker:
    """A technician's random walk in the circle: 3 to 100 m a step in a drifting heading, turned
    back toward the centre at the edge. Positions are metres east (x) and north (y) of the city."""

    def __init__(self, rng: random.Random, city: tuple[float, float], radius_km: float) -> None:
        self.rng = rng
        self.lat0, self.lng0 = city
        self.radius = radius_km * 990  # metres, with a margin for the flat-Earth approximation
        r, angle = self.radius * math.sqrt(rng.random()), rng.uniform(0, 2 * math.pi)
        self.x, self.y = r * math.cos(angle), r * math.sin(angle)
        self.heading = rng.uniform(0, 360)

    def step(self) -> tuple[float, float, float, float]:
        """Move; the new (lat, lng), the heading and the metres moved."""
        rng = self.rng
        metres = rng.uniform(3, 100)
        self.heading = (self.heading + rng.gauss(0, 25)) % 360
        x, y = self._ahead(metres)
        if math.hypot(x, y) > self.radius:
            self.heading = (math.degrees(math.atan2(-self.x, -self.y)) + rng.gauss(0, 30)) % 360
            x, y = self._ahead(metres)
        if math.hypot(x, y) <= self.radius:
            self.x, self.y = x, y
        return *self.position(), self.heading, metres

    def position(self) -> tuple[float, float]:
        lat = self.lat0 + self.y / METRES_PER_DEGREE
        return lat, self.lng0 + self.x / (METRES_PER_DEGREE * math.cos(math.radians(lat)))

    def _ahead(self, metres: float) -> tuple[float, float]:
        h = math.radians(self.heading)
        return self.x + metres * math.sin(h), self.y + metres * math.cos(h)


class Link:
    """One open session: its websocket, the requests in flight, the task reading the replies."""

    def __init__(self, worker: "Worker", ws: ClientConnection) -> None:
        self.worker = worker
        self.ws = ws
        self.updates: dict[str, int] = {}  # update id -> send time (perf_counter_ns)
        self.calls: dict[str, asyncio.Future[Error | None]] = {}
        self.window = asyncio.Semaphore(worker.plan.window)
        self.resume_at = 0.0  # loop time before which nothing is sent: the gateway said `retry_after`
        self.pace = 0.0  # once rate-limited: at least this long between frames (the longest retry_after)
        self.idle = asyncio.Event()  # set when the last update in flight is answered
        self.ids = itertools.count(1)
        self.reader = asyncio.create_task(self._read())

    async def call(self, frame: bytes, request_id: str) -> Error | None:
        """Send a request and wait for its reply: None for a result, else the error. A
        `rate_limited` reply is not an answer: the request goes again after its retry_after."""
        c = self.worker.counters
        while True:
            await self.admit()
            future = self.calls[request_id] = asyncio.get_running_loop().create_future()
            try:
                await self.ws.send(frame, text=True)
                error: Error | None = await asyncio.wait_for(future, REPLY_TIMEOUT_S)
            except TimeoutError:
                c.count(c.errors, "timeout", f"no reply within {REPLY_TIMEOUT_S:g} s")
                raise
            finally:
                self.calls.pop(request_id, None)
            if error is None or error.code != "rate_limited" or self.worker.stopping:
                return error
            c.rate_limited_retries += 1

    async def admit(self) -> None:
        """Wait until the gateway's retry_after has passed; once rate-limited, keep to its pace
        (frames in flight would otherwise all go at once when the wait ends, and most be refused)."""
        loop = asyncio.get_running_loop()
        while (wait := self.resume_at - loop.time()) > 0 and not self.worker.stopping:
            await self.worker.pause(wait)
        if self.pace:
            self.resume_at = max(self.resume_at, loop.time() + self.pace)

    def hold(self, error: Error) -> None:
        """A `rate_limited` reply: nothing more goes out for its `retry_after` seconds."""
        c, now = self.worker.counters, asyncio.get_running_loop().time()
        c.rate_limited += 1
        c.examples.setdefault("rate_limited", error.message)
        retry_after = (error.details or {}).get("retry_after")
        wait = float(retry_after) if isinstance(retry_after, int | float) and retry_after > 0 else RETRY_AFTER_S
        self.pace = max(self.pace, min(wait, RETRY_AFTER_S) * PACE_MARGIN)
        until = now + wait
        if until > self.resume_at:
            c.rate_limited_wait_ms += round((until - max(now, self.resume_at)) * 1000)
            self.resume_at = until

    async def settle(self) -> None:
        """Wait (a little) for the replies to the updates in flight."""
        if self.updates and not self.reader.done():
            self.idle.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.idle.wait(), DRAIN_S)

    async def close(self) -> None:
        with contextlib.suppress(*CONNECT_ERRORS):
            await self.ws.close()
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.reader

    async def _read(self) -> None:
        counters, latency = self.worker.counters, self.worker.latency
        try:
            while True:
                data = await self.ws.recv(decode=False)
                head = HEAD(data)
                if head.type != "result" and head.type != "error":
                    counters.events += 1  # order.available, order.status...: not what we measure
                    continue
                error = ERROR(data) if head.type == "error" else None
                if error is not None and error.code == "rate_limited":
                    self.hold(error)
                elif error is not None:
                    counters.count(counters.errors, error.code, error.message)
                sent = self.updates.pop(head.id, None) if isinstance(head.id, str) else None
                if sent is not None:
                    if error is None:
                        counters.acked += 1
                        latency.record_value(since_us(sent))
                    self.window.release()
                    if not self.updates:
                        self.idle.set()
                    continue
                future = self.calls.get(head.id) if isinstance(head.id, str) else None
                if future is not None and not future.done():
                    future.set_result(error)
        except ConnectionClosed:
            for _ in range(self.worker.plan.window):  # wake the sender: its next send raises
                self.window.release()
            self.idle.set()


class Worker:
    def __init__(self, plan: Plan, queue: "Queue[Any]", stop: ProcessEvent) -> None:
        from gateway.app import token_issuer  # pulls in the storage layer: only in the worker

        self.plan = plan
        self.queue = queue
        self.stop = stop
        self.issuer = token_issuer(plan.config, create_secret=False)
        self.counters = Counters()
        self.latency = histogram()
        self.order_latency = histogram()
        self.stopping = False
        self.stopped = asyncio.Event()  # the same, for the sessions' pauses

    async def run(self) -> None:
        p = self.plan
        sessions = [self.session(i, "technician", f"{p.prefix}-tech-{i}", p.ramp_s * i / p.total_technicians,
                                 self.technician) for i in p.technicians]
        sessions += [self.session(p.total_technicians + i, "consumer", f"{p.prefix}-cons-{i}",
                                  p.ramp_s * i / p.total_consumers, self.consumer) for i in p.consumers]
        tasks = [asyncio.create_task(s) for s in sessions]
        while not self.stop.is_set():
            await asyncio.sleep(REPORT_EVERY_S)
            self.report()
        self.stopping = True  # sessions send no more, await their replies in flight, close
        self.stopped.set()
        _, late = await asyncio.wait(tasks, timeout=DRAIN_S + 3) if tasks else (set(), set())
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late, timeout=3)
        self.report(final=True)

    async def pause(self, seconds: float) -> None:
        """Sleep, cut short by the stop."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.stopped.wait()

    def report(self, final: bool = False) -> None:
        latency, order_latency = (h.encode() if h.get_total_count() else None
                                  for h in (self.latency, self.order_latency))
        self.latency.reset()
        self.order_latency.reset()
        self.queue.put(Report(self.plan.worker, dataclasses.asdict(self.counters), latency, order_latency, final))

    async def session(self, index: int, role: Role, user: str, delay: float,
                      body: Callable[[Link, random.Random], Awaitable[None]]) -> None:
        """Connect, sign in and run `body` until the stop; when the connection fails or drops,
        reconnect to the next node after the client library's backoff (full jitter). A refused
        `auth` ends the session: retrying cannot help."""
        await self.pause(delay)
        p, c, rng = self.plan, self.counters, random.Random(user)
        retry = Backoff(0.25, 5.0, rng)
        token, _ = self.issuer.mint(user, role, ttl=timedelta(seconds=p.token_ttl_s))
        auth = ENCODE(Auth(id="auth", token=token))
        source = f"127.0.0.{2 + index // SESSIONS_PER_SOURCE}"  # passed on to loop.create_connection
        extra: dict[str, Any] = {"local_addr": (source, 0)} if p.source_addresses else {}
        node, connected, signed_in = index, False, False
        while not self.stopping:
            url, node = p.urls[node % len(p.urls)], node + 1
            try:
                ws = await connect(url, subprotocols=[Subprotocol(JSON_SUBPROTOCOL)],
                                   compression=None, proxy=None, ping_interval=None, close_timeout=2, **extra)
            except CONNECT_ERRORS as exc:
                c.count(c.failures, failure(exc), str(exc) or type(exc).__name__)
                await self.pause(retry.next())
                continue
            c.connected += 1
            c.ever_connected += not connected
            connected = True
            link = Link(self, ws)
            try:
                refused = await link.call(auth, "auth")
                if refused is not None:
                    c.auth_refused += 1
                    return
                c.signed_in += 1
                c.ever_signed_in += not signed_in
                signed_in = True
                retry.reset()
                try:
                    await body(link, rng)  # until the stop
                    await link.settle()
                finally:
                    c.signed_in -= 1
            except ConnectionClosed as exc:
                close = exc.rcvd or exc.sent
                reason = f"closed {close.code}" if close else "closed without a close frame"
                c.count(c.failures, reason, (close.reason if close else "") or reason)
            except TimeoutError:
                pass  # counted as an error `timeout`; reconnect
            finally:
                c.connected -= 1
                await link.close()
            await self.pause(retry.next())

    async def technician(self, link: Link, rng: random.Random) -> None:
        p = self.plan
        await link.call(DUTY, "duty")  # an error reply is counted; updates then answer on_duty false
        walker = Walker(rng, p.city, p.spread_km)
        if p.max_rate:
            while True:
                await link.window.acquire()
                await link.admit()
                if self.stopping:
                    return
                await self.update(link, walker, 1.0)
        loop = asyncio.get_running_loop()
        await self.pause(rng.uniform(0, p.interval_s))  # spread the sessions over the interval
        next_at = loop.time()
        while not self.stopping:
            await link.admit()  # a refused update is not sent again: the next one is newer
            if self.stopping:
                return
            await self.update(link, walker, p.interval_s)
            next_at += p.interval_s
            await self.pause(next_at - loop.time())

    async def update(self, link: Link, walker: Walker, step_s: float) -> None:
        lat, lng, heading, metres = walker.step()
        request_id = f"u{next(link.ids)}"
        frame = ENCODE(LocationUpdate(id=request_id, lat=lat, lng=lng, accuracy=round(walker.rng.uniform(3, 25), 1),
                                      heading=round(heading, 1), speed=round(min(metres / step_s, 40.0), 1),
                                      device_time=datetime.now(UTC)))
        link.updates[request_id] = time.perf_counter_ns()
        await link.ws.send(frame, text=True)
        self.counters.sent += 1

    async def consumer(self, link: Link, rng: random.Random) -> None:
        p, c = self.plan, self.counters
        loop = asyncio.get_running_loop()
        await self.pause(rng.uniform(0, p.order_interval_s))
        next_at = loop.time()
        while not self.stopping:
            request_id = f"o{next(link.ids)}"
            started = time.perf_counter_ns()
            c.orders_sent += 1
            with contextlib.suppress(TimeoutError):  # counted; the next order goes out anyway
                if await link.call(ENCODE(self.order(rng, request_id)), request_id) is None:
                    c.orders_created += 1
                    self.order_latency.record_value(since_us(started))
            next_at += p.order_interval_s
            await self.pause(next_at - loop.time())

    def order(self, rng: random.Random, request_id: str) -> OrderCreate:
        brand, sku = rng.choice(CATALOG)
        lat, lng = Walker(rng, self.plan.city, self.plan.spread_km).position()
        return OrderCreate(id=request_id, brand=brand, sku=sku, service_type=rng.choice(SERVICES),
                           description=rng.choice(PROBLEMS), address=f"{rng.randint(1, 999)} {rng.choice(STREETS)}",
                           lat=lat, lng=lng)


def failure(exc: BaseException) -> str:
    if isinstance(exc, InvalidStatus):
        return f"HTTP {exc.response.status_code}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__


def main(plan: Plan, queue: "Queue[Any]", go: ProcessEvent, stop: ProcessEvent) -> None:
    """The worker process: ready, wait for the parent's go, run until its stop (or its parent's end)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent takes Ctrl-C and sets `stop`
    exit_with_parent()  # a killed parent sets no `stop`: without this the sessions would reconnect forever
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    worker = Worker(plan, queue, stop)
    queue.put(("ready", plan.worker))
    go.wait()
    asyncio.run(worker.run())
