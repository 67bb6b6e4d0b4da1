"""Reconnect storm: a node holding thousands of technician sessions is stopped (SIGTERM, a deploy),
and its apps sign in and go back on duty on the two other nodes of the fleet.

    .venv/bin/python -m bench.storm [--sessions 15000] [--apps sansio|library] [--quick] [--markdown docs/benchmarks.md]

Three gateway nodes (`run.py serve` processes, each its own data folder) share embedded
PostgreSQL and Redis. Client processes (`bench/storm_clients.py`) sign every technician in on
node A, on duty, each at a position in one of 40 metro areas. Their apps do on the wire what the
project's client library (`protocol.client.Reconnecting`) does: reconnect when the server's close
frame arrives, after its default backoff (0.1 s base, 5 s cap, full jitter), to the fleet's nodes
round robin, and try a sign-in refused `unavailable` or `rate_limited` again. By default
(`--apps sansio`) they are built on websockets' Sans-I/O protocol (bench/storm_sansio.py), which
spends less than half the library's CPU per moved session: on a real deployment each app is on
its own phone, and here the apps' CPU competes with the surviving nodes'. `--apps library` runs
the client library itself.

A consumer on node C then creates an order every half second near one area after another (each
reaches that area's technicians): first while all is quiet (the baseline), then from the moment
node A gets SIGTERM until every session is back or the time limit passes. A session is back when,
on its new connection, `auth` is answered and its `location.update` reply says it is on duty.
Reported: the seconds from the SIGTERM until 50%, 90%, 99% and 100% of the sessions are back,
where they landed, node A's time to exit, every process's CPU, and dispatch (an order's
`order.create` sent -> each technician's `order.available` received; and the `order.create`
reply's own time) quiet and during the storm.
"""

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import asyncio
import contextlib
import math
import multiprocessing
import os
import queue
import re
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from typing import Any

from bench import cli, report
from bench.procfs import busy_seconds, cpu_seconds, family_cpu_seconds
from bench.report import MARK, markdown_table, percentile, print_tables, rich_table
from bench.servers import MAX_SESSIONS, SECRET, Backends, ServerProcess, backends, gateway_server, postmaster_pid
from bench.storm_clients import APPS, Plan, Progress, clusters
from bench.storm_clients import main as client_main
from gateway.app import token_issuer
from gateway.config import Config
from protocol.auth import Auth
from protocol.client import Client
from protocol.orders import OrderCreate

APP_NAMES = {"sansio": "Sans-I/O apps", "library": "client-library apps"}
GOAL_S = 15.0  # 99% of the sessions back within this after the SIGTERM
CLUSTERS = 40


@dataclass(frozen=True)
class Settings:
    sessions: int
    clients: int
    quiet_s: float  # orders before the SIGTERM: the dispatch baseline
    order_interval_s: float
    limit_s: float  # how long the storm may take before the bench stops waiting
    logs: Path | None = None
    apps: str = "sansio"  # the client processes' technician apps: bench.storm_clients.APPS
    spread_s: float | None = None  # node A's SHUTDOWN_SPREAD_S; None: the gateway's default

    @property
    def budget_s(self) -> int:
        return int(300 + self.sessions / 50 + self.quiet_s + self.limit_s)


@dataclass
class Figures(report.Figures):
    signed_in_s: float = 0.0  # the first sign-in of every session on node A (connecting a few at a time)
    back_s: list[float] = field(default_factory=list)  # per session back: seconds after the SIGTERM
    sessions: int = 0
    failed: int = 0
    off_duty: int = 0
    refused: dict[str, int] = field(default_factory=dict)  # sign-ins answered with an error, by code
    attempts: int = 0  # connections the apps tried, their first on node A included
    nodes: dict[str, int] = field(default_factory=dict)
    exit_s: float = math.nan  # node A's exit after the SIGTERM
    quiet: list[float] = field(default_factory=list)  # dispatch latencies, seconds
    storm: list[float] = field(default_factory=list)
    created: dict[str, list[float]] = field(default_factory=dict)  # order.create sent -> its reply, by phase
    orders: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)  # CPU during the storm by process, 1.0 = a core
    busy: float = math.nan  # the machine's CPUs busy during the storm, 1.0 = all of them


