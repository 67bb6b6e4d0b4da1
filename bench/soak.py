"""Mixed-load soak: two gateway nodes under every kind of traffic at once for half an hour.

    .venv/bin/python -m bench.soak [--minutes 30] [--quick] [--markdown docs/benchmarks.md]

Two gateway processes (`run.py serve`, separate data folders, one key folder) on embedded
PostgreSQL and Redis; client processes (bench/soak_clients.py, the project's client library)
hold technicians and consumers spread over both nodes and eight cities. At once: technicians
stream acknowledged positions and query the order feed on timetables, consumers create orders,
the named technician accepts each when it is announced, chats with the consumer (on either node),
departs, starts and completes it; orders nobody took are cancelled; every minute 1% of the
sessions close and sign in again on the other node. Each minute: every node's RSS (/proc), its
garbage-collection pauses (`gateway_gc_pause_seconds` from its /metrics) and every operation's
p50/p99/p99.9/max (HdrHistograms, timetabled operations counted from when they were due).
Goals: RSS growth under 10% from the end of minute 5 to the end; every operation's p99 steady
(no minute over 2x the median minute). The baseline is the run itself: its median minute, its
fifth minute's memory.
"""

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import multiprocessing
import os
import random
import time
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench import cli, soak_clients, soak_report
from bench.procfs import busy_seconds, rss_bytes, wait_seconds
from bench.servers import SECRET, ServerProcess, backends, gateway_server
from bench.soak_clients import Member, Plan
from bench.soak_report import Figures, Minute, NodeMinute, print_report
from gateway.config import Config

CITIES = ((41.8781, -87.6298), (32.7767, -96.7970), (39.7392, -104.9903), (33.7490, -84.3880),
          (47.6062, -122.3321), (29.7604, -95.3698), (44.9778, -93.2650), (35.2271, -80.8431))
SPREAD = 0.25  # degrees around a city's centre: everyone within the 50-mile radius of everyone else there
SAMPLE_S = 5.0
GC_METRIC = "gateway_gc_pause_seconds"


@dataclass(frozen=True)
class Settings:
    minutes: int
    technicians: int
    consumers: int
    update_s: float
    feed_s: float
    order_s: float
    churn: float
    ramp_s: float
    clients: int

    @property
    def budget_s(self) -> int:
        return int(300 + self.ramp_s + self.minutes * 60 * 1.1)


def parser() -> argparse.ArgumentParser:
    p = cli.parser("soak", __doc__)
    p.add_argument("--minutes", type=int, default=30, help="measured minutes after the ramp")
    p.add_argument("--technicians", type=int, default=2000, help="technician sessions, over both nodes")
    p.add_argument("--consumers", type=int, default=300, help="consumer sessions, over both nodes")
    p.add_argument("--update-s", type=float, default=5.0, help="seconds between a technician's position updates")
    p.add_argument("--feed-s", type=float, default=30.0, help="seconds between a technician's feed queries")
    p.add_argument("--order-s", type=float, default=60.0, help="seconds between a consumer's orders")
    p.add_argument("--churn", type=float, default=0.01, help="share of the sessions reconnecting each minute")
    p.add_argument("--ramp", type=float, default=60.0, help="seconds over which the sessions connect")
    return cli.common_options(p, profile=("PATH", "not supported by this bench"), quick="about 4 minutes")


def settings_from(args: argparse.Namespace) -> Settings:
    if args.quick:
        args.minutes, args.technicians, args.consumers, args.ramp = 3, 400, 60, 20.0
    if args.minutes < 1 or args.technicians < len(CITIES) or args.consumers < 1 or args.clients < 1:
        raise SystemExit(f"--minutes and --consumers must be positive, --technicians at least {len(CITIES)}")
    if min(args.update_s, args.feed_s, args.order_s, args.ramp) <= 0 or not 0 <= args.churn < 1:
        raise SystemExit("the periods and --ramp must be positive, --churn in [0, 1)")
    return Settings(args.minutes, args.technicians, args.consumers, args.update_s, args.feed_s, args.order_s,
                    args.churn, args.ramp, args.clients)


def main(argv: Sequence[str] | None = None) -> int:
    return cli.main("soak", argv, parser(), settings_from, measure, profile, print_report, write_markdown)


def write_markdown(f: Figures, path: Path) -> None:
    soak_report.write_markdown(f, path, (__doc__ or "").split("\n\n", 2)[2].strip())


def profile(s: Settings, path: Path) -> None:
    raise SystemExit("bench.soak has no --profile")


def measure(s: Settings, command: str) -> Figures:
    figures = Figures(command=command, started=time.time(),
                      settings=vars(s) | {"rounds": 1, "cores": len(os.sched_getaffinity(0))})
    with backends("bench-soak-") as b:
        nodes = [gateway_server(b.root / f"node-{name}.log", None, database_url=b.database_url,
                                redis_url=b.redis_url, data_dir=b.root / f"node-{name}", secret=SECRET,
                                flags=("--key-dir", str(b.root / "keys"))) for name in ("a", "b")]
        with nodes[0]:  # the first creates the key-encryption key, the second finds it
            with nodes[1]:
                config = Config(data_dir=b.root / "node-a", secret=SECRET)
                out = b.root / "minutes.jsonl"
                t0 = time.monotonic() + s.ramp_s + 10
                plans = _plans(s, [n.url for n in nodes], config, t0, out)
                print(f"soak: {s.technicians:,} technicians and {s.consumers:,} consumers over 2 nodes, "
                      f"{s.minutes} minutes after a {s.ramp_s:g} s ramp ...", flush=True)
                spawn = multiprocessing.get_context("spawn")
                workers = [spawn.Process(target=soak_clients.main, args=(plan,), name=f"soak-client-{plan.worker}")
                           for plan in plans]
                for worker in workers:
                    worker.start()
                try:
                    figures.nodes = _watch(s, nodes, t0, workers)
                finally:
                    for worker in workers:
                        worker.join(timeout=30)
                        if worker.is_alive():
                            worker.terminate()
                            worker.join()
                lines = soak_clients.read_lines(out) if out.exists() else []
                figures.logs = [n.log_tail(5) for n in nodes]
    figures.minutes = _minutes(lines)
    figures.seconds = time.time() - figures.started
    return figures


