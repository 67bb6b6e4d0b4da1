"""The soak's client process: technicians and consumers on the project's client library, all at once.

Technicians stream acknowledged positions and query the feed on timetables; consumers create
orders, each naming one technician of its city in its description, who accepts it when it is
announced (or, having missed the announcement, finds it in the feed), chats with the consumer,
departs, starts and completes it. Each minute a share of the sessions closes and signs in again on
the other node. Every operation's latency goes into an HdrHistogram of the minute it ended in;
timetabled operations count from when they were due (coordinated-omission free), reactive ones
from when they were sent. Each minute's histograms are appended to a JSON-lines file.
"""

import asyncio
import contextlib
import json
import math
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
from hdrh.histogram import HdrHistogram

from bench.procfs import wait_seconds
from gateway.app import token_issuer
from gateway.config import Config
from protocol.auth import Auth
from protocol.chat import ChatMessageEvent, ChatSend
from protocol.client import Client, ErrorReply
from protocol.frames import Request
from protocol.location import Duty, LocationUpdate
from protocol.orders import (
    OrderAccept,
    OrderAvailable,
    OrderCancel,
    OrderComplete,
    OrderCreate,
    OrderDepart,
    OrderNearby,
    OrderStart,
    OrderStatus,
)

HIGHEST_US = 120_000_000  # histograms: 1 us to 120 s, 3 significant digits
CANCEL_AFTER_S = 90.0  # a consumer cancels an order nobody accepted in this long (keeps the pool bounded)
REPLY_TIMEOUT_S = 30.0
MARK = "soak job for "  # an order's description: "soak job for TECH at DUE"
JOB_S = 15.0  # accept to complete; chat on both sides meanwhile
TECH_STEPS = ((1.0, "chat"), (3.0, "order.depart"), (6.0, "chat"), (9.0, "order.start"), (12.0, "chat"),
              (JOB_S, "order.complete"))
CONSUMER_CHATS = (2.0, 7.0, 13.0)  # seconds after the consumer hears of the accept
LAG_TICK_S = 0.1  # the client's own event loop: how late a timer of this period fires ("client.lag")
OPS = ("auth", "location.update", "order.nearby", "order.create", "dispatch", "order.accept", "order.depart",
       "order.start", "order.complete", "order.cancel", "chat.send", "chat.delivery")


def histogram() -> HdrHistogram:
    return HdrHistogram(1, HIGHEST_US, 3)


@dataclass(frozen=True)
class Member:
    user: str
    home: tuple[float, float]  # (lat, lng)
    node: int  # the node it first connects to


@dataclass(frozen=True)
class Plan:
    """One client process's share, pickled to it."""

    worker: int
    urls: tuple[str, ...]
    config: Config  # for minting the sessions' tokens (the gateways' secret)
    technicians: list[Member]
    consumers: list[Member]
    city_techs: list[list[str]]  # every technician of the run, by city: whom a consumer's order names
    city_of: dict[str, int]  # a consumer's city
    t0: float  # time.monotonic() when minute 0 starts (after the ramp)
    minutes: int
    ramp_s: float
    update_s: float
    feed_s: float
    order_s: float
    churn: float  # of the sessions, closed and signed in again per minute
    out: Path
    seed: int


@dataclass
class Recorder:
    """This minute's histograms per operation, and errors by operation and code."""

    t0: float
    hist: dict[str, HdrHistogram] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    minute: int = -1
    cpu: float = field(default_factory=time.process_time)  # this process's CPU seconds when the minute began
    wait: float = field(default_factory=lambda: wait_seconds(os.getpid()))  # its run-queue wait then

    def record(self, op: str, since: float) -> None:
        h = self.hist.get(op)
        if h is None:
            h = self.hist[op] = histogram()
        h.record_value(max(1, min(HIGHEST_US, int((time.monotonic() - since) * 1e6))))

    def error(self, op: str, code: str) -> None:
        key = f"{op}:{code}"
        self.errors[key] = self.errors.get(key, 0) + 1

    def roll(self, out: Path, worker: int, sessions: int) -> None:
        """Append this minute's figures to `out` and start the next minute."""
        cpu, wait = time.process_time(), wait_seconds(os.getpid())
        line = {"worker": worker, "minute": self.minute, "sessions": sessions, "errors": self.errors,
                "cpu_s": cpu - self.cpu, "wait_s": wait - self.wait,
                "ops": {op: h.encode().decode() for op, h in self.hist.items()}}
        with out.open("a") as f:
            f.write(json.dumps(line) + "\n")
        self.hist, self.errors, self.cpu, self.wait = {}, {}, cpu, wait
        self.minute = math.floor((time.monotonic() - self.t0) / 60)