def parser() -> argparse.ArgumentParser:
    p = cli.parser("storm", __doc__)
    p.add_argument("--sessions", type=int, default=15_000, help="technician sessions on the node stopped")
    p.add_argument("--quiet-s", type=float, default=15.0, help="seconds of orders before the SIGTERM")
    p.add_argument("--limit-s", type=float, default=90.0, help="longest wait for the sessions to come back")
    p.add_argument("--logs", type=Path, metavar="DIR", help="keep the nodes' logs in DIR (node A's at INFO)")
    p.add_argument("--shutdown-spread-s", type=float, metavar="S",
                   help="node A's SHUTDOWN_SPREAD_S (its close frames in waves over S seconds; default: the gateway's)")
    p.add_argument("--apps", choices=APPS, default="sansio",
                   help="the technician apps: sansio (websockets' Sans-I/O protocol, cheap on CPU; the default) or "
                        "library (the project's client library, protocol.client.Reconnecting); the same on the wire")
    p = cli.common_options(p, quick="about a minute", profile=("PATH", "not supported by this bench"),
                           pinned="nothing (three nodes and the clients share the machine)")
    p.set_defaults(clients=4)
    return p


def settings_from(args: argparse.Namespace) -> Settings:
    if args.quick:
        args.sessions, args.quiet_s, args.limit_s = 1000, 5.0, 60.0
    if not 1 <= args.sessions <= MAX_SESSIONS:
        raise SystemExit(f"--sessions must be 1..{MAX_SESSIONS} (node A holds them all: 20,000 open files)")
    return Settings(args.sessions, max(1, args.clients), args.quiet_s, 0.5, args.limit_s, args.logs, args.apps,
                    args.shutdown_spread_s)


def measure(s: Settings, command: str) -> Figures:
    f = Figures(command=command, started=time.time(), settings=vars(s) | {"rounds": 1})
    with backends("bench-storm-") as b, contextlib.ExitStack() as stack:
        keys = b.root / "keys"
        nodes = []
        for name in ("a", "b", "c"):  # a first: it creates the key-encryption key the others read
            node = gateway_server(b.root / f"{name}.log", None, database_url=b.database_url, redis_url=b.redis_url,
                                  data_dir=b.root / name, secret=SECRET,
                                  flags=("--key-dir", str(keys), "--shutdown-grace-s", "10",
                                         *(("--log-level", "INFO") if name == "a" and s.logs else ()),
                                         *(("--shutdown-spread-s", str(s.spread_s))
                                           if name == "a" and s.spread_s is not None else ())))
            nodes.append(stack.enter_context(node))
        print(f"three nodes up; {s.sessions:,} sessions signing in on node A ...", flush=True)
        try:
            asyncio.run(storm(s, f, b, nodes))
        finally:
            if s.logs is not None:
                s.logs.mkdir(parents=True, exist_ok=True)
                for name in ("a", "b", "c"):
                    shutil.copy(b.root / f"{name}.log", s.logs / f"{name}.log")
    f.seconds = time.time() - f.started
    return f


