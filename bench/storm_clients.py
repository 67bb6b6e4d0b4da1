"""The reconnect storm's client processes: technician apps, each timing when it is signed in and on
duty, connection after connection, and when each `order.available` reaches it. Two kinds of app,
the same on the wire: `sansio` (bench/storm_sansio.py, websockets' Sans-I/O protocol on uvloop
transports: the default, cheap on CPU as an app on its own phone costs the servers nothing) and
`library` (the project's client library, `protocol.client.Reconnecting`, its default backoff with
full jitter).

A technician's app on every (re)connection: `auth`, `tech.duty` on its first one only (duty is
kept by the gateway), then its current position as an acknowledged `location.update`, whose reply
says whether the gateway has it on duty. That reply's arrival is the moment it counts as back."""

import asyncio
import contextlib
import math
import random
import time
from dataclasses import dataclass, field
from datetime import timedelta
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event as ProcessEvent
from typing import Any, Protocol

from bench.storm_sansio import SansioTechnician
from gateway.app import token_issuer
from gateway.config import Config
from gateway.orphans import exit_with_parent
from protocol.auth import Auth
from protocol.client import Client, ErrorReply, Reconnecting
from protocol.frames import Event
from protocol.location import Duty, LocationUpdate
from protocol.orders import OrderAvailable

REPORT_EVERY_S = 0.5
REPLY_TIMEOUT_S = 30.0
CLUSTER_KM = 10.0  # technicians of one cluster are within this of its centre
APPS = ("sansio", "library")


