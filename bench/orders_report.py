"""The figures of a `bench.orders` run, and how they are shown: rich tables on the terminal, its
section of docs/benchmarks.md."""

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from bench import report
from bench.report import MARK, markdown_table, ms, percentile, print_tables, ratio, rich_table

INGEST_GOAL = 0.5  # gateway location updates/s at least this fraction of the bare server's
DISPATCH_GOAL_S = 0.250  # p99 from order.create to the last technician's order.available under this
NEARBY_P99_GOAL_S = 0.010  # order.nearby p99 under this
NEARBY_GOAL = 0.5  # order.nearby/s at least this fraction of the raw GEOSEARCH's
NOISY = 0.15  # other processes using more than this much of a core disturbed the measurement


@dataclass
class Ingest:
    """One server taking the position stream once."""

    server: str
    round: int
    sessions: int
    confirmed: int  # updates confirmed within the window
    sent: int  # updates sent over the whole stream (warm-up, window and drain)
    seconds: float
    drain_s: float  # after the window: until the last marker's reply
    server_cpu: float
    client_cpu: float
    redis_cpu: float
    other_cpu: float
    written: int = 0  # positions the gateway wrote to Redis over the whole stream (its counter); 0 for bare

    @property
    def rate(self) -> float:
        return self.confirmed / self.seconds

    @property
    def writes_per_update(self) -> float:
        """What coalescing leaves: Redis position writes per update sent, over the whole stream."""
        return self.written / self.sent if self.sent else 0.0

    @property
    def redis_writes(self) -> float:
        """Redis position writes per second at the window's confirmed rate."""
        return self.rate * self.writes_per_update

    @property
    def per_cpu_second(self) -> float:
        return self.confirmed / self.server_cpu if self.server_cpu else 0.0

    def summary(self) -> str:
        return (f"{self.rate:,.0f} updates/s, server CPU {self.server_cpu / self.seconds:.0%}, Redis "
                f"{self.redis_cpu / self.seconds:.0%}, clients {self.client_cpu / self.seconds:.0%}, others "
                f"{self.other_cpu / self.seconds:.0%}; drained in {ms(self.drain_s)}")


@dataclass
class Dispatch:
    sessions: int
    indexed: int
    orders: int
    latencies: list[float] = field(default_factory=list)  # order.create sent -> the last session's event
    first: list[float] = field(default_factory=list)  # order.create sent -> the first session's event
    replies: list[float] = field(default_factory=list)  # order.create sent -> its reply
    event_bytes: int = 0
    server_cpu: float = 0.0  # the gateway's CPU seconds over all orders
    redis_cpu: float = 0.0
    client_cpu: float = 0.0  # the listening sessions' processes
    broadcast: list[float] = field(default_factory=list)  # bare: broadcast sent -> the last session's frame
    broadcast_bytes: int = 0
    broadcast_cpu: tuple[float, float] = (0.0, 0.0)  # the bare server's and the listening clients' CPU seconds
    search: list[float] = field(default_factory=list)  # the announcement's GEOSEARCH from redis-py
    search_found: int = 0

    def summary(self) -> str:
        return (f"order.create -> last of {self.sessions:,}: p50 {ms(percentile(self.latencies, 0.5))}, p99 "
                f"{ms(percentile(self.latencies, 0.99))}; gateway CPU {ms(self.server_cpu / self.orders)} per order")


@dataclass
class Nearby:
    """One closed loop of the feed: the gateway's `order.nearby`, or its GEOSEARCH sent to Redis."""

    side: str  # "gateway" or "redis"
    round: int
    sessions: int
    replies: int
    seconds: float
    latencies: list[float]
    server_cpu: float  # the gateway's (0 for the raw side)
    redis_cpu: float
    client_cpu: float
    other_cpu: float

    @property
    def rate(self) -> float:
        return self.replies / self.seconds

    @property
    def p50(self) -> float:
        return percentile(self.latencies, 0.5)

    @property
    def p99(self) -> float:
        return percentile(self.latencies, 0.99)

    def summary(self) -> str:
        return (f"{self.rate:,.0f}/s, p50 {ms(self.p50)}, p99 {ms(self.p99)}; gateway CPU "
                f"{self.server_cpu / self.seconds:.0%}, Redis {self.redis_cpu / self.seconds:.0%}, clients "
                f"{self.client_cpu / self.seconds:.0%}, others {self.other_cpu / self.seconds:.0%}")