class Party:
    """One app: a session that can be closed and opened again (on the other node)."""

    def __init__(self, world: "World", member: Member, role: str) -> None:
        self.world, self.member, self.role = world, member, role
        self.token = world.issuer.mint(member.user, role, ttl=world.ttl)[0]  # type: ignore[arg-type]
        self.node = member.node
        self.client: Client | None = None
        self.up = asyncio.Event()
        self.reader: asyncio.Task[None] | None = None

    async def open(self) -> None:
        started = time.monotonic()
        client = await Client.connect(self.world.plan.urls[self.node % len(self.world.plan.urls)], open_timeout=30,
                                      max_size=1 << 22)
        await client.request(Auth(token=self.token), REPLY_TIMEOUT_S)
        self.world.rec.record("auth", started)
        self.client = client
        await self.after_sign_in(client)
        self.reader = asyncio.create_task(self.read(client))
        self.up.set()

    async def reopen(self) -> None:
        """Churn: close, sign in on the other node, carry on."""
        self.up.clear()
        old, self.client = self.client, None
        if self.reader is not None:
            self.reader.cancel()
        if old is not None:
            await old.close()
        self.node += 1
        while True:
            try:
                await self.open()
                return
            except (OSError, ConnectionError, TimeoutError, ErrorReply) as exc:
                self.world.rec.error("auth", type(exc).__name__)
                await asyncio.sleep(1.0)

    async def after_sign_in(self, client: Client) -> None:
        pass

    async def run(self) -> None:
        raise NotImplementedError

    async def read(self, client: Client) -> None:
        while True:
            self.on_event(await client.events.get())

    def on_event(self, event: Any) -> None:
        pass

    async def call(self, op: str, request: Request, since: float) -> Any:
        """A request on the current session, its latency from `since`; None when it failed."""
        client = self.client
        if client is None:
            return None
        try:
            reply = await client.request(request, REPLY_TIMEOUT_S)
        except ErrorReply as exc:
            self.world.rec.error(op, exc.code)
            return None
        except (ConnectionError, TimeoutError) as exc:
            if self.up.is_set():  # not a churn's own closing
                self.world.rec.error(op, type(exc).__name__)
            return None
        self.world.rec.record(op, since)
        return reply

    async def every(self, period: float, action: Callable[[float], Awaitable[None]]) -> None:
        """`action(due)` on a timetable, a random phase within the period; slots that fall while the
        session is closed (churn) are skipped, as the app would not send then."""
        due = time.monotonic() + self.world.rng.uniform(0, period)
        while True:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if not self.up.is_set():
                await self.up.wait()
                due = time.monotonic()
            self.world.spawn(action(due))
            due += period

    async def chat(self, order_id: str, n: int) -> None:
        sent = time.monotonic()
        await self.call("chat.send", ChatSend(order_id=order_id, client_id=f"{self.member.user[:8]}-{n}",
                                              text=f"soak {sent:.6f}"), sent)


