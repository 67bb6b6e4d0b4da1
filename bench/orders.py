"""Location ingest, dispatch and the order feed: the gateway against baselines measured in the same run.

    .venv/bin/python -m bench.orders [--quick] [--markdown docs/benchmarks.md] [--profile DIR]

1. Ingest: on-duty technicians stream `location.update` without ids; an update counts once the
   gateway confirms it is in Redis (see `Session.start_stream`). Baseline: the bare websockets +
   msgspec server decoding the same stream from the same clients. Goal: >= 0.5x its rate.
2. Dispatch: technicians in the GEO index across the US, of which the connected ones are all
   around one city; a consumer creates orders there one after another: from `order.create` leaving
   to the last technician receiving its `order.available`. Goal: p99 under 250 ms. References: the
   announcement's GEOSEARCH straight from redis-py, and the bare server pushing a frame of the same
   size to as many sessions with websockets' `broadcast()`.
3. Feed: open orders nationwide, some within the radius of technicians calling `order.nearby` in a
   closed loop. Baseline: the feed's GEOSEARCH from redis-py with as many in flight. Goals: p99
   under 10 ms, >= 0.5x the raw rate.

The servers run one at a time as their own processes (pinned to one core, the clients to the
others); ingest and feed alternate which goes first over the rounds and report medians.
"""

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:  # `python bench/orders.py`: import from the project root
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import os
import random
import time
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
import redis

from bench import cli, geodata
from bench.geodata import CHICAGO, DALLAS, DENVER
from bench.load import Clients, Hooks, Tally, all_heard
from bench.orders_report import Dispatch, Figures, Ingest, Nearby, print_report, write_markdown
from bench.procfs import cpu_seconds
from bench.profiled import print_stats, switches
from bench.rawredis import RedisLoop, feed_search
from bench.servers import Backends, ServerProcess, backends, bare_server, cores, gateway_server, hellos
from bench.session import RESULT, Stream
from gateway.config import Config
from protocol.orders import Order, OrderAvailable
from storage import geo

SECRET = "bench-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
GATEWAY_FLAGS = ("--sweep-interval-s", "1")  # the upkeep notices a dropped pool within a second
RADIUS_MI = 50.0  # the gateway's default announcement and feed radius
STEP = 1e-4  # degrees of longitude between a session's successive positions (~9 m): Redis keeps ~5e-6
DUTY = b'{"type":"tech.duty","id":"duty","on_duty":true}'
NEARBY = b'{"type":"order.nearby","id":"nearby"}'  # from the session's last position, 20 a page
ON_DUTY = b'"on_duty":true'
SEARCH_REPEAT = 50


@dataclass(frozen=True)
class Settings:
    ingest_sessions: int
    seconds: float
    warmup: float
    every: int
    window: int
    rounds: int
    indexed: int
    dispatch_sessions: int
    orders: int
    spacing: float
    open_orders: int
    in_radius: int
    nearby_sessions: int
    clients: int
    pin: bool

    @property
    def budget_s(self) -> int:
        """A hard bound on the whole run; generous, it only stops a bench that hangs."""
        per_round = 2 * (60 + self.ingest_sessions / 40 + 2 * (self.warmup + self.seconds))
        dispatch = 180 + self.dispatch_sessions / 20 + 2 * self.orders * (self.spacing + 1) + self.indexed / 5000
        feed = 120 + self.open_orders / 500
        return int(120 + self.rounds * per_round + dispatch + feed)


def parser() -> argparse.ArgumentParser:
    p = cli.parser("orders", __doc__)
    p.add_argument("--ingest-sessions", type=int, default=1000, help="technicians streaming positions")
    p.add_argument("--seconds", type=float, default=5.0, help="measured seconds of ingest and of feed load per run")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of load before each measurement")
    p.add_argument("--every", type=int, default=32, help="ingest: one update in this many carries an id (a marker)")
    p.add_argument("--window", type=int, default=4, help="ingest: markers unanswered per session at most")
    p.add_argument("--rounds", type=int, default=3, help="runs of ingest and feed per side (alternating); medians")
    p.add_argument("--indexed", type=int, default=200_000, help="dispatch: technicians in the GEO index")
    p.add_argument("--dispatch-sessions", type=int, default=5000,
                   help="dispatch: connected on-duty technicians around the city, of the indexed ones")
    p.add_argument("--orders", type=int, default=100, help="dispatch: orders created, one after another")
    p.add_argument("--spacing", type=float, default=0.15, help="dispatch: seconds between orders at least")
    p.add_argument("--open-orders", type=int, default=100_000, help="feed: open orders nationwide")
    p.add_argument("--in-radius", type=int, default=2000, help="feed: of which within the technicians' radius")
    p.add_argument("--nearby-sessions", type=int, default=16,
                   help="feed: sessions calling order.nearby in a closed loop (= requests in flight)")
    return cli.common_options(p, profile=(
        "DIR", "instead: run each gateway phase once under cProfile (measured windows only, no baselines), write "
               "DIR/{ingest,dispatch,feed}.prof and print where the time goes"))