def clusters(count: int) -> list[tuple[float, float]]:
    """`count` metro areas 3 degrees apart (over 130 miles: no order's 50-mile circle reaches two)."""
    side = math.ceil(math.sqrt(count))
    return [(28.0 + 3.0 * (i // side), -120.0 + 3.0 * (i % side)) for i in range(count)]


@dataclass(frozen=True)
class Plan:
    """One client process's share, pickled to it."""

    worker: int
    urls: tuple[str, str, str]  # the node every session starts on, then the two others
    config: Config  # its secret resolved: sessions mint their own tokens
    prefix: str
    technicians: range  # global indices
    clusters: int
    connecting: int  # sessions connecting at once at the start (the others wait their turn)
    apps: str = "sansio"  # one of APPS


@dataclass
class Progress:
    """Sent to the parent every REPORT_EVERY_S; `final` carries the timings."""

    worker: int
    started: int = 0  # sessions whose first connection is signed in and on duty
    back: int = 0  # of those, signed in and on duty again on another connection
    failed: int = 0  # sessions that gave up (an error reply to auth or duty) or were told off duty
    final: bool = False
    ready_at: list[list[float]] = field(default_factory=list)  # per session: monotonic time of each connection
    nodes: dict[str, int] = field(default_factory=dict)  # where the sessions are now: URL -> count
    deliveries: list[tuple[str, float]] = field(default_factory=list)  # (order id, monotonic time received)
    off_duty: int = 0  # connections whose location.update reply said on_duty false
    refused: dict[str, int] = field(default_factory=dict)  # error replies to a sign-in, by code
    attempts: int = 0  # connections tried, each session's first one on node A included


def place(rng: random.Random, centre: tuple[float, float]) -> tuple[float, float]:
    r, angle = CLUSTER_KM * math.sqrt(rng.random()), rng.uniform(0, 2 * math.pi)
    return centre[0] + r * math.cos(angle) / 111.2, centre[1] + r * math.sin(angle) / (111.2 * math.cos(
        math.radians(centre[0])))


class App(Protocol):
    """What the process asks of a technician's app, of either kind."""

    @property
    def ready_at(self) -> list[float]: ...  # when each connection was back (its location.update said on duty)

    @property
    def off_duty(self) -> int: ...  # connections whose location.update reply said on_duty false

    @property
    def attempts(self) -> int: ...  # connections tried, the first one on node A included

    @property
    def failed(self) -> BaseException | None: ...  # a final refusal: it gave up

    async def start(self, timeout: float) -> object: ...  # signed in on its first node, or raises

    def node(self) -> str | None: ...  # the URL of the node it is signed in on now

    async def close(self) -> None: ...


class LibraryTechnician:
    """A technician's app on the client library (`Reconnecting`); its events go to one queue."""

    def __init__(self, urls: list[str], token: str, position: tuple[float, float],
                 events: "asyncio.Queue[Event | dict[str, Any]]", refused: dict[str, int]) -> None:
        self.token, self.position, self.refused = token, position, refused
        self.ready_at: list[float] = []
        self.off_duty = 0
        self.app = Reconnecting(urls, self.sign_in, proxy=None)  # (no proxy look-up per connect)
        self.app.events = events  # one queue for the process's sessions: one reader

    @property
    def attempts(self) -> int:
        return self.app.attempts

    @property
    def failed(self) -> BaseException | None:
        return self.app.failed

    async def start(self, timeout: float) -> object:
        return await self.app.start(timeout=timeout)

    def node(self) -> str | None:
        client = self.app.client
        return self.app.url if client is not None and client.ws.state.name == "OPEN" else None

    async def close(self) -> None:
        await self.app.close()

    async def sign_in(self, client: Client) -> None:
        try:
            await client.request(Auth(token=self.token), REPLY_TIMEOUT_S)
            if not self.ready_at:
                await client.request(Duty(on_duty=True), REPLY_TIMEOUT_S)
            ack = await client.request(LocationUpdate(lat=self.position[0], lng=self.position[1]), REPLY_TIMEOUT_S)
        except ErrorReply as refused:
            self.refused[refused.code] = self.refused.get(refused.code, 0) + 1
            raise
        if not ack.on_duty:
            self.off_duty += 1
            return
        self.ready_at.append(time.monotonic())


def counted(worker: int, techs: list[App]) -> Progress:
    return Progress(worker, sum(1 for t in techs if t.ready_at), sum(1 for t in techs if len(t.ready_at) >= 2),
                    sum(1 for t in techs if t.failed is not None), off_duty=sum(t.off_duty for t in techs))


async def run(plan: Plan, reports: "Queue[Any]", stop: ProcessEvent) -> None:
    issuer = token_issuer(plan.config, create_secret=False)
    centres = clusters(plan.clusters)
    events: asyncio.Queue[Event | dict[str, Any]] = asyncio.Queue()  # the library apps'
    deliveries: list[tuple[str, float]] = []  # (order id, monotonic time received)
    refused: dict[str, int] = {}

    def delivered(order_id: str, at: float) -> None:
        deliveries.append((order_id, at))

    techs: list[App] = []
    a, b, c = plan.urls
    for index in plan.technicians:
        position = place(random.Random(index), centres[index % len(centres)])
        token, _ = issuer.mint(f"{plan.prefix}-tech-{index}", "technician", ttl=timedelta(hours=2))
        urls = [a, b, c] if index % 2 == 0 else [a, c, b]  # a's apps spread over the other two
        techs.append(SansioTechnician(urls, token, position, delivered, refused) if plan.apps == "sansio"
                     else LibraryTechnician(urls, token, position, events, refused))

    async def listen() -> None:
        while True:
            event = await events.get()
            if isinstance(event, OrderAvailable):
                delivered(event.order.id, time.monotonic())

    listener = asyncio.create_task(listen())
    gate = asyncio.Semaphore(plan.connecting)

    async def start(tech: App) -> None:
        async with gate:
            with contextlib.suppress(Exception):  # counted as failed below
                await tech.start(timeout=120)

    starting = asyncio.create_task(asyncio.wait([asyncio.create_task(start(t)) for t in techs]))
    while not stop.is_set():
        await asyncio.sleep(REPORT_EVERY_S)
        reports.put(counted(plan.worker, techs))
    starting.cancel()
    nodes: dict[str, int] = {}
    for t in techs:
        if (url := t.node()) is not None:
            nodes[url] = nodes.get(url, 0) + 1
    listener.cancel()
    final = counted(plan.worker, techs)
    final.final, final.ready_at, final.nodes, final.deliveries = True, [t.ready_at for t in techs], nodes, deliveries
    final.refused, final.attempts = refused, sum(t.attempts for t in techs)
    reports.put(final)
    await asyncio.gather(*(close(t) for t in techs))


async def close(app: App) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(app.close(), 5)


def main(plan: Plan, reports: "Queue[Any]", stop: ProcessEvent) -> None:
    """A client process: its sessions until the parent's stop (or the parent's end)."""
    exit_with_parent()
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(run(plan, reports, stop))