@dataclass
class Figures(report.Figures):
    ingest: list[Ingest] = field(default_factory=list)
    dispatch: Dispatch | None = None
    nearby: list[Nearby] = field(default_factory=list)
    pool_rebuild_s: float = 0.0

    def ingest_median(self, server: str, attribute: str) -> float:
        return float(statistics.median(getattr(r, attribute) for r in self.ingest if r.server == server))

    def nearby_median(self, side: str, attribute: str) -> float:
        return float(statistics.median(getattr(r, attribute) for r in self.nearby if r.side == side))


SUMMARY_HEADER = ["Measure", "Baseline", "Gateway", "Gateway ÷ baseline", "Goal", "Result"]


def summary_rows(f: Figures) -> list[list[str]]:
    s = f.settings
    rows = []
    bare, gw = f.ingest_median("bare", "rate"), f.ingest_median("gateway", "rate")
    rows.append([f"Ingest: location updates/s, {s['ingest_sessions']:,} sessions (baseline: bare server decoding)",
                 f"{bare:,.0f}", f"{gw:,.0f}", f"{ratio(gw, bare):.3f}x", f">= {INGEST_GOAL}x",
                 MARK[ratio(gw, bare) >= INGEST_GOAL]])
    bare, gw = f.ingest_median("bare", "per_cpu_second"), f.ingest_median("gateway", "per_cpu_second")
    rows.append(["Ingest: updates per server CPU-second", f"{bare:,.0f}", f"{gw:,.0f}", f"{ratio(gw, bare):.3f}x",
                 "", ""])
    if f.ingest_median("gateway", "written"):
        rows.append(["Ingest: Redis position writes/s beside those updates/s (each technician's newest position per "
                     "flush is written; the others are coalesced away)", "",
                     f"{f.ingest_median('gateway', 'redis_writes'):,.0f} "
                     f"({f.ingest_median('gateway', 'writes_per_update'):.1%} of updates)", "", "", ""])
    d = f.dispatch
    if d is not None:
        who = f"last of {d.sessions:,} sessions (baseline: bare `broadcast()`)"
        for q in (0.5, 0.99):
            base, mine = percentile(d.broadcast, q), percentile(d.latencies, q)
            goal, result = (f"< {ms(DISPATCH_GOAL_S)}", MARK[mine < DISPATCH_GOAL_S]) if q == 0.99 else ("", "")
            rows.append([f"Dispatch p{q * 100:g}: order.create -> {who}", ms(base), ms(mine),
                         f"{ratio(mine, base):.1f}x", goal, result])
        rows.append([f"Dispatch: the announcement's GEOSEARCH alone (redis-py, {d.search_found:,} found), median",
                     ms(statistics.median(d.search)), "", "", "", ""])
    if f.nearby:
        n = f.nearby[0].sessions
        for name, attribute in (("p50", "p50"), ("p99", "p99")):
            base, mine = f.nearby_median("redis", attribute), f.nearby_median("gateway", attribute)
            goal, result = ((f"< {ms(NEARBY_P99_GOAL_S)}", MARK[mine < NEARBY_P99_GOAL_S]) if name == "p99"
                            else ("", ""))
            rows.append([f"order.nearby {name}, {n} in flight (baseline: its GEOSEARCH from redis-py)", ms(base),
                         ms(mine), f"{ratio(mine, base):.2f}x", goal, result])
        base, mine = f.nearby_median("redis", "rate"), f.nearby_median("gateway", "rate")
        rows.append(["order.nearby/s", f"{base:,.0f}", f"{mine:,.0f}", f"{ratio(mine, base):.3f}x",
                     f">= {NEARBY_GOAL}x", MARK[ratio(mine, base) >= NEARBY_GOAL]])
    return rows


INGEST_HEADER = ["Round", "Server", "Updates/s", "Redis writes/s", "Sent", "Drain", "Server CPU", "Redis CPU",
                 "Client CPU", "Other CPU", "Updates/server CPU-s"]


def ingest_rows(f: Figures) -> list[list[str]]:
    return [[str(r.round), r.server, f"{r.rate:,.0f}", f"{r.redis_writes:,.0f}" if r.written else "",
             f"{r.sent:,}", ms(r.drain_s), f"{r.server_cpu / r.seconds:.0%}",
             f"{r.redis_cpu / r.seconds:.0%}" if r.server == "gateway" else "", f"{r.client_cpu / r.seconds:.0%}",
             f"{r.other_cpu / r.seconds:.0%}", f"{r.per_cpu_second:,.0f}"] for r in f.ingest]


