"""Realistic ingest: many technician sessions in one gateway process, each sending one acknowledged
`location.update` every few seconds, as the apps do (faster than their once a minute), for minutes.

    .venv/bin/python -m bench.ingest [--quick] [--load-generator] [--markdown docs/benchmarks.md]

Every session signs in (`auth`), goes on duty (`tech.duty`), then sends one acknowledged
`location.update` every `--interval` seconds: an id, a position 30 m further east each time,
accuracy, heading, speed and the device's time, the fields the load generator's apps send. The
sessions connect evenly over `--ramp` seconds; then the updates run on a timetable, an open loop
(update k of the run is due at k / rate, round robin over the sessions, sent when due whether or
not earlier ones are answered), measured for `--seconds` after one interval of warm-up, latencies
from when each update was due, in HdrHistograms. The clients are `bench.load`'s (websockets'
Sans-I/O protocol on uvloop, `--clients` processes), cheap enough that they are not the limit: the
report gives their CPU and how late their loops sent the updates. The same sessions, frames and
timetable go first to the bare baseline of `bench.bare` (which answers every frame with an id,
auth and duty included, with a small result), then to the gateway. Each server is pinned to one
core, the clients to the other(s); PostgreSQL and Redis are not pinned.

`--load-generator` drives the two servers with the project's load generator instead (`run.py
load`: a session per technician on the websockets asyncio client, updates spread over the
interval, latencies from when each update left, ramp included), to exercise it and show how much
it can drive.
"""

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import json
import math
import os
import random
import re
import resource
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from hdrh.histogram import HdrHistogram

from bench import cli, geodata, report
from bench.load import Clients, Hooks
from bench.procfs import wait_seconds
from bench.profiled import print_stats, switches
from bench.report import MARK, markdown_table, print_tables, rich_table
from bench.servers import (
    MAX_SESSIONS,
    ROOT,
    SECRET,
    ServerProcess,
    backends,
    bare_server,
    cores,
    gateway_server,
    hellos,
)
from bench.session import Walk
from gateway.config import Config

P99_GOAL_MS = 50.0  # an acknowledged update's p99 under this at the realistic rate
DUTY = b'{"type":"tech.duty","id":"duty","on_duty":true}'
STEP_M = 30.0  # how far a technician drives between updates
CLIENT_LAG_OK_MS = 10.0  # client loops this late (p99) or less, and under CLIENT_CPU_OK of their cores: not the limit
CLIENT_CPU_OK = 0.7
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p99.9": 99.9}
LOADS = {False: "bench clients", True: "run.py load"}


@dataclass(frozen=True)
class Settings:
    sessions: int
    interval: float
    seconds: float
    ramp: float
    pin: bool
    clients: int
    load_generator: bool

    @property
    def budget_s(self) -> int:
        return int(600 + 2 * (self.seconds + self.ramp + 2 * self.interval + self.sessions / 100))


@dataclass
class Run:
    server: str
    load: str  # LOADS: the bench's clients or the load generator
    target: int  # sessions
    signed_in: int
    sent: int  # updates (the load generator: all; the bench's clients: those due in the measured window)
    acked: int
    errors: int  # error replies, updates never answered, sessions lost
    acked_per_s: float
    latency: dict[str, float]  # milliseconds, PERCENTILES and max
    server_cpu: float  # share of one core over the measured time
    client_cpu: float  # all client processes, share of one core
    client_cores: int
    rss: int
    lag: dict[str, float] = field(default_factory=dict)  # ms: how late the clients sent (p99, max); bench clients only
    sign_in_s: float = 0.0  # to connect, sign in and go on duty every session (the ramp included)
    server_wait: float = math.nan  # share of the time the server was runnable but waiting for a CPU
    client_wait: float = math.nan  # the same, of all client processes together (share of one core's time)

    @property
    def complete(self) -> bool:
        in_flight = self.target if self.load == LOADS[True] else 0  # the load generator stops with updates in flight
        return (self.signed_in == self.target and self.acked > 0 and self.acked >= self.sent - in_flight
                and not self.errors)

    @property
    def ok(self) -> bool:
        return self.complete and self.latency.get("p99", math.inf) < P99_GOAL_MS