async def storm(s: Settings, f: Figures, b: Backends, nodes: list[ServerProcess]) -> None:
    a, _, c = nodes
    config = Config(data_dir=b.root / "x", database_url=b.database_url, redis_url=b.redis_url, secret=SECRET)
    prefix = f"storm-{uuid.uuid4().hex[:6]}"
    urls = (a.url, nodes[1].url, c.url)
    spawn = multiprocessing.get_context("spawn")
    reports: Queue[Any] = spawn.Queue()
    stop = spawn.Event()
    plans = [Plan(w, urls, config, prefix, range(w, s.sessions, s.clients), CLUSTERS, 50, s.apps)
             for w in range(s.clients)]
    workers = [spawn.Process(target=client_main, args=(p, reports, stop), daemon=True) for p in plans]
    for w in workers:
        w.start()
    latest: dict[int, Progress] = {}
    finals: dict[int, Progress] = {}

    async def collect(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            try:
                item = reports.get_nowait()
            except queue.Empty:
                if time.monotonic() >= deadline:
                    return
                await asyncio.sleep(0.05)
                continue
            (finals if item.final else latest)[item.worker] = item

    def total(what: str) -> int:
        return sum(getattr(p, what) for p in latest.values())

    try:
        began = time.monotonic()
        shown = began
        while total("started") + total("failed") < s.sessions:
            await collect(0.5)
            if time.monotonic() - shown >= 5:
                shown = time.monotonic()
                print(f"  {shown - began:5.0f} s: {total('started'):,} signed in on A", flush=True)
            if time.monotonic() - began > 60 + s.sessions / 20:
                raise RuntimeError(f"only {total('started'):,} of {s.sessions:,} sessions signed in on node A")
        f.signed_in_s = time.monotonic() - began
        print(f"  {total('started'):,} signed in and on duty on A in {f.signed_in_s:.1f} s", flush=True)
        sent: dict[str, tuple[float, str]] = {}  # order id -> (sent at, phase)
        consumer = await Client.connect(c.url)
        issuer = token_issuer(config, create_secret=False)
        await consumer.request(Auth(token=issuer.mint(f"{prefix}-consumer", "consumer")[0]))
        phase = ["quiet"]
        ordering = asyncio.create_task(orders(consumer, s.order_interval_s, sent, phase, f.created))
        await collect(s.quiet_s)
        postmaster = postmaster_pid(b)
        probes: dict[str, Callable[[], float]] = {
            "node B": lambda: cpu_seconds(nodes[1].pid), "node C": lambda: cpu_seconds(c.pid),
            "clients": lambda: sum(cpu_seconds(w.pid) for w in workers if w.pid is not None),
            "PostgreSQL": lambda: family_cpu_seconds(postmaster), "Redis": lambda: cpu_seconds(b.redis_pid)}
        used = {name: probe() for name, probe in probes.items()}
        a_from = a_last = cpu_seconds(a.pid)  # node A's: read every half second until it is gone
        machine = busy_seconds()
        print("  SIGTERM to node A", flush=True)
        phase[0] = "storm"
        sigterm, exited = time.monotonic(), threading.Event()
        assert a.process is not None
        process = a.process
        os.killpg(process.pid, signal.SIGTERM)

        def wait_exit() -> None:
            process.wait()
            exited.set()

        threading.Thread(target=wait_exit, daemon=True).start()
        while total("back") + total("failed") < total("started") and time.monotonic() - sigterm < s.limit_s:
            await collect(0.5)
            with contextlib.suppress(OSError):
                a_last = cpu_seconds(a.pid)
            if exited.is_set() and math.isnan(f.exit_s):
                f.exit_s = time.monotonic() - sigterm
            print(f"  {time.monotonic() - sigterm:5.1f} s: {total('back'):,} back, {total('failed'):,} gave up, "
                  f"{total('off_duty'):,} told off duty"
                  + ("" if math.isnan(f.exit_s) else f" (A exited after {f.exit_s:.1f} s)"), flush=True)
        storm_s = time.monotonic() - sigterm
        busy = busy_seconds() - machine
        used = {"node A": a_last - a_from} | {name: probe() - used[name] for name, probe in probes.items()}
        used["other"] = max(0.0, busy - sum(used.values()))  # with node A's last half second
        f.cpu = {name: seconds / storm_s for name, seconds in used.items()}
        f.busy = busy / storm_s / len(os.sched_getaffinity(0))
        ordering.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ordering
        await consumer.close()
        if math.isnan(f.exit_s):
            await asyncio.to_thread(exited.wait, 30)
            f.exit_s = time.monotonic() - sigterm
        stop.set()
        while len(finals) < len(workers):
            await collect(1.0)
            if all(w.exitcode is not None for w in workers) and len(finals) < len(workers):
                await collect(1.0)
                break
    finally:
        stop.set()
        for w in workers:
            w.join(15)
            if w.is_alive():
                w.kill()
    sent_phase = dict(sent)
    f.sessions, f.failed = s.sessions, sum(p.failed for p in finals.values())
    f.off_duty = sum(p.off_duty for p in finals.values())
    f.attempts = sum(p.attempts for p in finals.values())
    for p in finals.values():
        for code, n in p.refused.items():
            f.refused[code] = f.refused.get(code, 0) + n
    names = {a.url: "A", nodes[1].url: "B", c.url: "C"}
    for p in finals.values():
        for url, n in p.nodes.items():
            f.nodes[names[url]] = f.nodes.get(names[url], 0) + n
        for times in p.ready_at:
            if len(times) >= 2:
                f.back_s.append(times[1] - sigterm)
        for order_id, at in p.deliveries:
            if order_id in sent_phase:
                when, which = sent_phase[order_id]
                (f.quiet if which == "quiet" else f.storm).append(at - when)
    f.back_s.sort()
    f.orders = {which: sum(1 for _, w in sent_phase.values() if w == which) for which in ("quiet", "storm")}


async def orders(consumer: Client, interval_s: float, sent: dict[str, tuple[float, str]], phase: list[str],
                 created: dict[str, list[float]]) -> None:
    """An order every `interval_s` near one area after another; each one's send time and phase, and
    how long its `order.create` took to be answered (by phase)."""
    centres = clusters(CLUSTERS)
    for i in range(10**9):
        lat, lng = centres[i % len(centres)]
        started, which = time.monotonic(), phase[0]
        with contextlib.suppress(Exception):  # a reply lost in the storm: that order is not counted
            order = await consumer.request(OrderCreate(
                brand="whirlpool", sku="WRF535SWHZ", service_type="repair", description="Fridge is warm",
                address=f"{i} Main St", lat=lat + 0.01, lng=lng + 0.01), timeout=30)
            sent[order.order.id] = (started, which)
            created.setdefault(which, []).append(time.monotonic() - started)
        await asyncio.sleep(max(0.0, started + interval_s - time.monotonic()))


def share_at(f: Figures, q: float) -> float:
    """Seconds after the SIGTERM until q of all sessions were back (nan: never)."""
    need = math.ceil(q * f.sessions)
    return f.back_s[need - 1] if 0 < need <= len(f.back_s) else math.nan


def passed(f: Figures) -> bool:
    return share_at(f, 0.99) <= GOAL_S


def back_rows(f: Figures) -> list[list[str]]:
    where = ", ".join(f"{node} {n:,}" for node, n in sorted(f.nodes.items()))
    return [[f"{f.sessions:,}", *(report.ms(share_at(f, q)) for q in (0.5, 0.9, 0.99, 1.0)),
             f"{len(f.back_s):,}", where, report.ms(f.exit_s), MARK[passed(f)]]]


BACK_HEADER = ["Sessions on A", "50% back", "90%", "99%", "100%", "Back in all", "Where now", "A exited after",
               f"99% within {GOAL_S:g} s"]
DISPATCH_HEADER = ["Dispatch", "Orders", "Deliveries", "p50", "p99", "max", "p99 vs quiet",
                   "order.create answered: p50, p99"]


def dispatch_rows(f: Figures) -> list[list[str]]:
    quiet99 = percentile(f.quiet, 0.99)
    out = []
    for name, phase, values in (("quiet (baseline)", "quiet", f.quiet), ("during the storm", "storm", f.storm)):
        p99 = percentile(values, 0.99)
        created = f.created.get(phase, [])
        out.append([name, f"{f.orders.get(phase, 0):,}",
                    f"{len(values):,}", report.ms(percentile(values, 0.5)), report.ms(p99),
                    report.ms(max(values, default=math.nan)), f"{report.ratio(p99, quiet99):.2f}x",
                    f"{report.ms(percentile(created, 0.5))}, {report.ms(percentile(created, 0.99))}"])
    return out


def conditions(f: Figures) -> str:
    cpu = ", ".join(f"{name} {share:.0%}" for name, share in f.cpu.items())
    return (f"{f.sessions:,} technician sessions signed in on node A ({f.signed_in_s:.0f} s to sign them all in, "
            f"50 connecting at a time per client process, {f.settings['clients']} client processes of "
            f"{APP_NAMES[f.settings.get('apps', 'library')]}); CPU from the "
            f"SIGTERM until the sessions were back (100% = one core): {cpu} (node A's until its last reading, half a "
            f"second or less before it exited; other: the rest of the machine); the machine's CPUs were "
            f"{f.busy:.0%} busy")


def notes(f: Figures) -> list[str]:
    out = ["One machine: the three nodes, PostgreSQL, Redis and the client processes share its 2 cores (nothing "
           "pinned), so the apps' own work (per session a closing handshake, a new connection and its handshake, "
           "two or three requests) competes with the nodes'; on separate machines (an app per phone) the "
           "survivors would have their cores to themselves. The Sans-I/O apps (`--apps sansio`, the default) "
           "spend less of it than the client library's (`--apps library`) for the same frames. Not covered: a "
           "real network's latency and a load balancer in front of the nodes."]
    out.append(f"The apps tried {f.attempts:,} connections in all ({f.attempts / max(1, f.sessions):.2f} per session; "
               "2 when each signs in on node A, then on a survivor at the first try).")
    if f.refused:
        codes = ", ".join(f"{code} {n:,}" for code, n in sorted(f.refused.items(), key=lambda kv: -kv[1]))
        out.append(f"Sign-ins answered with an error (the client library tries unavailable and rate_limited "
                   f"again): {codes}.")
    if f.failed or f.off_duty:
        out.append(f"{f.failed:,} sessions gave up (an error reply to auth or duty); {f.off_duty:,} connections were "
                   "told off duty.")
    if len(f.back_s) + f.failed < f.sessions:
        out.append(f"{f.sessions - len(f.back_s) - f.failed:,} sessions were not back within the "
                   f"{f.settings['limit_s']:g} s limit.")
    return out


def print_report(f: Figures) -> None:
    print_tables(f, [rich_table("Reconnect storm: node A stopped (SIGTERM)", BACK_HEADER, back_rows(f),
                                conditions(f)),
                     rich_table("Dispatch: order.create -> each technician's order.available", DISPATCH_HEADER,
                                dispatch_rows(f))], notes(f))


def last_run(path: Path) -> tuple[list[str], str, str, str] | None:
    """The section's figures as the file has them now (the run this one replaces): its summary
    row, its dispatch p99 during the storm, when it ran and its apps (runs before `--apps` had the
    library's); None when there are none."""
    old = next((m.group(2) for m in report.SECTION.finditer(path.read_text() if path.exists() else "")
                if m.group(1) == "storm"), "")
    when = re.search(r"on (\d{4}-\d\d-\d\d \d\d:\d\d UTC)", old)
    lines = old.splitlines()
    head = "| " + " | ".join(BACK_HEADER) + " |"
    if when is None or head not in lines:
        return None
    row = [cell.strip() for cell in lines[lines.index(head) + 2].strip("|").split("|")]
    storm = next((line for line in lines if line.startswith("| during the storm |")), "")
    p99 = storm.split("|")[5].strip() if storm.count("|") > 6 else "-"
    apps = next((name for name in APP_NAMES.values() if f"of {name})" in old), APP_NAMES["library"])
    return row, p99, when.group(1), apps


def beside_last(f: Figures, path: Path) -> str:
    """This run's figures beside those of the run it replaces in `path` (the issue keeps both)."""
    found = last_run(path)
    if found is None:
        return ""
    row, p99, when, apps = found
    header = ["Run", *BACK_HEADER, "Dispatch p99 during the storm"]
    now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(f.started))
    rows = [[f"before ({when}, {apps})", *row[:len(BACK_HEADER)], p99],
            [f"this run ({now}, {APP_NAMES[f.settings['apps']]})", *back_rows(f)[0],
             report.ms(percentile(f.storm, 0.99))]]
    return f"\n\n### Beside the run before\n\n{markdown_table(header, rows)}"


def write_markdown(f: Figures, path: Path) -> None:
    report.write_markdown(path, "storm", f, profile="it has no profiler.", about=__doc__.split("\n\n", 2)[2].strip()
                          + f"\n\nGoal: 99% of the sessions back within {GOAL_S:g} s of the SIGTERM.",
                          tables=f"### Summary\n\n{conditions(f)}.\n\n{markdown_table(BACK_HEADER, back_rows(f))}"
                                 f"\n\n{markdown_table(DISPATCH_HEADER, dispatch_rows(f))}{beside_last(f, path)}",
                          notes=notes(f))


def profile(s: Settings, path: Path) -> None:
    raise SystemExit("bench.storm has no --profile")


def main(argv: Sequence[str] | None = None) -> int:
    return cli.main("storm", argv, parser(), settings_from, measure, profile, print_report, write_markdown)


if __name__ == "__main__":
    cli.run(main)