def settings_from(args: argparse.Namespace) -> Settings:
    if args.quick:
        args.ingest_sessions, args.seconds, args.warmup, args.rounds = 200, 2.0, 0.5, 1
        args.indexed, args.dispatch_sessions, args.orders = 20_000, 1000, 20
        args.open_orders = 20_000
    positive = ("ingest_sessions", "seconds", "every", "window", "rounds", "indexed", "dispatch_sessions", "orders",
                "open_orders", "in_radius", "nearby_sessions", "clients")
    if any(getattr(args, name) <= 0 for name in positive) or args.warmup < 0 or args.spacing < 0:
        raise SystemExit(f"--{', --'.join(n.replace('_', '-') for n in positive)} must be positive")
    if args.dispatch_sessions > min(args.indexed, 15_000) or args.in_radius > args.open_orders:
        raise SystemExit("--dispatch-sessions must be at most --indexed (and 15,000: open files are capped at "
                         "20,000), --in-radius at most --open-orders")
    return Settings(args.ingest_sessions, args.seconds, args.warmup, args.every, args.window, args.rounds,
                    args.indexed, args.dispatch_sessions, args.orders, args.spacing, args.open_orders,
                    args.in_radius, args.nearby_sessions, args.clients, args.pin)


def main(argv: Sequence[str] | None = None) -> int:
    return cli.main("orders", argv, parser(), settings_from, measure, profile, print_report, write_markdown)


def measure(s: Settings, command: str) -> Figures:
    server_cpus, client_cpus = cores(s.pin)
    figures = Figures(command=command, started=time.time(),
                      settings=vars(s) | {"pinned": server_cpus is not None, "radius_mi": RADIUS_MI,
                                          "client_cores": len(client_cpus or os.sched_getaffinity(0))})
    with backends("bench-orders-") as b:
        bench = Bench(s, b, server_cpus, client_cpus)
        for round_ in range(1, s.rounds + 1):
            for name in ("bare", "gateway") if round_ % 2 else ("gateway", "bare"):
                figures.ingest.append(bench.ingest(name, round_))
        figures.dispatch = bench.dispatch()
        figures.nearby, figures.pool_rebuild_s = bench.feed()
    figures.seconds = time.time() - figures.started
    return figures


