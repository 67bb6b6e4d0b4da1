"""The load generator (`run.py load`): simulated technicians stream positions (and consumers order)
against a gateway; live progress, then a summary of throughput and acknowledgement latency.

The sessions run in worker processes (`clients/simulator.py`); this module starts them, merges
their reports and shows the totals."""

import argparse
import dataclasses
import ipaddress
import json
import math
import multiprocessing
import queue
import secrets
import signal
import sys
import time
from collections import deque
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

from hdrh.histogram import HdrHistogram
from rich.console import Console
from rich.live import Live
from rich.table import Table

from clients import simulator
from clients.simulator import Counters, Plan, Report
from gateway.config import Config

SESSIONS_PER_PROCESS = 5_000  # well under the 20,000 open files a process may have
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
LINE_EVERY_S = 2.0
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p99.9": 99.9}


class Totals:
    """The workers' latest counters and their latency histograms merged."""

    def __init__(self) -> None:
        self.counters: dict[int, Counters] = {}
        self.finished: set[int] = set()
        self.latency = simulator.histogram()
        self.order_latency = simulator.histogram()
        self._samples: deque[tuple[float, int, int]] = deque(maxlen=64)

    def add(self, report: Report) -> None:
        self.counters[report.worker] = Counters(**report.counters)
        for merged, encoded in ((self.latency, report.latency), (self.order_latency, report.order_latency)):
            if encoded:
                merged.decode_and_add(encoded)
        if report.final:
            self.finished.add(report.worker)

    def total(self) -> Counters:
        total = Counters()
        for counters in self.counters.values():
            for f in dataclasses.fields(Counters):
                mine, theirs = getattr(total, f.name), getattr(counters, f.name)
                if isinstance(mine, int):
                    setattr(total, f.name, mine + theirs)
                elif f.name == "examples":
                    for key, text in theirs.items():
                        mine.setdefault(key, text)
                else:
                    for key, n in theirs.items():
                        mine[key] = mine.get(key, 0) + n
        return total

    def rates(self, now: float, c: Counters) -> tuple[float, float]:
        """Updates sent and acknowledged per second over (about) the last second."""
        self._samples.append((now, c.sent, c.acked))
        then, sent, acked = next((s for s in reversed(self._samples) if now - s[0] >= 1.0), self._samples[0])
        return ((c.sent - sent) / (now - then), (c.acked - acked) / (now - then)) if now > then else (0.0, 0.0)


def percentiles(h: HdrHistogram) -> dict[str, float] | None:
    """Milliseconds; None when nothing was recorded."""
    if not h.get_total_count():
        return None
    values = {name: h.get_value_at_percentile(p) for name, p in PERCENTILES.items()}
    return {name: round(us / 1000, 3) for name, us in [*values.items(), ("max", h.get_max_value())]}


def counts(table: dict[str, int]) -> str:
    return ", ".join(f"{key} {n:,}" for key, n in sorted(table.items(), key=lambda kv: -kv[1])) or "none"


class Progress:
    """A live table on a terminal; otherwise (or --quiet) a line every few seconds."""

    def __init__(self, live: bool, target: int, duration_s: float) -> None:
        self.live = Live(console=Console(), refresh_per_second=4, transient=False) if live else None
        self.target = target
        self.duration_s = duration_s
        self.last_line = 0.0

    def __enter__(self) -> "Progress":
        if self.live:
            self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self.live.stop()

    def show(self, totals: Totals, c: Counters, elapsed: float) -> None:
        sent_rate, acked_rate = totals.rates(time.monotonic(), c)
        latency = percentiles(totals.latency) or {}
        p50, p99 = (f"{latency[p]:.2f} ms" if latency else "-" for p in ("p50", "p99"))
        if self.live is None:
            if elapsed - self.last_line >= LINE_EVERY_S:
                self.last_line = elapsed
                print(f"{elapsed:6.1f} s  sessions {c.connected}/{self.target}  sent {sent_rate:,.0f}/s  "
                      f"acked {acked_rate:,.0f}/s  total {c.sent:,}/{c.acked:,}  p50 {p50}  p99 {p99}  "
                      f"orders {c.orders_created:,}  rate-limited {c.rate_limited:,}  errors {counts(c.errors)}",
                      flush=True)
            return
        table = Table(title=f"load: {elapsed:.0f} / {self.duration_s:g} s", show_header=False, title_justify="left")
        table.add_column(style="bold")
        table.add_column(justify="right")
        table.add_row("sessions connected", f"{c.connected:,} / {self.target:,}")
        table.add_row("signed in", f"{c.signed_in:,}")
        table.add_row("updates sent / s", f"{sent_rate:,.0f}")
        table.add_row("acknowledged / s", f"{acked_rate:,.0f}")
        table.add_row("sent / acknowledged", f"{c.sent:,} / {c.acked:,}")
        table.add_row("ack latency p50 / p99", f"{p50} / {p99}")
        table.add_row("orders created", f"{c.orders_created:,}")
        table.add_row("rate-limited (waited)", f"{c.rate_limited:,} ({c.rate_limited_wait_ms / 1000:,.1f} s)",
                      style="yellow" if c.rate_limited else None)
        table.add_row("errors", counts(c.errors), style="red" if c.errors else None)
        table.add_row("connection failures", counts(c.failures), style="red" if c.failures else None)
        self.live.update(table)