@dataclass
class Figures(report.Figures):
    runs: list[Run] = field(default_factory=list)


def parser() -> argparse.ArgumentParser:
    p = cli.parser("ingest", __doc__)
    p.add_argument("--sessions", type=int, default=18_000, help="technician sessions in the one server process")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between a session's updates")
    p.add_argument("--seconds", type=float, default=300.0, help="how long the load is measured after its ramp")
    p.add_argument("--ramp", type=float, default=60.0, help="seconds over which the sessions connect")
    p.add_argument("--load-generator", action="store_true",
                   help="drive the servers with the project's load generator (run.py load) instead")
    return cli.common_options(p, quick="about a minute",
                              profile=("PATH", "the gateway alone under the bench's clients, its measured window "
                                       "under cProfile (stats to PATH)"))


def settings_from(args: argparse.Namespace) -> Settings:
    if args.quick:
        args.sessions, args.seconds, args.ramp = 1000, 20.0, 5.0
    if not 1 <= args.sessions <= MAX_SESSIONS:
        raise SystemExit(f"--sessions must be 1..{MAX_SESSIONS} (open files are capped at 20,000)")
    if args.interval <= 0 or args.seconds <= 0 or args.ramp < 0 or args.clients < 1:
        raise SystemExit("--interval and --seconds must be positive, --ramp not negative, --clients at least 1")
    return Settings(args.sessions, args.interval, args.seconds, args.ramp,
                    args.pin and len(os.sched_getaffinity(0)) >= 2, min(args.clients, args.sessions),
                    args.load_generator)


def measure(s: Settings, command: str) -> Figures:
    server_cpus, client_cpus = cores(s.pin)
    figures = Figures(command=command, started=time.time(), settings=vars(s) | {"rounds": 1})
    with backends("bench-ingest-") as b:
        data_dir = b.root / "gateway"
        _, frames = hellos(Config(data_dir=data_dir, secret=SECRET), s.sessions)
        walks = _walks(s)
        for name in ("bare", "gateway"):
            log = b.root / f"{name}.log"
            server = (bare_server(log, server_cpus) if name == "bare" else
                      gateway_server(log, server_cpus, database_url=b.database_url, redis_url=b.redis_url,
                                     data_dir=data_dir, secret=SECRET))
            print(f"{name}: {s.sessions:,} sessions ({LOADS[s.load_generator]}), an update every {s.interval:g} s "
                  f"for {s.seconds:g} s after a {s.ramp:g} s ramp ...", flush=True)
            with server:
                run = (_load_generator(server, s, b.root / f"{name}.json", client_cpus) if s.load_generator else
                       _paced(server, s, frames, walks, client_cpus))
            figures.runs.append(run)
            print(f"  {run.acked:,} of {run.sent:,} acked, {run.errors:,} errors, {run.latency}, server CPU "
                  f"{run.server_cpu:.0%}, clients {run.client_cpu:.0%}, client lag {run.lag}", flush=True)
    figures.seconds = time.time() - figures.started
    return figures


def _walks(s: Settings) -> list[Walk]:
    """Where each technician starts (spread over 20 miles around Denver) and how far east they drive per update."""
    out = []
    for lat, lng in geodata.around(random.Random(13), geodata.DENVER, 20, s.sessions):
        step = STEP_M / (111_195.0 * math.cos(math.radians(lat)))
        out.append(Walk(lat, lng, step, STEP_M / s.interval))
    return out


def _milliseconds(h: HdrHistogram, percentiles: dict[str, float] = PERCENTILES) -> dict[str, float]:
    if not h.get_total_count():
        return {}
    return {name: h.get_value_at_percentile(p) / 1000 for name, p in percentiles.items()} | {
        "max": h.get_max_value() / 1000}