def profile(s: Settings, folder: Path) -> None:
    """The gateway's side of each phase once, under cProfile during its measured window."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("ingest", "dispatch", "feed"):
        (folder / f"{name}.prof").unlink(missing_ok=True)
        (folder / f"{name}.prof.gc").unlink(missing_ok=True)
    server_cpus, client_cpus = cores(s.pin)
    with backends("bench-orders-") as b:
        bench = Bench(s, b, server_cpus, client_cpus, folder)
        print(f"under cProfile (slower than without): {bench.ingest('gateway', 1).summary()}", flush=True)
        print(f"under cProfile: {bench.dispatch().summary()}", flush=True)
        print(f"under cProfile: {bench.feed()[0][0].summary()}", flush=True)
    for name in ("ingest", "dispatch", "feed"):
        path = folder / f"{name}.prof"
        if not path.exists():
            print(f"no profile for {name}: {path} was not written")
            continue
        print(f"\n==== {name}: the gateway's measured window ====")
        print_stats(path, 25, r"gateway|handlers|storage|protocol|websockets|redis|asyncpg", 30)


class Bench:
    """The phases, over one set of backends; with `profile`, the gateway runs under cProfile and
    the baselines are skipped."""

    def __init__(self, s: Settings, b: Backends, server_cpus: set[int] | None, client_cpus: set[int] | None,
                 profile: Path | None = None) -> None:
        self.s, self.b = s, b
        self.server_cpus, self.client_cpus = server_cpus, client_cpus
        self.config = Config(data_dir=b.root / "gateway", secret=SECRET)
        self.profile = profile
        self.rng = random.Random(1)

    # -- 1. location ingest -------------------------------------------------------------------
    def ingest(self, name: str, round_: int) -> Ingest:
        s, n = self.s, self.s.ingest_sessions
        users, frames = hellos(self.config, n)
        streams = [Stream(lat=DENVER[0] - 0.5 + (i % 100) * 0.01, lng0=DENVER[1] - 0.5 + (i // 100) * 0.01,
                          step=STEP, every=s.every, window=s.window) for i in range(n)]
        gateway = name == "gateway"
        duty = ON_DUTY if gateway else b""
        print(f"ingest, round {round_}/{s.rounds}: {name} server ...", flush=True)
        with self._server(name, f"ingest-{name}-{round_}") as server, self._clients(server, frames) as group:
            self._open(group, server, "technician")
            self._each(group, server, [DUTY] * n, "tech.duty", duty)
            self._each(group, server, [_position(st.lat, st.lng(0)) for st in streams], "location.update", duty)
            written_before = _positions_written(server) if gateway else 0
            tally, last = group.stream(streams, s.warmup, s.seconds, server.pid, self._hooks(server),
                                       {"redis": self.b.redis_pid} if gateway else {})
            if tally.errors:
                raise RuntimeError(f"{name}: {tally.errors} error frames or lost sessions while streaming\n"
                                   f"{server.log_tail()}")
            written = _positions_written(server) - written_before if gateway else 0
            if gateway:
                self._check_positions(users, streams, last)
        run = Ingest(written=written, server=name, round=round_, sessions=n, confirmed=tally.replies, sent=tally.sent,
                     seconds=tally.seconds, drain_s=max(0.0, tally.finished - tally.closed_at),
                     server_cpu=tally.server_cpu, client_cpu=tally.client_cpu,
                     redis_cpu=tally.watched_cpu.get("redis", 0.0), other_cpu=tally.other_cpu)
        print(f"  {run.summary()}", flush=True)
        return run

    def _check_positions(self, users: list[str], streams: list[Stream], last: list[int]) -> None:
        """Every session's last update (a marker, confirmed) is what Redis holds for it."""
        client = redis.Redis.from_url(self.b.redis_url)
        try:
            found: list[Any] = []  # (lng, lat) or None
            for start in range(0, len(users), 1000):
                found += client.geopos(geo.TECHS, *users[start:start + 1000])
        finally:
            client.close()
        wrong = sum(1 for where, st, n in zip(found, streams, last, strict=True)
                    if where is None or abs(where[0] - st.lng(n)) > STEP / 4 or abs(where[1] - st.lat) > STEP / 4)
        if wrong:
            raise RuntimeError(f"gateway: {wrong} of {len(users)} technicians' last confirmed positions are not "
                               "in Redis")

    # -- 2. dispatch --------------------------------------------------------------------------
    def dispatch(self) -> Dispatch:
        s, n = self.s, self.s.dispatch_sessions
        positions = geodata.around(self.rng, CHICAGO, RADIUS_MI - 5, n)
        _, frames = hellos(self.config, n)
        _, buyer_hello = hellos(self.config, 1, "consumer")
        result = Dispatch(sessions=n, indexed=s.indexed, orders=s.orders)
        if self.profile is None:
            print(f"dispatch: bare server broadcasting to {n:,} sessions ...", flush=True)
            result.broadcast, result.broadcast_bytes, result.broadcast_cpu = self._broadcast(frames, buyer_hello)
        print(f"dispatch: {s.indexed - n:,} technicians straight into Redis, then the gateway ...", flush=True)
        geodata.clear_technicians(self.b.redis_url)
        geodata.seed_technicians(self.b.redis_url, geodata.nationwide(self.rng, s.indexed - n))
        with self._server("gateway", "dispatch") as server, self._clients(server, frames) as techs:
            self._open(techs, server, "technician")
            self._each(techs, server, [DUTY] * n, "tech.duty", ON_DUTY)
            self._each(techs, server, [_position(lat, lng) for lat, lng in positions], "location.update", ON_DUTY)
            with self._clients(server, buyer_hello, 1) as buyer:
                self._open(buyer, server, "consumer")
                techs.listen()
                hooks = self._hooks(server)
                cpu_from = server.cpu(), cpu_seconds(self.b.redis_pid), techs.cpu()
                if hooks:
                    hooks[0]()
                sent = buyer.sequence([_order(k) for k in range(s.orders)], s.spacing, 30 + s.orders * 30)
                if hooks:
                    hooks[1]()
                result.server_cpu = server.cpu() - cpu_from[0]
                result.redis_cpu = cpu_seconds(self.b.redis_pid) - cpu_from[1]
                result.client_cpu = techs.cpu() - cpu_from[2]
                ids = []
                for _, _, reply in sent:
                    if not reply.startswith(RESULT):
                        raise RuntimeError(f"gateway: order.create failed: {reply[:300]!r}\n{server.log_tail()}")
                    ids.append(msgspec.json.decode(reply)["order"]["id"])
                heard = all_heard([techs], ids, n)
            result.latencies = [heard[i].last - t_sent for i, (t_sent, _, _) in zip(ids, sent, strict=True)]
            result.first = [heard[i].first - t_sent for i, (t_sent, _, _) in zip(ids, sent, strict=True)]
            result.replies = [answered - t_sent for t_sent, answered, _ in sent]
            result.event_bytes = heard[ids[0]].size
        result.search, result.search_found = geodata.time_geosearch(self.b.redis_url, CHICAGO, RADIUS_MI,
                                                                     SEARCH_REPEAT)
        print(f"  {result.summary()}", flush=True)
        return result

    def _broadcast(self, frames: list[bytes], buyer_hello: list[bytes]) -> tuple[list[float], int, tuple[float, float]]:
        """The bare server pushing an event like the gateway's to every session: (seconds from the
        request leaving to the last session receiving it, per event; the event's bytes; CPU seconds
        of the server and of the listening clients over all events)."""
        n, s = len(frames), self.s
        events = [_event(str(uuid.uuid4())) for _ in range(s.orders)]
        requests = [msgspec.json.encode({"type": "broadcast", "id": f"b{k}", "event": e}) for k, e in enumerate(events)]
        with (self._server("bare", "broadcast") as server, self._clients(server, frames) as techs,
              self._clients(server, buyer_hello, 1) as buyer):
            self._open(techs, server, "listening")
            self._open(buyer, server, "broadcasting")
            techs.listen()
            cpu_from = server.cpu(), techs.cpu()
            sent = buyer.sequence(requests, s.spacing, 30 + s.orders * 30)
            cpu = server.cpu() - cpu_from[0], techs.cpu() - cpu_from[1]
            ids = [str(e["order"]["id"]) for e in events]
            heard = all_heard([techs], ids, n)
        return ([heard[i].last - t_sent for i, (t_sent, _, _) in zip(ids, sent, strict=True)], heard[ids[0]].size,
                cpu)

    # -- 3. the feed --------------------------------------------------------------------------
    def feed(self) -> tuple[list[Nearby], float]:
        s, n = self.s, self.s.nearby_sessions
        _, frames = hellos(self.config, n)
        print(f"feed: {s.open_orders:,} open orders into PostgreSQL, the gateway rebuilds its pool ...", flush=True)
        runs = []
        with self._server("gateway", "feed") as server:
            positions = (geodata.around(self.rng, DALLAS, RADIUS_MI - 2, s.in_radius)
                         + geodata.nationwide(self.rng, s.open_orders - s.in_radius, outside=(DALLAS, RADIUS_MI + 2)))
            geodata.seed_orders(self.b.database_url, positions)
            rebuilt = geodata.rebuild_pool(self.b.redis_url, s.open_orders, 120 + s.open_orders / 500)
            print(f"  the pool was rebuilt in {rebuilt:.1f} s", flush=True)
            with self._clients(server, frames) as techs:
                self._open(techs, server, "technician")
                self._each(techs, server, [_position(*DALLAS)] * n, "location.update")
                _check_page(self._each(techs, server, [NEARBY] * n, "order.nearby")[0])
                rounds = 1 if self.profile else s.rounds
                for round_ in range(1, rounds + 1):
                    sides = (("gateway",) if self.profile else
                             ("gateway", "redis") if round_ % 2 else ("redis", "gateway"))
                    for side in sides:
                        print(f"feed, round {round_}/{rounds}: {side} ...", flush=True)
                        if side == "gateway":
                            tally = techs.loop(NEARBY, s.warmup, s.seconds, server.pid, self._hooks(server),
                                               {"redis": self.b.redis_pid})
                        else:
                            search = feed_search(DALLAS[1], DALLAS[0], RADIUS_MI, 20)
                            with RedisLoop(self.b.redis_url, search, n, self.client_cpus) as raw:
                                raw.open(30)
                                tally = raw.loop(s.warmup, s.seconds, self.b.redis_pid)
                        if tally.errors:
                            raise RuntimeError(f"feed, {side}: {tally.errors} errors\n{server.log_tail()}")
                        runs.append(_nearby(side, round_, n, tally))
                        print(f"  {runs[-1].summary()}", flush=True)
        return runs, rebuilt

    # -- helpers ------------------------------------------------------------------------------
    def _server(self, name: str, label: str) -> ServerProcess:
        log = self.b.root / f"{label}.log"
        if name == "bare":
            return bare_server(log, self.server_cpus)
        phase = label.split("-")[0]
        launcher = None
        if self.profile is not None:
            launcher = [sys.executable, "-m", "bench.profiled", str(self.profile / f"{phase}.prof")]
        return gateway_server(log, self.server_cpus, database_url=self.b.database_url, redis_url=self.b.redis_url,
                              data_dir=self.config.data_dir, secret=SECRET, launcher=launcher, flags=GATEWAY_FLAGS)

    def _clients(self, server: ServerProcess, frames: list[bytes], processes: int | None = None) -> Clients:
        return Clients(server.url, frames, processes=processes or min(self.s.clients, len(frames)),
                       cpus=self.client_cpus)

    def _hooks(self, server: ServerProcess) -> Hooks | None:
        return None if self.profile is None else switches(server.pid)

    @staticmethod
    def _open(group: Clients, server: ServerProcess, what: str) -> None:
        opened, failed, error = group.open(timeout=60 + group.size / 40)
        if failed:
            raise RuntimeError(f"{server.name}: {failed} of {opened + failed} {what} sessions failed to open; "
                               f"first: {error}\n{server.log_tail()}")

    @staticmethod
    def _each(group: Clients, server: ServerProcess, frames: list[bytes], what: str,
              expect: bytes = b"") -> list[bytes]:
        replies = group.each(frames, timeout=60 + len(frames) / 50)
        bad = [r for r in replies if not r.startswith(RESULT) or expect not in r]
        if bad:
            raise RuntimeError(f"{server.name}: {len(bad)} of {len(replies)} {what} failed; first reply: "
                               f"{bad[0][:300]!r}\n{server.log_tail()}")
        return replies