def drain(reports: "Queue[Any]", totals: Totals, until: float) -> None:
    """Merge reports until `until`, then whatever is already queued."""
    while True:
        try:
            item = reports.get(timeout=max(0.0, until - time.monotonic()))
        except queue.Empty:
            return
        if isinstance(item, Report):
            totals.add(item)


def run(plans: list[Plan], args: argparse.Namespace, progress: Progress, totals: Totals) -> tuple[float, str]:
    """Start the workers, watch them until the duration is over (or Ctrl-C, or nothing can
    connect), stop them cleanly; the measured seconds and how the run ended."""
    spawn = multiprocessing.get_context("spawn")
    reports: Queue[Any] = spawn.Queue()
    go, stop = spawn.Event(), spawn.Event()
    workers: list[BaseProcess] = [spawn.Process(target=simulator.main, args=(plan, reports, go, stop), daemon=True,
                                                name=f"load-worker-{plan.worker}") for plan in plans]
    signal.signal(signal.SIGTERM, interrupted)  # `kill`: stop the workers and report, as on Ctrl-C
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # children inherit it: Ctrl-C is ours alone
    try:
        for worker in workers:
            worker.start()
    finally:
        signal.signal(signal.SIGINT, previous)
    elapsed, ending = 0.0, "a worker process failed to start"
    try:
        if ready(reports, workers):
            go.set()
            started = time.monotonic()
            try:
                ending = watch(reports, workers, totals, progress, started, args)
            finally:
                elapsed = time.monotonic() - started
    except KeyboardInterrupt:
        ending = "interrupted"
    stop.set()
    go.set()
    try:
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline and any(w.exitcode is None and i not in totals.finished
                                                  for i, w in enumerate(workers)):
            drain(reports, totals, time.monotonic() + 0.25)
        drain(reports, totals, time.monotonic() + 0.1)  # from workers that exited meanwhile
        for worker in workers:
            worker.join(timeout=5)
    except KeyboardInterrupt:
        pass  # a second Ctrl-C: no more waiting
    for worker in workers:
        if worker.is_alive():
            worker.terminate()
            worker.join()
    return elapsed, ending