DISPATCH_HEADER = ["Per order", "p50", "p90", "p99", "max"]


def dispatch_rows(d: Dispatch) -> list[list[str]]:
    rows = []
    for name, values in ((f"gateway: order.create -> the last of {d.sessions:,} `order.available`", d.latencies),
                         ("gateway: order.create -> the first `order.available`", d.first),
                         ("gateway: order.create -> its reply", d.replies),
                         (f"bare: broadcast request -> the last of {d.sessions:,} frames", d.broadcast),
                         ("GEOSEARCH of the circle, unbounded, WITHDIST (redis-py)", d.search)):
        if values:
            rows.append([name, *(ms(percentile(values, q)) for q in (0.5, 0.9, 0.99, 1.0))])
    return rows


NEARBY_HEADER = ["Round", "Side", "Requests/s", "p50", "p90", "p99", "Gateway CPU", "Redis CPU", "Client CPU",
                 "Other CPU"]


def nearby_rows(f: Figures) -> list[list[str]]:
    return [[str(r.round), "order.nearby via the gateway" if r.side == "gateway" else "GEOSEARCH straight to Redis",
             f"{r.rate:,.0f}", ms(r.p50), ms(percentile(r.latencies, 0.9)), ms(r.p99),
             f"{r.server_cpu / r.seconds:.0%}" if r.side == "gateway" else "", f"{r.redis_cpu / r.seconds:.0%}",
             f"{r.client_cpu / r.seconds:.0%}", f"{r.other_cpu / r.seconds:.0%}"] for r in f.nearby]


def notes(f: Figures) -> list[str]:
    out = []
    windows: list[Ingest | Nearby] = [*f.ingest, *f.nearby]
    noisy = [r for r in windows if r.other_cpu / r.seconds > NOISY]
    if noisy:
        out.append(f"Other processes used more than {NOISY:.0%} of a core during {len(noisy)} of "
                   f"{len(f.ingest) + len(f.nearby)} measured windows (Other CPU): this machine is shared, and "
                   "those runs' rates are lower than they would be on a quiet one.")
    cores = f.settings["client_cores"]
    if f.ingest and f.ingest_median("bare", "client_cpu") >= 0.9 * cores * f.ingest[0].seconds:
        out.append("The client processes used all of their CPU against the bare server: it may decode more than "
                   "measured, so the ingest ratio may flatter the gateway; compare updates per server CPU-second.")
    d = f.dispatch
    if d is not None and d.broadcast and d.broadcast_cpu[1] / d.orders >= 0.7 * percentile(d.broadcast, 0.5):
        out.append(f"The listening clients used {ms(d.broadcast_cpu[1] / d.orders)} of CPU per broadcast (the bare "
                   f"server {ms(d.broadcast_cpu[0] / d.orders)}): the broadcast baseline is bound by how fast "
                   f"{f.settings['client_cores']} core(s) of clients read {d.sessions:,} sockets as much as by the "
                   "server, and so is the gateway's fan-out at best.")
    if d is not None and d.latencies:
        median = percentile(d.latencies, 0.5)
        slow = sum(1 for t in d.latencies if t > 2 * median)
        if slow:
            out.append(f"{slow} of {len(d.latencies)} orders took more than twice the median ({ms(2 * median)}); the "
                       "p99 is one of them. `--profile DIR` shows where the gateway's time goes, and the garbage "
                       "collector's pauses, which cProfile does not see, in DIR/dispatch.prof.gc.")
    if not f.settings["pinned"]:
        out.append("Servers and clients were not pinned to separate cores (--no-pin).")
    return out


def print_report(f: Figures) -> None:
    tables = [rich_table("Ingest, every run", INGEST_HEADER, ingest_rows(f))]
    if f.dispatch is not None:
        tables.append(rich_table(f"Dispatch, over {f.dispatch.orders} orders", DISPATCH_HEADER,
                                 dispatch_rows(f.dispatch)))
    tables += [rich_table("Feed, every run", NEARBY_HEADER, nearby_rows(f)),
               rich_table("Orders: the gateway against same-run baselines", SUMMARY_HEADER, summary_rows(f))]
    print_tables(f, tables, notes(f))


