"""The order feed and dispatch in an open loop: requests at fixed offered rates on a timetable,
latencies from when each was due (free of coordinated omission), in HdrHistograms.

    .venv/bin/python -m bench.openloop [--quick] [--markdown docs/benchmarks.md]

1. Feed: open orders nationwide, some within the radius of the technicians at Dallas; their
   sessions send `order.nearby` at each offered rate, round robin, request k due k / rate seconds
   after the start whether or not the earlier ones are answered (a session's requests queue behind
   each other, as the gateway handles a session's frames in order). Baseline at the same rates:
   the feed's GEOSEARCH from redis-py, each on one of as many pooled connections as there are
   sessions. Several rounds per rate, alternating which side goes first.
2. Dispatch: technicians on duty around Chicago, all within the announcement's radius, on one
   gateway process, then spread over two gateway processes (a fleet of two nodes on one Redis);
   a consumer on the first creates orders at a fixed rate (open loop). Measured: from each
   order's `order.create` being due to each technician's `order.available` (every recipient a
   sample), and to the last of them (one sample per order).

`bench.orders` keeps the closed-loop figures of the same work (docs/benchmarks.md, beside).
"""

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import contextlib
import math
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import msgspec

from bench import cli, geodata, openloop_report
from bench.geodata import CHICAGO, DALLAS
from bench.load import Clients
from bench.openloop_report import DispatchPoint, FeedPoint, Figures, print_report
from bench.orders import DUTY, NEARBY, ON_DUTY, RADIUS_MI, _check_page, _order, _position
from bench.procfs import wait_seconds
from bench.rawredis import RedisPaced, feed_search
from bench.servers import SECRET, Backends, ServerProcess, backends, cores, gateway_server, hellos
from bench.session import RESULT, histogram
from gateway.config import Config

FLAGS = ("--sweep-interval-s", "1")


@dataclass(frozen=True)
class Settings:
    feed_rates: tuple[float, ...]
    dispatch_rates: tuple[float, ...]
    rounds: int
    samples: int  # per measured point at least (feed: replies; dispatch: recipients)
    warmup: float
    nearby_sessions: int
    open_orders: int
    in_radius: int
    one_node: int
    two_nodes: int
    orders_per_round: int
    clients: int
    pin: bool

    @property
    def budget_s(self) -> int:
        feed = sum(2 * self.rounds * (self.warmup + 5 + self.samples / self.rounds / r) for r in self.feed_rates)
        dispatch = sum(2 * self.rounds * (self.orders_per_round / r + 20) for r in self.dispatch_rates)
        return int(600 + self.open_orders / 500 + feed + dispatch + (self.one_node + self.two_nodes) / 20)


def rates(text: str) -> tuple[float, ...]:
    return tuple(float(part) for part in text.split(","))


def parser() -> argparse.ArgumentParser:
    p = cli.parser("openloop", __doc__)
    p.add_argument("--feed-rates", type=rates, default=(1000.0, 2000.0, 4000.0),
                   help="offered order.nearby requests/s, comma-separated")
    p.add_argument("--dispatch-rates", type=rates, default=(1.0, 3.0), help="offered orders/s, comma-separated")
    p.add_argument("--rounds", type=int, default=5, help="rounds per measured point")
    p.add_argument("--samples", type=int, default=10_000, help="samples per measured point at least, over the rounds")
    p.add_argument("--warmup", type=float, default=1.0, help="feed: seconds at the rate before each round's window")
    p.add_argument("--nearby-sessions", type=int, default=64, help="feed: technician sessions sending order.nearby")
    p.add_argument("--open-orders", type=int, default=100_000, help="feed: open orders nationwide")
    p.add_argument("--in-radius", type=int, default=2000, help="feed: of which within the technicians' radius")
    p.add_argument("--one-node", type=int, default=15_000, help="dispatch: technicians on the one gateway process")
    p.add_argument("--two-nodes", type=int, default=5000, help="dispatch: technicians over the two processes")
    p.add_argument("--orders-per-round", type=int, default=4, help="dispatch: orders per round and rate")
    return cli.common_options(p, profile=("PATH", "not supported by this bench"), quick="about 3 minutes")


def settings_from(args: argparse.Namespace) -> Settings:
    if args.quick:
        args.feed_rates, args.dispatch_rates, args.rounds, args.samples = (500.0, 1500.0), (2.0,), 2, 2000
        args.open_orders, args.one_node, args.two_nodes, args.orders_per_round = 10_000, 1000, 600, 3
    if min(args.rounds, args.samples, args.nearby_sessions, args.open_orders, args.one_node, args.two_nodes,
           args.orders_per_round, min(args.feed_rates), min(args.dispatch_rates)) <= 0:
        raise SystemExit("rates, rounds, samples, sessions and orders must be positive")
    if args.one_node > 15_000 or args.in_radius > args.open_orders:
        raise SystemExit("--one-node at most 15,000 (open files are capped at 20,000), --in-radius <= --open-orders")
    return Settings(args.feed_rates, args.dispatch_rates, args.rounds, args.samples, args.warmup,
                    args.nearby_sessions, args.open_orders, args.in_radius, args.one_node, args.two_nodes,
                    args.orders_per_round, args.clients, args.pin)