class Technician(Party):
    def __init__(self, world: "World", member: Member) -> None:
        super().__init__(world, member, "technician")
        self.jobs: set[str] = set()  # orders accepted or being accepted
        self.steps = 0
        self.mine = f"{MARK}{member.user} "

    def position(self) -> LocationUpdate:
        lat, lng = self.member.home
        rng = self.world.rng
        return LocationUpdate(lat=round(lat + rng.uniform(-0.02, 0.02), 6),
                              lng=round(lng + rng.uniform(-0.02, 0.02), 6))

    async def after_sign_in(self, client: Client) -> None:
        await client.request(Duty(on_duty=True), REPLY_TIMEOUT_S)
        await client.request(self.position(), REPLY_TIMEOUT_S)

    async def run(self) -> None:
        await self.open()
        plan = self.world.plan
        self.world.spawn(self.every(plan.update_s, self.update))
        self.world.spawn(self.every(plan.feed_s, self.feed))

    async def update(self, due: float) -> None:
        await self.call("location.update", self.position(), due)

    async def feed(self, due: float) -> None:
        page = await self.call("order.nearby", OrderNearby(limit=50), due)
        for found in page.orders if page is not None else ():
            if found.order.description.startswith(self.mine):  # missed its announcement (churn)
                self.take(found.order.id, time.monotonic())

    def on_event(self, event: Any) -> None:
        if isinstance(event, OrderAvailable):
            description = event.order.description
            if description.startswith(self.mine):
                self.world.rec.record("dispatch", float(description.rsplit(" ", 1)[1]))
                self.take(event.order.id, time.monotonic())
        elif isinstance(event, ChatMessageEvent):
            self.world.heard(event, self.member.user)

    def take(self, order_id: str, since: float) -> None:
        if order_id not in self.jobs:
            self.jobs.add(order_id)
            self.world.spawn(self.job(order_id, since))

    async def job(self, order_id: str, since: float) -> None:
        if await self.call("order.accept", OrderAccept(order_id=order_id), since) is None:
            self.jobs.discard(order_id)
            return
        accepted = time.monotonic()
        for at, step in TECH_STEPS:
            await asyncio.sleep(max(0.0, accepted + at - time.monotonic()))
            self.steps += 1
            if step == "chat":
                await self.chat(order_id, self.steps)
                continue
            request = {"order.depart": OrderDepart, "order.start": OrderStart, "order.complete": OrderComplete}[step]
            sent = time.monotonic()
            while await self.call(step, request(order_id=order_id), sent) is None:  # closed by churn: again
                await asyncio.sleep(1.0)
                await self.up.wait()
        self.jobs.discard(order_id)
        self.world.done_jobs += 1


class Consumer(Party):
    def __init__(self, world: "World", member: Member) -> None:
        super().__init__(world, member, "consumer")
        self.open_orders: dict[str, float] = {}  # order id -> when created
        self.chats = 0

    async def run(self) -> None:
        await self.open()
        self.world.spawn(self.every(self.world.plan.order_s, self.order))

    async def order(self, due: float) -> None:
        plan, rng = self.world.plan, self.world.rng
        city = plan.city_of[self.member.user]
        tech = rng.choice(plan.city_techs[city])
        lat, lng = self.member.home
        request = OrderCreate(brand="whirlpool", sku="WRF535SWHZ", service_type="repair",
                              description=f"{MARK}{tech} at {due:.6f}", address="233 S Wacker Dr",
                              lat=lat + rng.uniform(-0.05, 0.05), lng=lng + rng.uniform(-0.05, 0.05))
        created = await self.call("order.create", request, due)
        if created is None:
            return
        order_id = created.order.id
        self.open_orders[order_id] = time.monotonic()
        await asyncio.sleep(CANCEL_AFTER_S)
        if order_id in self.open_orders:  # nobody took it
            del self.open_orders[order_id]
            sent = time.monotonic()
            await self.call("order.cancel", OrderCancel(order_id=order_id, reason="nobody came"), sent)
            self.world.cancelled += 1

    def on_event(self, event: Any) -> None:
        if isinstance(event, OrderStatus) and event.order.state == "accepted":
            if self.open_orders.pop(event.order.id, None) is not None:
                self.world.spawn(self.talk(event.order.id))
        elif isinstance(event, ChatMessageEvent):
            self.world.heard(event, self.member.user)

    async def talk(self, order_id: str) -> None:
        heard = time.monotonic()
        for at in CONSUMER_CHATS:
            await asyncio.sleep(max(0.0, heard + at - time.monotonic()))
            self.chats += 1
            await self.chat(order_id, self.chats)