def write_markdown(f: Figures, path: Path) -> None:
    s = f.settings
    d = f.dispatch
    assert d is not None
    rounds = f.rounds
    pinning = ("each server is pinned to one core and the clients to the others" if s["pinned"]
               else "nothing is pinned to a core")
    report.write_markdown(path, "orders", f, profile="""`--profile DIR` runs each gateway phase
alone under cProfile and prints where its time goes.""", about=f"""\
The gateway is `run.py serve` with one worker, embedded PostgreSQL and Redis, the per-session rate
limit out of the way, `--sweep-interval-s 1` and otherwise its defaults (a pool of 10 PostgreSQL
connections, a {s['radius_mi']:g}-mile radius). Servers run one at a time as their own processes; {pinning};
PostgreSQL and Redis float. The clients are the load generator of `bench.gateway` ({s['clients']} processes on
uvloop speaking websockets' Sans-I/O protocol); every technician is a session of its own user.

- **Location ingest**: {s['ingest_sessions']:,} technician sessions, each first `tech.duty` on and one
  `location.update` with an id, then streaming `location.update` frames, each a new position, as
  fast as the server takes them. One update in {s['every']} carries an id (a *marker*) and a session
  never has more than {s['window']} markers unanswered ({s['every'] * s['window']} updates in flight): the gateway
  answers a marker once that position is in Redis (its `PositionWriter` has written it, and the
  session's frames are handled in order), so each marker's reply confirms the updates up to it.
  **Updates/s counts confirmed updates** over {s['seconds']:g} s after {s['warmup']:g} s of warm-up; afterwards the
  bench checks with GEOPOS that Redis holds every session's last position. The **baseline** is the
  bare server of `bench.gateway` decoding the very same stream (answering only the markers).
  Goal: at least {INGEST_GOAL}x the baseline's rate. Median of {rounds}, alternating which goes first.
- **Dispatch**: {d.indexed:,} technicians in the GEO index across the continental US ({d.indexed - d.sessions:,} put
  straight into Redis, seen now; they are not connected), {d.sessions:,} of them connected, on duty, at
  random within {s['radius_mi'] - 5:g} miles of Chicago. A consumer session creates {d.orders} orders at Chicago
  one after another, each at least {s['spacing'] * 1000:.0f} ms after the previous one and once it is answered.
  Measured per order: from `order.create` leaving the consumer to the **last** of the {d.sessions:,}
  technicians receiving its `order.available` ({d.event_bytes} bytes), on `time.monotonic()`, which all
  client processes share. Goal: p99 under {ms(DISPATCH_GOAL_S)}. References from the same run: the
  announcement's search alone (an unbounded GEOSEARCH WITHDIST of the circle from redis-py with
  hiredis, {len(d.search)} times), and the bare server pushing one event of {d.broadcast_bytes} bytes to as many
  sessions with websockets' `broadcast()` (asked by a frame from another session, {d.orders} times).
- **Feed**: {s['open_orders']:,} open orders nationwide, {s['in_radius']:,} of them within the radius of Dallas, put
  into PostgreSQL with COPY; the bench drops `pool:built` and the gateway's upkeep rebuilds the pool
  in Redis ({f.pool_rebuild_s:.1f} s). {f.nearby[0].sessions} technician sessions at Dallas call `order.nearby` (20 a
  page) in a closed loop, one request in flight each, for {s['seconds']:g} s after {s['warmup']:g} s of warm-up. The
  **baseline** sends the feed's search (`GEOSEARCH geo:orders FROMLONLAT … BYRADIUS {s['radius_mi']:g} mi ASC
  COUNT 21 WITHDIST`) straight to Redis from redis-py's asyncio client with hiredis, with as many
  in flight from one process. Goals: p99 under {ms(NEARBY_P99_GOAL_S)}; at least {NEARBY_GOAL}x the baseline's
  requests/s. Median of {rounds}, alternating which goes first.

With one request in flight per session, latency is about sessions ÷ throughput once the server is
saturated (Little's law): the feed's latency goal holds for as many sessions as this measures,
not for any number.""", tables=f"""### Summary

{markdown_table(SUMMARY_HEADER, summary_rows(f))}

### Ingest, every run

{markdown_table(INGEST_HEADER, ingest_rows(f))}

### Dispatch, over {d.orders} orders

CPU per order: the gateway {ms(d.server_cpu / d.orders)}, Redis {ms(d.redis_cpu / d.orders)}, the listening
clients {ms(d.client_cpu / d.orders)}; the bare server {ms(d.broadcast_cpu[0] / d.orders)} per broadcast, its
listening clients {ms(d.broadcast_cpu[1] / d.orders)}.

{markdown_table(DISPATCH_HEADER, dispatch_rows(d))}

### Feed, every run

{markdown_table(NEARBY_HEADER, nearby_rows(f))}""", notes=notes(f))