def main(argv: Sequence[str] | None = None) -> int:
    return cli.main("openloop", argv, parser(), settings_from, measure, profile, print_report, write_markdown)


def write_markdown(f: Figures, path: Path) -> None:
    openloop_report.write_markdown(f, path, (__doc__ or "").split("\n\n", 2)[2].strip())


def profile(s: Settings, path: Path) -> None:
    raise SystemExit("bench.openloop has no --profile")


def measure(s: Settings, command: str) -> Figures:
    figures = Figures(command=command, started=time.time(), settings=vars(s) | {"radius_mi": RADIUS_MI})
    server_cpus, client_cpus = cores(s.pin)
    with backends("bench-openloop-") as b:
        config = Config(data_dir=b.root / "gateway", secret=SECRET)
        figures.feed = feed(s, b, config, server_cpus, client_cpus)
        figures.dispatch = [dispatch(s, b, config, "one", s.one_node, server_cpus, client_cpus),
                            dispatch(s, b, config, "two", s.two_nodes, None, None)]
    figures.seconds = time.time() - figures.started
    return figures


def _gateway(b: Backends, name: str, cpus: set[int] | None) -> ServerProcess:
    return gateway_server(b.root / f"{name}.log", cpus, database_url=b.database_url, redis_url=b.redis_url,
                          data_dir=b.root / name, secret=SECRET, flags=(*FLAGS, "--key-dir", str(b.root / "keys")))


def _open(group: Clients, server: ServerProcess, what: str) -> None:
    opened, failed, error = group.open(timeout=60 + group.size / 40)
    if failed:
        raise RuntimeError(f"{failed} of {opened + failed} {what} sessions failed to open; first: {error}\n"
                           f"{server.log_tail()}")


def _each(group: Clients, server: ServerProcess, frames: list[bytes], what: str, expect: bytes = b"") -> list[bytes]:
    replies = group.each(frames, timeout=60 + len(frames) / 50)
    bad = [r for r in replies if not r.startswith(RESULT) or expect not in r]
    if bad:
        raise RuntimeError(f"{len(bad)} of {len(replies)} {what} failed; first: {bad[0][:300]!r}\n{server.log_tail()}")
    return replies


# -- 1. the feed ------------------------------------------------------------------------------
def feed(s: Settings, b: Backends, config: Config, server_cpus: set[int] | None,
         client_cpus: set[int] | None) -> list[FeedPoint]:
    rng = random.Random(1)
    n = s.nearby_sessions
    _, frames = hellos(config, n)
    points: list[FeedPoint] = []
    with _gateway(b, "feed", server_cpus) as server:
        print(f"feed: {s.open_orders:,} open orders into PostgreSQL, the gateway rebuilds its pool ...", flush=True)
        geodata.seed_orders(b.database_url, geodata.around(rng, DALLAS, RADIUS_MI - 2, s.in_radius)
                            + geodata.nationwide(rng, s.open_orders - s.in_radius, outside=(DALLAS, RADIUS_MI + 2)))
        geodata.rebuild_pool(b.redis_url, s.open_orders, 120 + s.open_orders / 500)
        search = feed_search(DALLAS[1], DALLAS[0], RADIUS_MI, 20)
        with (Clients(server.url, frames, processes=min(s.clients, n), cpus=client_cpus) as techs,
              RedisPaced(b.redis_url, search, n, client_cpus) as raw):
            _open(techs, server, "technician")
            raw.open(30)
            _each(techs, server, [_position(*DALLAS)] * n, "location.update")
            _check_page(_each(techs, server, [NEARBY] * n, "order.nearby")[0])
            for rate in s.feed_rates:
                seconds = max(2.0, s.samples / s.rounds / rate)
                sides = {side: FeedPoint(side=side, rate=rate, seconds=seconds * s.rounds, sessions=n)
                         for side in ("gateway", "redis")}
                for round_ in range(1, s.rounds + 1):
                    for side in ("gateway", "redis") if round_ % 2 else ("redis", "gateway"):
                        server_pid = server.pid if side == "gateway" else b.redis_pid
                        wait_from = wait_seconds(server_pid)
                        if side == "gateway":
                            tally, h, _ = techs.paced(NEARBY, rate, s.warmup, seconds, server.pid,
                                                   {"redis": b.redis_pid})
                            cpu, redis_cpu = tally.server_cpu, tally.watched_cpu["redis"]
                        else:
                            tally, h = raw.paced(rate, s.warmup, seconds, b.redis_pid)
                            cpu, redis_cpu = 0.0, tally.server_cpu  # Redis is the server
                        answering = max(seconds, tally.finished - (tally.closed_at - seconds))
                        sides[side].add(h, tally.replies, tally.errors, cpu, answering, redis_cpu,
                                        wait_seconds(server_pid) - wait_from)
                        print(f"  feed at {rate:,.0f}/s, round {round_}/{s.rounds}, {side}: {tally.replies:,} "
                              f"replies, p99 {h.get_value_at_percentile(99) / 1000:.1f} ms, "
                              f"max {h.get_max_value() / 1000:.1f} ms", flush=True)
                points += sides.values()
    return points