def _paced(server: ServerProcess, s: Settings, frames: list[bytes], walks: list[Walk],
           client_cpus: set[int] | None, hooks: Hooks | None = None) -> Run:
    started = time.monotonic()
    with Clients(server.url, frames, processes=s.clients, cpus=client_cpus, then=[DUTY], ramp=s.ramp) as group:
        opened, failed, first = group.open(s.ramp + 120 + s.sessions / 50)
        sign_in_s = time.monotonic() - started
        print(f"  {opened:,} signed in and on duty in {sign_in_s:.1f} s"
              + (f"; {failed:,} failed, first: {first}" if failed else ""), flush=True)
        if not opened:
            raise RuntimeError(f"no session signed in: {first}\n{server.log_tail()}")
        pids = [p.pid for p in group.processes if p.pid is not None]
        waited = wait_seconds(server.pid), sum(map(wait_seconds, pids)), time.monotonic()
        tally, latency, lag = group.paced(b"", opened / s.interval, s.interval, s.seconds, server.pid, walks=walks,
                                          hooks=hooks)
        span = time.monotonic() - waited[2]
        server_wait = (wait_seconds(server.pid) - waited[0]) / span
        client_wait = (sum(map(wait_seconds, pids)) - waited[1]) / span
        rss = server.rss()
    answering = max(tally.seconds, tally.finished - (tally.closed_at - tally.seconds))
    return Run(server=server.name, load=LOADS[False], target=s.sessions, signed_in=opened, sent=tally.sent,
               acked=tally.replies, errors=tally.errors, acked_per_s=tally.replies / answering,
               latency=_milliseconds(latency), server_cpu=tally.server_cpu / tally.seconds,
               client_cpu=tally.client_cpu / tally.seconds, client_cores=len(client_cpus or os.sched_getaffinity(0)),
               rss=rss, lag=_milliseconds(lag, {"p99": 99.0}), sign_in_s=sign_in_s, server_wait=server_wait,
               client_wait=client_wait)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # of the children that have ended and been waited for
    return usage.ru_utime + usage.ru_stime


def _load_generator(server: ServerProcess, s: Settings, out: Path, client_cpus: set[int] | None) -> Run:
    argv = [sys.executable, str(ROOT / "run.py"), "load", "--url", server.url, "--secret", SECRET,
            "--technicians", str(s.sessions), "--interval", str(s.interval), "--duration", str(s.ramp + s.seconds),
            "--ramp", str(s.ramp), "--json", str(out), "--quiet", "--id-prefix", f"ingest-{server.name}"]
    cpu_before, wait_before, clients_before = server.cpu(), wait_seconds(server.pid), _children_cpu()
    started = time.monotonic()
    process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               preexec_fn=(lambda: os.sched_setaffinity(0, client_cpus)) if client_cpus else None)
    try:
        _, errors = process.communicate(timeout=s.budget_s)
    except BaseException:  # Ctrl-C, SIGTERM, the budget: the load generator stops too
        process.terminate()
        process.wait(30)
        raise
    wall = time.monotonic() - started
    if process.returncode != 0:
        raise RuntimeError(f"run.py load exited {process.returncode}: {errors.decode()[-2000:]}")
    summary = json.loads(out.read_text())
    return Run(server=server.name, load=LOADS[True], target=summary["sessions"]["target"],
               signed_in=summary["sessions"]["signed_in"], sent=summary["updates"]["sent"],
               acked=summary["updates"]["acked"], errors=sum(summary["errors"].values()),
               acked_per_s=summary["updates"]["throughput_per_s"], latency=summary["latency_ms"] or {},
               server_cpu=(server.cpu() - cpu_before) / wall, client_cpu=(_children_cpu() - clients_before) / wall,
               client_cores=len(client_cpus or os.sched_getaffinity(0)), rss=server.rss(),
               server_wait=(wait_seconds(server.pid) - wait_before) / wall)


