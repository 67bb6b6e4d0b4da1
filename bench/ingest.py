"""Realistic ingest: many technician sessions in one gateway process, each sending one acknowledged
`location.update` every few seconds, as the apps do (faster than their once a minute), for minutes.

    .venv/bin/python -m bench.ingest [--quick] [--markdown docs/benchmarks.md]

The load is the project's own load generator (`run.py load`: a session per technician, `auth`,
`tech.duty`, then one update with an id every `--interval` seconds, starts spread over the
interval, latencies in HdrHistograms), pointed first at the bare baseline of `bench.bare` (which
answers every frame with an id, auth and duty included, with a small result) and then at the
gateway: the same sessions, frames and pacing. Each server is pinned to one core, the load's
processes to the other(s). Reported: acknowledgement latency p50 to max, the server's CPU over
the run, its resident memory at the end, and whether every session signed in and every update
was answered.
"""

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import json
import os
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench import cli, report
from bench.procfs import cpu_seconds, rss_bytes
from bench.report import MARK, markdown_table, print_tables, rich_table
from bench.servers import MAX_SESSIONS, ROOT, SECRET, ServerProcess, backends, bare_server, cores, gateway_server

P99_GOAL_MS = 50.0  # an acknowledged update's p99 under this at the realistic rate


@dataclass(frozen=True)
class Settings:
    sessions: int
    interval: float
    seconds: float
    ramp: float
    pin: bool

    @property
    def budget_s(self) -> int:
        return int(600 + 2 * (self.seconds + self.ramp + self.sessions / 100))


@dataclass
class Run:
    server: str
    summary: dict[str, Any]
    cpu_s: float
    wall_s: float
    rss: int

    @property
    def latency(self) -> dict[str, float]:
        found: dict[str, float] = self.summary["latency_ms"] or {}
        return found

    @property
    def complete(self) -> bool:
        s = self.summary
        return (s["sessions"]["signed_in"] == s["sessions"]["target"] and s["updates"]["acked"] > 0
                and s["updates"]["acked"] >= s["updates"]["sent"] - s["sessions"]["target"] and not s["errors"])


@dataclass
class Figures(report.Figures):
    runs: list[Run] = field(default_factory=list)


def parser() -> argparse.ArgumentParser:
    p = cli.parser("ingest", __doc__)
    p.add_argument("--sessions", type=int, default=18_000, help="technician sessions in the one server process")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between a session's updates")
    p.add_argument("--seconds", type=float, default=300.0, help="how long the load runs after its ramp")
    p.add_argument("--ramp", type=float, default=60.0, help="seconds over which the sessions connect")
    return cli.common_options(p, quick="about a minute", profile=("PATH", "not supported by this bench"))


def settings_from(args: argparse.Namespace) -> Settings:
    if args.quick:
        args.sessions, args.seconds, args.ramp = 1000, 20.0, 5.0
    if not 1 <= args.sessions <= MAX_SESSIONS:
        raise SystemExit(f"--sessions must be 1..{MAX_SESSIONS} (open files are capped at 20,000)")
    return Settings(args.sessions, args.interval, args.seconds, args.ramp,
                    args.pin and len(os.sched_getaffinity(0)) >= 2)


def measure(s: Settings, command: str) -> Figures:
    server_cpus, client_cpus = cores(s.pin)
    figures = Figures(command=command, started=time.time(), settings=vars(s) | {"rounds": 1})
    with backends("bench-ingest-") as b:
        data_dir = b.root / "gateway"
        for name in ("bare", "gateway"):
            log = b.root / f"{name}.log"
            server = (bare_server(log, server_cpus) if name == "bare" else
                      gateway_server(log, server_cpus, database_url=b.database_url, redis_url=b.redis_url,
                                     data_dir=data_dir, secret=SECRET))
            print(f"{name}: {s.sessions:,} sessions, an update every {s.interval:g} s for {s.seconds:g} s ...",
                  flush=True)
            with server:
                figures.runs.append(_load(server, s, b.root / f"{name}.json", client_cpus))
            print(f"  {figures.runs[-1].latency}", flush=True)
    figures.seconds = time.time() - figures.started
    return figures