def _plans(s: Settings, urls: list[str], config: Config, t0: float, out: Path) -> list[Plan]:
    rng = random.Random(13)

    def members(count: int) -> list[tuple[Member, int]]:
        out: list[tuple[Member, int]] = []
        for i in range(count):
            city = i % len(CITIES)
            lat, lng = CITIES[city]
            home = (lat + rng.uniform(-SPREAD, SPREAD), lng + rng.uniform(-SPREAD, SPREAD))
            out.append((Member(str(uuid.uuid4()), home, node=rng.randrange(len(urls))), city))
        return out

    techs, consumers = members(s.technicians), members(s.consumers)
    city_techs = [[m.user for m, c in techs if c == city] for city in range(len(CITIES))]
    city_of = {m.user: c for m, c in consumers}
    return [Plan(worker=w, urls=tuple(urls), config=config, technicians=[m for m, _ in techs[w::s.clients]],
                 consumers=[m for m, _ in consumers[w::s.clients]], city_techs=city_techs,
                 city_of={m.user: city_of[m.user] for m, _ in consumers[w::s.clients]}, t0=t0, minutes=s.minutes,
                 ramp_s=s.ramp_s, update_s=s.update_s, feed_s=s.feed_s, order_s=s.order_s, churn=s.churn, out=out,
                 seed=w) for w in range(s.clients)]


def _watch(s: Settings, nodes: list[ServerProcess], t0: float,
           workers: Sequence[multiprocessing.process.BaseProcess]) -> list[list[NodeMinute]]:
    """Sample the nodes until the last minute is over: per node, per minute, its RSS at the
    minute's end, its largest RSS sampled within it, its CPU and its collections."""
    out: list[list[NodeMinute]] = [[] for _ in nodes]
    time.sleep(max(0.0, t0 - time.monotonic()))
    before = [(n.cpu(), _gc(n), wait_seconds(n.pid)) for n in nodes]
    busy = busy_seconds()
    peaks = [0] * len(nodes)
    for minute in range(s.minutes):
        end = t0 + 60 * (minute + 1)
        while (now := time.monotonic()) < end:
            time.sleep(min(SAMPLE_S, end - now))
            for i, n in enumerate(nodes):
                if n.process is None or n.process.poll() is not None:
                    raise RuntimeError(f"node {i} exited:\n{n.log_tail()}")
                peaks[i] = max(peaks[i], rss_bytes(n.pid))
            if not any(w.is_alive() for w in workers):
                raise RuntimeError("every soak client process has exited")
        for i, n in enumerate(nodes):
            cpu, gc, rss, wait = n.cpu(), _gc(n), rss_bytes(n.pid), wait_seconds(n.pid)
            pauses = {key: gc[key] - before[i][1].get(key, 0.0) for key in gc}
            out[i].append(NodeMinute(rss=rss, peak=max(peaks[i], rss), cpu_s=cpu - before[i][0], gc=pauses,
                                     wait_s=wait - before[i][2], machine_s=busy_seconds() - busy))
            before[i], peaks[i] = (cpu, gc, wait), 0
        busy = busy_seconds()
        memory = ", ".join(f"{m[-1].rss / 2**20:.0f} MiB" for m in out)
        print(f"  minute {minute + 1}/{s.minutes}: RSS {memory}; CPU "
              f"{', '.join(f'{m[-1].cpu_s / 60:.0%}' for m in out)}; waiting for a CPU "
              f"{', '.join(f'{m[-1].wait_s / 60:.0%}' for m in out)}; machine busy "
              f"{out[0][-1].machine_s / 60 / len(os.sched_getaffinity(0)):.0%}", flush=True)
    return out


def _gc(node: ServerProcess) -> dict[str, float]:
    """The node's `gateway_gc_pause_seconds` series (buckets by generation and bound, sums, counts)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{node.port}/metrics", timeout=10) as response:
        text = response.read().decode()
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(GC_METRIC):
            name, value = line.rsplit(" ", 1)
            found[name[len(GC_METRIC):]] = float(value)
    if not found:
        raise RuntimeError(f"the gateway's /metrics has no {GC_METRIC}")
    return found


def _minutes(lines: list[dict[str, Any]]) -> list[Minute]:
    """The client processes' lines merged by minute (-1: the ramp)."""
    merged = soak_clients.merge(lines)
    errors: dict[int, dict[str, int]] = {}
    sessions: dict[int, int] = {}
    cpu: dict[int, list[float]] = {}
    wait: dict[int, list[float]] = {}
    for line in lines:
        m = line["minute"]
        cpu.setdefault(m, []).append(line["cpu_s"])
        wait.setdefault(m, []).append(line["wait_s"])
        for key, n in line["errors"].items():
            errors.setdefault(m, {})[key] = errors.get(m, {}).get(key, 0) + n
        sessions[m] = sessions.get(m, 0) + line["sessions"]
    return [Minute(number=m, ops=merged.get(m, {}), errors=errors.get(m, {}), sessions=sessions.get(m, 0),
                   client_cpu_s=max(cpu.get(m, [0.0])), client_wait_s=max(wait.get(m, [0.0])))
            for m in sorted(sessions)]


if __name__ == "__main__":
    cli.run(main)
