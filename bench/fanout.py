"""Delivery across nodes: orders announced to thousands of on-duty technicians spread evenly over
1, 2 and 4 gateway nodes, routed per node (`DELIVERY_ROUTING=nodes`: each node gets its users'
share on its own channel) against multicast routing (one message with every recipient, which every
node receives and decodes), measured in the same run the same way.

    .venv/bin/python -m bench.fanout [--quick] [--markdown docs/benchmarks.md] [--plot docs/img/fanout.png]

For each routing and node count: the nodes as processes (`run.py serve`) on one embedded
PostgreSQL and Redis, the technicians signed in, on duty and placed around one city (a share per
node, each node's sessions in client processes of their own), a consumer on the first node
creating orders one after another (`order.create`, the production path: PostgreSQL, the pool, the
GEO search, delivery). Per node and announcement: the bytes it received from Redis for delivery
and the recipient ids it decoded (its `gateway_delivery_*` counters), and its CPU seconds
(/proc/<pid>/stat) net of what it used at rest (heartbeats, keep-alive pings) over as long; the
latency from `order.create` leaving to the last technician's `order.available`.
"""

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:  # `python bench/fanout.py`: import from the project root
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import contextlib
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from bench import cli, geodata
from bench.fanout_report import Figures, Run, plot, print_report, write_markdown
from bench.geodata import CHICAGO
from bench.load import Clients, all_heard
from bench.procfs import cpu_seconds
from bench.servers import SECRET, Backends, ServerProcess, backends, delivery_received, gateway_server, hellos
from bench.session import RESULT
from gateway.config import Config

RADIUS_MI = 50.0  # the gateway's default announcement radius
DUTY = b'{"type":"tech.duty","id":"duty","on_duty":true}'
ON_DUTY = b'"on_duty":true'
ROUTINGS = ("nodes", "multicast")


@dataclass(frozen=True)
class Settings:
    sessions: int
    nodes: tuple[int, ...]
    orders: int
    spacing: float
    idle_s: float
    clients: int
    plot: Path | None

    @property
    def budget_s(self) -> int:
        per_run = 120 + self.sessions / 25 + self.orders * (self.spacing + 0.5) + self.idle_s
        return int(120 + len(ROUTINGS) * len(self.nodes) * per_run)


def parser() -> argparse.ArgumentParser:
    p = cli.parser("fanout", __doc__)
    p.add_argument("--sessions", type=int, default=5000, help="on-duty technicians, spread evenly over the nodes")
    p.add_argument("--nodes", default="1,2,4", help="node counts, comma-separated")
    p.add_argument("--orders", type=int, default=60, help="orders announced per routing and node count")
    p.add_argument("--spacing", type=float, default=0.3, help="seconds between orders at least")
    p.add_argument("--idle-s", type=float, default=5.0, help="seconds of rest measured before the orders")
    p.add_argument("--plot", type=Path, metavar="PNG", help="also draw bytes and CPU per node vs nodes into PNG")
    p = cli.common_options(p, profile=("DIR", "not supported by this bench"), pinned="(nothing: no pinning here)",
                           quick="about two minutes")
    p.set_defaults(clients=4)
    return p


def settings_from(args: argparse.Namespace) -> Settings:
    if args.quick:
        args.sessions, args.orders, args.idle_s = 400, 10, 1.0
    try:
        nodes = tuple(int(n) for n in args.nodes.split(","))
    except ValueError:
        raise SystemExit("--nodes is a list of node counts, e.g. 1,2,4") from None
    if args.sessions <= 0 or args.orders <= 0 or args.spacing < 0 or args.idle_s <= 0 or min(nodes) < 1:
        raise SystemExit("--sessions, --orders, --idle-s and every node count must be positive")
    if args.sessions > 15_000:
        raise SystemExit("--sessions at most 15,000 (open files are capped at 20,000 per process)")
    return Settings(args.sessions, nodes, args.orders, args.spacing, args.idle_s, args.clients, args.plot)


def main(argv: Sequence[str] | None = None) -> int:
    return cli.main("fanout", argv, parser(), settings_from, measure, profile, report_and_plot, write_markdown)


def report_and_plot(f: Figures) -> None:
    print_report(f)
    if f.settings.get("plot"):
        plot(f, Path(f.settings["plot"]))
        print(f"wrote {f.settings['plot']}")


def profile(s: Settings, folder: Path) -> None:
    raise SystemExit("bench.fanout has no --profile: profile one node with bench.orders --profile")


def measure(s: Settings, command: str) -> Figures:
    figures = Figures(command=command, started=time.time(),
                      settings=vars(s) | {"rounds": 1, "radius_mi": RADIUS_MI,
                                          "plot": str(s.plot) if s.plot else None})
    with backends("bench-fanout-") as b:
        for count in s.nodes:
            for routing in ROUTINGS if count % 2 else tuple(reversed(ROUTINGS)):  # neither always first
                figures.runs.append(one_run(s, b, routing, count))
                print(f"  {figures.runs[-1].summary()}", flush=True)
    figures.seconds = time.time() - figures.started
    return figures