# -- 2. dispatch ------------------------------------------------------------------------------
@contextlib.contextmanager
def _nodes(b: Backends, count: int, cpus: set[int] | None) -> Iterator[list[ServerProcess]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(_gateway(b, f"dispatch-{count}-{i}", cpus)) for i in range(count)]


def dispatch(s: Settings, b: Backends, config: Config, label: str, n: int, server_cpus: set[int] | None,
             client_cpus: set[int] | None) -> list[DispatchPoint]:
    count = 1 if label == "one" else 2
    rng = random.Random(2)
    positions = geodata.around(rng, CHICAGO, RADIUS_MI - 5, n)
    _, frames = hellos(config, n)
    _, buyer_hello = hellos(config, 1, "consumer")
    geodata.clear_technicians(b.redis_url)
    points = []
    print(f"dispatch: {n:,} technicians on {count} gateway process(es) ...", flush=True)
    with _nodes(b, count, server_cpus) as nodes, contextlib.ExitStack() as stack:
        groups = []
        for i, node in enumerate(nodes):  # node i holds every count-th technician
            mine = frames[i::count]
            group = stack.enter_context(Clients(node.url, mine, processes=max(s.clients, math.ceil(len(mine) / 5000)),
                                                cpus=client_cpus))
            _open(group, node, "technician")
            _each(group, node, [DUTY] * len(mine), "tech.duty", ON_DUTY)
            _each(group, node, [_position(*p) for p in positions[i::count]], "location.update", ON_DUTY)
            groups.append(group)
        buyer = stack.enter_context(Clients(nodes[0].url, buyer_hello, processes=1, cpus=client_cpus))
        _open(buyer, nodes[0], "consumer")
        serial = 0
        for rate in s.dispatch_rates:
            point = DispatchPoint(nodes=count, sessions=n, rate=rate)
            for round_ in range(1, s.rounds + 1):
                for group in groups:
                    group.listen(arrivals=True)
                frames_ = [_order(serial + k) for k in range(s.orders_per_round)]
                serial += s.orders_per_round
                cpu_from = [node.cpu() for node in nodes]
                sent = buyer.schedule(frames_, rate, 60 + s.orders_per_round / rate)
                due: dict[str, float] = {}
                for t_due, _, reply in sent:
                    if not reply.startswith(RESULT):
                        raise RuntimeError(f"order.create failed: {reply[:300]!r}\n{nodes[0].log_tail()}")
                    due[msgspec.json.decode(reply)["order"]["id"]] = t_due
                arrivals = _all_arrived(groups, list(due), n)
                point.cpu_s += sum(node.cpu() for node in nodes) - sum(cpu_from)
                recipients, last = histogram(), histogram()
                for order_id, t_due in due.items():
                    moments = arrivals[order_id]
                    for moment in moments:
                        recipients.record_value(_us(moment - t_due))
                    last.record_value(_us(max(moments) - t_due))
                point.add(recipients, last, len(due))
                print(f"  {count} node(s), {rate:g} orders/s, round {round_}/{s.rounds}: each recipient p99 "
                      f"{recipients.get_value_at_percentile(99) / 1000:.1f} ms, max "
                      f"{recipients.get_max_value() / 1000:.1f} ms", flush=True)
            points.append(point)
    return points


def _us(seconds: float) -> int:
    return max(1, min(120_000_000, int(seconds * 1e6)))


def _all_arrived(groups: list[Clients], ids: list[str], sessions: int, timeout: float = 30.0) -> dict[str, list[float]]:
    """Wait until every technician heard of every order: order id -> the moments it reached them."""
    deadline = time.monotonic() + timeout
    while True:
        merged: dict[str, list[float]] = {}
        for group in groups:
            for order_id, moments in group.arrivals().items():
                merged.setdefault(order_id, []).extend(moments)
        short = [i for i in ids if len(merged.get(i, ())) < sessions]
        if not short:
            return merged
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(short)} of {len(ids)} orders did not reach all {sessions:,} technicians "
                               f"within {timeout:.0f} s (fewest: {min(len(merged.get(i, ())) for i in short):,})")
        time.sleep(0.5)


if __name__ == "__main__":
    cli.run(main)