def _positions_written(server: ServerProcess) -> int:
    """The gateway's count of positions written to Redis (`gateway_positions_written_total`)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("gateway_positions_written_total "):
                return int(float(line.split()[1]))
    raise RuntimeError("the gateway's /metrics has no gateway_positions_written_total")


def _position(lat: float, lng: float) -> bytes:
    """A `location.update` with an id: its reply means the position is in Redis."""
    return b'{"type":"location.update","id":"here","lat":%.6f,"lng":%.6f}' % (lat, lng)


def _order(k: int) -> bytes:
    return msgspec.json.encode({"type": "order.create", "id": f"o{k}", "brand": "whirlpool", "sku": "WRF535SWHZ",
                                "service_type": "repair", "description": geodata.DESCRIPTION,
                                "address": geodata.ADDRESS, "lat": CHICAGO[0], "lng": CHICAGO[1]})


def _event(order_id: str) -> dict[str, Any]:
    """An `order.available` as the gateway sends for the bench's orders (the pool view)."""
    now = datetime.now(UTC)
    order = Order(id=order_id, state="open", brand="whirlpool", sku="WRF535SWHZ", service_type="repair",
                  description=geodata.DESCRIPTION, lat=round(CHICAGO[0], 2), lng=round(CHICAGO[1], 2),
                  price_cents=13900, currency="usd", created_at=now, updated_at=now)
    event: dict[str, Any] = msgspec.to_builtins(OrderAvailable(order=order, distance_mi=23.4))
    return event


def _check_page(reply: bytes) -> None:
    page = msgspec.json.decode(reply)
    orders = page.get("orders", [])
    if len(orders) != 20 or not page.get("next_cursor") or max(o["distance_mi"] for o in orders) > RADIUS_MI:
        raise RuntimeError(f"order.nearby: expected a full page of 20 within {RADIUS_MI:g} mi: {reply[:300]!r}")


def _nearby(side: str, round_: int, sessions: int, tally: Tally) -> Nearby:
    """For the raw side, Redis is the server."""
    gateway = side == "gateway"
    return Nearby(side=side, round=round_, sessions=sessions, replies=tally.replies, seconds=tally.seconds,
                  latencies=sorted(tally.latencies), server_cpu=tally.server_cpu if gateway else 0.0,
                  redis_cpu=tally.watched_cpu["redis"] if gateway else tally.server_cpu,
                  client_cpu=tally.client_cpu, other_cpu=tally.other_cpu)


if __name__ == "__main__":
    cli.run(main)