GOAL = f"p99 < {P99_GOAL_MS:g} ms, all answered"
HEADER = ["Server", "Load", "Signed in", "Updates acked", "Acked/s", "p50", "p90", "p99", "p99.9", "max",
          "Server CPU", "Server waited", "RSS, MiB", "Client CPU", "Client lag p99 / max", GOAL]


def _ms(lat: dict[str, float], name: str) -> str:
    return f"{lat[name]:.1f} ms" if name in lat else "-"


def rows(f: Figures) -> list[list[str]]:
    out = []
    for r in f.runs:
        lag = f"{_ms(r.lag, 'p99')} / {_ms(r.lag, 'max')}" if r.lag else "-"
        out.append([r.server, r.load, f"{r.signed_in:,} / {r.target:,}", f"{r.acked:,} of {r.sent:,}",
                    f"{r.acked_per_s:,.0f}", *(_ms(r.latency, p) for p in (*PERCENTILES, "max")),
                    f"{r.server_cpu:.0%}", "-" if math.isnan(r.server_wait) else f"{r.server_wait:.0%}",
                    f"{r.rss / 2**20:.0f}", f"{r.client_cpu:.0%} of {r.client_cores}",
                    lag, MARK[r.ok]])
    return out


def conditions(f: Figures) -> str:
    s = f.settings
    return (f"{s['sessions']:,} sessions in one server process, one acknowledged update each every {s['interval']:g} s "
            f"({s['sessions'] / s['interval']:,.0f}/s), {s['seconds']:g} s after a {s['ramp']:g} s ramp")


def notes(f: Figures) -> list[str]:
    s = f.settings
    if s["load_generator"]:
        out = ["Load: the project's load generator (`run.py load`, its --duration the ramp and the seconds after it). "
               "Its latencies count from when each update left (not when it was due) and include the ramp; CPU is over "
               "the whole load run (ramp included)."]
    else:
        out = [f"Latencies count from when each update was due on the timetable (the clients' lag included), for the "
               f"updates due in the {s['seconds']:g} s measured after the ramp (sessions connecting, signing in and "
               f"going on duty) and {s['interval']:g} s of warm-up; CPU is over the same {s['seconds']:g} s. "
               f"Acked/s: the replies over the time from the window's opening to its last reply."]
    out.append("CPU: 100% = one core; Client CPU: all client processes together, of the cores they were given (the "
               "server's core excepted). Server waited: the share of the measured time the server was runnable but "
               "waiting for a CPU (the machine's other work, PostgreSQL and Redis included, took its core). Signed in: "
               "sessions that got a result to `auth` and then to `tech.duty`.")
    for r in f.runs:
        if r.load != LOADS[False] or not r.lag:
            continue
        cpu_share = r.client_cpu / r.client_cores
        fine = cpu_share < CLIENT_CPU_OK and r.lag["p99"] < CLIENT_LAG_OK_MS
        verdict = "were not" if fine else "may have been"
        out.append(f"Against {r.server}: {r.signed_in:,} sessions signed in and on duty {r.sign_in_s:.0f} s after the "
                   f"clients started (the ramp: {s['ramp']:g} s); the clients {verdict} the limit: {cpu_share:.0%} "
                   f"of their {r.client_cores} core(s) (waiting for a CPU {r.client_wait:.0%} of the time), and "
                   f"updates left at most {r.lag['max']:.1f} ms after they were due (p99 {r.lag['p99']:.1f} ms).")
    if not s["pin"]:
        out.append("Servers and clients were not pinned to separate cores (--no-pin).")
    out.append("Not covered: a real network and TLS between apps and gateway, other work in the same process (orders, "
               "chat), PostgreSQL and Redis on other machines (here they share the two cores with everything).")
    return out


def print_report(f: Figures) -> None:
    print_tables(f, [rich_table("Paced ingest: the gateway and the bare baseline", HEADER, rows(f), conditions(f))],
                 notes(f))


# -- beside the run before ------------------------------------------------------------------------
BESIDE = ["Server", "Load", "Signed in", "Acked/s", "p99", "p99.9", "Server CPU", "RSS, MiB", GOAL]