def _load(server: ServerProcess, s: Settings, out: Path, client_cpus: set[int] | None) -> Run:
    argv = [sys.executable, str(ROOT / "run.py"), "load", "--url", server.url, "--secret", SECRET,
            "--technicians", str(s.sessions), "--interval", str(s.interval), "--duration", str(s.seconds),
            "--ramp", str(s.ramp), "--json", str(out), "--quiet", "--id-prefix", f"ingest-{server.name}"]
    cpu_before, started = cpu_seconds(server.pid), time.monotonic()
    process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               preexec_fn=(lambda: os.sched_setaffinity(0, client_cpus)) if client_cpus else None)
    _, errors = process.communicate(timeout=s.budget_s)
    if process.returncode != 0:
        raise RuntimeError(f"run.py load exited {process.returncode}: {errors.decode()[-2000:]}")
    return Run(server=server.name, summary=json.loads(out.read_text()), cpu_s=cpu_seconds(server.pid) - cpu_before,
               wall_s=time.monotonic() - started, rss=rss_bytes(server.pid))


HEADER = ["Server", "Signed in", "Updates acked", "Acked/s", "p50", "p90", "p99", "p99.9", "max", "Server CPU",
          "RSS, MiB", f"p99 < {P99_GOAL_MS:g} ms, all answered"]


def rows(f: Figures) -> list[list[str]]:
    out = []
    for r in f.runs:
        lat, s = r.latency, r.summary

        def ms(name: str, lat: dict[str, float] = lat) -> str:
            return f"{lat[name]:.1f} ms" if name in lat else "-"

        ok = r.complete and lat.get("p99", float("inf")) < P99_GOAL_MS
        out.append([r.server, f"{s['sessions']['signed_in']:,} / {s['sessions']['target']:,}",
                    f"{s['updates']['acked']:,} of {s['updates']['sent']:,}",
                    f"{s['updates']['throughput_per_s']:,.0f}",
                    ms("p50"), ms("p90"), ms("p99"), ms("p99.9"), ms("max"), f"{r.cpu_s / r.wall_s:.0%}",
                    f"{r.rss / 2**20:.0f}", MARK[ok]])
    return out


def conditions(f: Figures) -> str:
    s = f.settings
    return (f"{s['sessions']:,} sessions in one server process, one acknowledged update each every {s['interval']:g} s "
            f"({s['sessions'] / s['interval']:,.0f}/s), {s['seconds']:g} s after a {s['ramp']:g} s ramp")


def notes(f: Figures) -> list[str]:
    out = ["Latencies include the ramp, when sessions are still connecting and signing in; CPU is the server's "
           "over the whole load run (ramp included), 100% = one core."]
    if not f.settings["pin"]:
        out.append("Servers and clients were not pinned to separate cores (--no-pin).")
    return out


def print_report(f: Figures) -> None:
    print_tables(f, [rich_table("Paced ingest: the gateway and the bare baseline", HEADER, rows(f), conditions(f))],
                 notes(f))


def write_markdown(f: Figures, path: Path) -> None:
    report.write_markdown(path, "ingest", f, profile="it has no profiler.", about=__doc__.split("\n\n", 2)[2].strip()
                          + f"\n\nGoal: the gateway's acknowledgement p99 under {P99_GOAL_MS:g} ms with every session "
                          "signed in and every update answered.",
                          tables=f"### Summary\n\n{conditions(f)}.\n\n{markdown_table(HEADER, rows(f))}",
                          notes=notes(f))


def profile(s: Settings, path: Path) -> None:
    raise SystemExit("bench.ingest has no --profile")


def main(argv: Sequence[str] | None = None) -> int:
    return cli.main("ingest", argv, parser(), settings_from, measure, profile, print_report, write_markdown)


if __name__ == "__main__":
    cli.run(main)