def one_run(s: Settings, b: Backends, routing: str, count: int) -> Run:
    print(f"{routing} routing, {count} node{'s' * (count > 1)}: {s.sessions:,} technicians ...", flush=True)
    geodata.clear_technicians(b.redis_url)  # only this run's technicians are in the index
    config = Config(data_dir=b.root / "gateway", secret=SECRET)
    _, frames = hellos(config, s.sessions)
    _, buyer_hello = hellos(config, 1, "consumer")
    positions = geodata.around(random.Random(count), CHICAGO, RADIUS_MI - 5, s.sessions)
    flags = ("--delivery-routing", routing, "--key-dir", str(b.root / "keys"))  # the fleet's one key
    with contextlib.ExitStack() as stack:
        nodes = [stack.enter_context(gateway_server(
            b.root / f"{routing}-{count}-{k}.log", None, database_url=b.database_url, redis_url=b.redis_url,
            data_dir=b.root / f"node-{k}", secret=SECRET, flags=flags)) for k in range(count)]
        groups = []
        for k, node in enumerate(nodes):  # technician i on node i % count
            group = stack.enter_context(Clients(node.url, frames[k::count], processes=max(1, s.clients // count)))
            _open(group, node, "technician")
            _each(group, node, [DUTY] * group.size, "tech.duty", ON_DUTY)
            _each(group, node, [_position(*p) for p in positions[k::count]], "location.update", ON_DUTY)
            groups.append(group)
        buyer = stack.enter_context(Clients(nodes[0].url, buyer_hello, processes=1))
        _open(buyer, nodes[0], "consumer")
        for group in groups:
            group.listen()
        pids = [n.pid for n in nodes]

        rest_from = [cpu_seconds(pid) for pid in pids], time.monotonic()
        time.sleep(s.idle_s)
        rest = [(cpu_seconds(pid) - before) / (time.monotonic() - rest_from[1])
                for pid, before in zip(pids, rest_from[0], strict=True)]  # CPU seconds per second at rest

        counted = [delivery_received(n.port) for n in nodes]
        cpu_from, redis_from, started = [cpu_seconds(pid) for pid in pids], cpu_seconds(b.redis_pid), time.monotonic()
        sent = buyer.sequence([_order(k) for k in range(s.orders)], s.spacing, 30 + s.orders * 30)
        ids = []
        for _, _, reply in sent:
            if not reply.startswith(RESULT):
                raise RuntimeError(f"order.create failed: {reply[:300]!r}\n{nodes[0].log_tail()}")
            ids.append(msgspec.json.decode(reply)["order"]["id"])
        heard = all_heard(groups, ids, s.sessions, timeout=30.0)
        elapsed = time.monotonic() - started
        cpu = [cpu_seconds(pid) - before - rate * elapsed
               for pid, before, rate in zip(pids, cpu_from, rest, strict=True)]
        redis_cpu = cpu_seconds(b.redis_pid) - redis_from
        after = [delivery_received(n.port) for n in nodes]
    return Run(routing=routing, nodes=count, sessions=s.sessions, orders=len(ids),
               bytes_received=[a[0] - c[0] for a, c in zip(after, counted, strict=True)],
               recipients_decoded=[a[1] - c[1] for a, c in zip(after, counted, strict=True)],
               cpu=cpu, rest_cpu=rest, redis_cpu=redis_cpu, seconds=elapsed,
               latencies=[heard[i].last - t_sent for i, (t_sent, _, _) in zip(ids, sent, strict=True)])


def _open(group: Clients, server: ServerProcess, what: str) -> None:
    opened, failed, error = group.open(timeout=60 + group.size / 40)
    if failed:
        raise RuntimeError(f"{failed} of {opened + failed} {what} sessions failed to open; first: {error}\n"
                           f"{server.log_tail()}")


def _each(group: Clients, server: ServerProcess, frames: list[bytes], what: str, expect: bytes) -> None:
    replies = group.each(frames, timeout=60 + len(frames) / 50)
    bad = [r for r in replies if not r.startswith(RESULT) or expect not in r]
    if bad:
        raise RuntimeError(f"{len(bad)} of {len(replies)} {what} failed; first reply: {bad[0][:300]!r}\n"
                           f"{server.log_tail()}")


def _position(lat: float, lng: float) -> bytes:
    return b'{"type":"location.update","id":"here","lat":%.6f,"lng":%.6f}' % (lat, lng)


def _order(k: int) -> bytes:
    return msgspec.json.encode({"type": "order.create", "id": f"o{k}", "brand": "whirlpool", "sku": "WRF535SWHZ",
                                "service_type": "repair", "description": geodata.DESCRIPTION,
                                "address": geodata.ADDRESS, "lat": CHICAGO[0], "lng": CHICAGO[1]})


if __name__ == "__main__":
    cli.run(main)