class World:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.rng = random.Random(plan.seed)
        self.issuer = token_issuer(plan.config, create_secret=False)
        self.ttl = timedelta(seconds=plan.ramp_s + plan.minutes * 60 + 3600)
        self.rec = Recorder(plan.t0)
        self.tasks: set[asyncio.Task[Any]] = set()
        self.techs = [Technician(self, m) for m in plan.technicians]
        self.consumers = [Consumer(self, m) for m in plan.consumers]
        self.done_jobs = self.cancelled = 0

    def spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            self.rec.error("client", repr(exc)[:80])

    def heard(self, event: ChatMessageEvent, me: str) -> None:
        """A chat message from the other member: its delivery latency (its text says when it left)."""
        m = event.message
        if m.kind == "text" and m.sender_id != me and m.text and m.text.startswith("soak "):
            self.rec.record("chat.delivery", float(m.text[5:]))

    async def lag(self) -> None:
        """How late this process's event loop runs timers: when it is busy, the latencies it
        measures include its own delay (the clients, not the gateway, would be the limit)."""
        while True:
            due = time.monotonic() + LAG_TICK_S
            await asyncio.sleep(LAG_TICK_S)
            self.rec.record("client.lag", due)

    async def run(self) -> None:
        plan = self.plan
        self.spawn(self.lag())
        parties: list[Party] = [*self.techs, *self.consumers]
        self.rng.shuffle(parties)
        start = time.monotonic()
        for i, party in enumerate(parties):  # spread over the ramp
            await asyncio.sleep(max(0.0, start + plan.ramp_s * i / len(parties) - time.monotonic()))
            self.spawn(party.run())
        await asyncio.sleep(max(0.0, plan.t0 - time.monotonic()))
        self.rec.roll(plan.out, plan.worker, self._up(parties))  # the ramp's figures: minute -1
        for minute in range(plan.minutes):
            self._churn(parties)
            await asyncio.sleep(max(0.0, plan.t0 + 60 * (minute + 1) - time.monotonic()))
            self.rec.roll(plan.out, plan.worker, self._up(parties))
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await asyncio.gather(*(p.client.close() for p in parties if p.client is not None), return_exceptions=True)

    def _churn(self, parties: list["Party"]) -> None:
        """This minute's churn: `churn` of the sessions, at random moments of the minute."""
        count = round(len(parties) * self.plan.churn)
        for party in self.rng.sample(parties, count):
            self.spawn(self._later(self.rng.uniform(0, 55), party.reopen))

    @staticmethod
    async def _later(delay: float, action: Callable[[], Awaitable[None]]) -> None:
        await asyncio.sleep(delay)
        await action()

    @staticmethod
    def _up(parties: list["Party"]) -> int:
        return sum(p.up.is_set() for p in parties)


def main(plan: Plan) -> None:
    """A client process's body (multiprocessing, spawn). Its own session, as the gateways have: with
    the kernel's autogroup scheduling (sched_autogroup_enabled) CPU time is shared between
    sessions first, so the client processes do not split one share between them."""
    os.setsid()
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    world = World(plan)
    asyncio.run(world.run())
    print(f"soak client {plan.worker}: {world.done_jobs} jobs completed, {world.cancelled} orders cancelled",
          flush=True)


def merge(lines: list[dict[str, Any]]) -> dict[int, dict[str, HdrHistogram]]:
    """The workers' lines: minute -> op -> their histograms added."""
    out: dict[int, dict[str, HdrHistogram]] = {}
    for line in lines:
        ops = out.setdefault(line["minute"], {})
        for op, encoded in line["ops"].items():
            h = ops.get(op)
            if h is None:
                h = ops[op] = histogram()
            h.decode_and_add(encoded)
    return out


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [msgspec.json.decode(line) for line in path.read_text().splitlines() if line.strip()]