def interrupted(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def ready(reports: "Queue[Any]", workers: list[BaseProcess]) -> bool:
    """Wait until every worker has started (imported, minted its tokens)."""
    waiting, deadline = len(workers), time.monotonic() + START_TIMEOUT_S
    while waiting:
        try:
            reports.get(timeout=0.25)  # ("ready", worker): nothing else comes before `go`
            waiting -= 1
        except queue.Empty:
            if time.monotonic() > deadline or any(w.exitcode is not None for w in workers):
                return False
    return True


def watch(reports: "Queue[Any]", workers: list[BaseProcess], totals: Totals, progress: Progress, started: float,
          args: argparse.Namespace) -> str:
    """Merge and show the reports until the duration is over; how the run ended."""
    target, until = args.technicians + args.consumers, started + args.duration
    with progress:
        while (now := time.monotonic()) < until:
            drain(reports, totals, min(until, now + 0.25))
            c = totals.total()
            progress.show(totals, c, time.monotonic() - started)
            if c.ever_connected == 0 and sum(c.failures.values()) >= target:
                return "no connection"
            if c.ever_signed_in == 0 and c.auth_refused >= target:
                return "no sign-in"
            if any(w.exitcode is not None for w in workers):
                return "a worker process died"
    return "completed"


def summary(totals: Totals, elapsed: float, ending: str, args: argparse.Namespace, prefix: str,
            processes: int) -> dict[str, Any]:
    c = totals.total()
    return {
        "id_prefix": prefix,
        "ending": ending,
        "duration_s": round(elapsed, 3),
        "mode": f"max, window {args.window}" if args.max else f"interval {args.interval:g} s",
        "technicians": args.technicians,
        "consumers": args.consumers,
        "processes": processes,
        "sessions": {"target": args.technicians + args.consumers, "connected": c.ever_connected,
                     "signed_in": c.ever_signed_in},
        "updates": {"sent": c.sent, "acked": c.acked,
                    "throughput_per_s": round(c.acked / elapsed, 1) if elapsed else 0.0},
        "latency_ms": percentiles(totals.latency),
        "rate_limited": {"replies": c.rate_limited, "retried": c.rate_limited_retries,
                         "waited_s": round(c.rate_limited_wait_ms / 1000, 3)},
        "errors": c.errors,
        "connection_failures": c.failures,
        "messages": c.examples,
        "orders": {"sent": c.orders_sent, "created": c.orders_created,
                   "latency_ms": percentiles(totals.order_latency)},
        "events_received": c.events,
    }


def describe(s: dict[str, Any]) -> str:
    def ms(latency: dict[str, float] | None) -> str:
        return "  ".join(f"{name} {value:.2f}" for name, value in latency.items()) if latency else "-"

    sessions, updates, orders, limited = s["sessions"], s["updates"], s["orders"], s["rate_limited"]
    lines = [
        f"load {s['id_prefix']}: {s['duration_s']:.1f} s, {s['technicians']:,} technicians + {s['consumers']:,} "
        f"consumers in {s['processes']} process(es), {s['mode']}"
        + ("" if s["ending"] == "completed" else f" ({s['ending']})"),
        f"  sessions      {sessions['signed_in']:,} / {sessions['target']:,} signed in",
        f"  updates       {updates['sent']:,} sent, {updates['acked']:,} acknowledged: "
        f"{updates['throughput_per_s']:,.0f}/s",
        f"  latency ms    {ms(s['latency_ms'])}",
        f"  orders        {orders['created']:,} created of {orders['sent']:,}, latency ms {ms(orders['latency_ms'])}",
        f"  rate-limited  {limited['replies']:,} replies, waited their retry_after ({limited['waited_s']:,.1f} s in "
        f"all), {limited['retried']:,} requests sent again" if limited["replies"] else "  rate-limited  none",
        f"  errors        {counts(s['errors'])}",
        f"  connections   {counts(s['connection_failures'])} failed or dropped",
    ]
    lines += [f"    {key}: {text}" for key, text in s["messages"].items()]
    return "\n".join(lines)


def options(args: argparse.Namespace) -> tuple[float, float]:
    """Check the flags; the city as (lat, lng). ValueError says what is wrong."""
    try:
        lat, lng = (float(part) for part in args.city.split(","))
    except ValueError:
        raise ValueError(f"--city must be LAT,LNG in degrees, got {args.city!r}") from None
    if not (-90 <= lat <= 90 and -180 <= lng <= 180):
        raise ValueError(f"--city {args.city} is not on Earth")
    for name in ("duration", "interval", "order_interval", "spread_km"):
        if getattr(args, name) <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive")
    if args.technicians < 0 or args.consumers < 0 or args.technicians + args.consumers == 0:
        raise ValueError("--technicians and --consumers must not be negative, nor both zero")
    if args.window < 1 or args.ramp < 0 or (args.processes is not None and args.processes < 1):
        raise ValueError("--window and --processes must be at least 1, --ramp not negative")
    return lat, lng


def loopback_ipv4(url: str) -> bool:
    try:
        address = ipaddress.ip_address(urlsplit(url).hostname or "")
    except ValueError:
        return False
    return address.version == 4 and address.is_loopback


def main(config: Config, args: argparse.Namespace) -> int:
    from gateway.app import load_secret  # only here: it pulls in the storage layer

    try:
        city = options(args)
        config = dataclasses.replace(config, secret=load_secret(config, create=False))
    except (ValueError, OSError) as exc:  # a ConfigError is a ValueError
        reason = f"cannot read the secret in {config.data_dir}: {exc.strerror}" if isinstance(exc, OSError) else exc
        print(f"load: {reason}", file=sys.stderr)
        return 2
    urls = tuple(u.strip() for u in (args.url or f"ws://{config.host}:{config.port}/ws").split(",") if u.strip())
    url = urls[0]
    prefix = args.id_prefix or f"load-{secrets.token_hex(3)}"
    total = args.technicians + args.consumers
    processes = min(total, args.processes or math.ceil(total / SESSIONS_PER_PROCESS))
    plans = [Plan(worker=w, urls=urls, config=config, prefix=prefix, technicians=range(w, args.technicians, processes),
                  consumers=range(w, args.consumers, processes), total_technicians=args.technicians,
                  total_consumers=args.consumers, city=city, spread_km=args.spread_km, interval_s=args.interval,
                  max_rate=args.max, window=args.window, order_interval_s=args.order_interval, ramp_s=args.ramp,
                  token_ttl_s=args.duration + args.ramp + 600,
                  source_addresses=all(map(loopback_ipv4, urls)) and total > simulator.SESSIONS_PER_SOURCE)
             for w in range(processes)]
    totals = Totals()
    progress = Progress(sys.stdout.isatty() and not args.quiet, total, args.duration)
    elapsed, ending = run(plans, args, progress, totals)
    result = summary(totals, elapsed, ending, args, prefix, processes)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    c = totals.total()
    if ending == "a worker process failed to start":
        print(f"load: {ending}", file=sys.stderr)
        return 1
    if c.ever_connected == 0:
        reason = next(iter(c.examples.values()), "no connection before the stop")
        print(f"load: cannot connect to {url}: {reason}", file=sys.stderr)
        return 2
    if c.ever_signed_in == 0:
        code = max(c.errors, key=lambda key: c.errors[key], default="")
        text = c.examples.get(code, "no sign-in before the stop")
        hint = ": is the secret the gateway's (--secret, GATEWAY_SECRET, --data-dir)?" if code == "unauthorized" else ""
        print(f"load: no session could sign in: {code} ({text}){hint}", file=sys.stderr)
        return 2
    print(describe(result))
    if ending == "a worker process died":
        print(f"load: {ending}", file=sys.stderr)
        return 1
    return 130 if ending == "interrupted" else 0