def last_run(path: Path) -> tuple[str, str, list[list[str]]] | None:
    """The section's summary as the file has it now (the run this one replaces): when it ran, its
    conditions and its rows in BESIDE's columns ("-" for a column it did not have; runs from before
    `Load` was a column used the load generator). None when there is none."""
    old = next((m.group(2) for m in report.SECTION.finditer(path.read_text() if path.exists() else "")
                if m.group(1) == "ingest"), "")
    when = re.search(r"on (\d{4}-\d\d-\d\d \d\d:\d\d UTC)", old)
    summary = old.split("### Summary", 1)[-1].split("###", 1)[0].strip().splitlines()
    table = [line for line in summary if line.startswith("|")]
    if when is None or len(table) < 3 or not table[0].startswith("| Server |"):
        return None

    def cells(line: str) -> list[str]:
        return [cell.strip() for cell in line.strip().strip("|").split("|")]

    header = cells(table[0])
    goal = next((name for name in header if name.startswith("p99 <")), "")
    picked = []
    for line in table[2:]:
        row = dict(zip(header, cells(line), strict=False))
        row.setdefault("Load", LOADS[True])
        picked.append([row.get(goal if name == GOAL else name, "-") for name in BESIDE])
    return when.group(1), summary[0].rstrip("."), picked


def beside_last(f: Figures, path: Path) -> str:
    """This run's figures beside those of the run it replaces in `path` (the issue keeps both)."""
    found = last_run(path)
    if found is None:
        return ""
    when, before, old_rows = found
    now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(f.started))
    new_rows = [[row[HEADER.index(name)] for name in BESIDE] for row in rows(f)]
    table = markdown_table(["Run", *BESIDE], [[f"before ({when})", *r] for r in old_rows]
                           + [[f"this run ({now})", *r] for r in new_rows])
    return f"\n\n### Beside the run before\n\nBefore: {before}. This run: {conditions(f)}.\n\n{table}"


def write_markdown(f: Figures, path: Path) -> None:
    about = __doc__.split("\n\n", 2)[2].strip()
    report.write_markdown(path, "ingest", f, profile="`--profile PATH` runs the gateway alone under cProfile.",
                          about=about + f"\n\nGoal: the gateway's acknowledgement p99 under {P99_GOAL_MS:g} ms with "
                          "every session signed in and every update answered.",
                          tables=f"### Summary\n\n{conditions(f)}.\n\n{markdown_table(HEADER, rows(f))}"
                                 f"{beside_last(f, path)}",
                          notes=notes(f))


def profile(s: Settings, path: Path) -> None:
    """The gateway alone under the bench's clients, its measured window under cProfile; prints the
    functions that cost the most."""
    if s.load_generator:
        raise SystemExit("--profile runs the bench's own clients: leave out --load-generator")
    server_cpus, client_cpus = cores(s.pin)
    path.unlink(missing_ok=True)
    with backends("bench-ingest-") as b:
        data_dir = b.root / "gateway"
        _, frames = hellos(Config(data_dir=data_dir, secret=SECRET), s.sessions)
        server = gateway_server(b.root / "gateway.log", server_cpus, database_url=b.database_url,
                                redis_url=b.redis_url, data_dir=data_dir, secret=SECRET,
                                launcher=[sys.executable, "-m", "bench.profiled", str(path)])
        with server:
            run = _paced(server, s, frames, _walks(s), client_cpus, switches(server.pid))
            deadline = time.monotonic() + 30
            while not path.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
    print(f"under cProfile (slower than without): {run.acked:,} of {run.sent:,} acked, {run.latency}, "
          f"server CPU {run.server_cpu:.0%}")
    print_stats(path, 30, r"gateway|handlers|protocol|storage|websockets", 30)


def main(argv: Sequence[str] | None = None) -> int:
    return cli.main("ingest", argv, parser(), settings_from, measure, profile, print_report, write_markdown)


if __name__ == "__main__":
    cli.run(main)
