"""The gateway against a bare websockets + msgspec server, measured in the same run.

    .venv/bin/python -m bench.gateway [--quick] [--markdown docs/benchmarks.md]

(a) resident memory per idle authenticated session, (b) `ping` replies per second over many
concurrent sessions. Each server runs as its own process pinned to one core, driven by client
processes on the other core(s); the rounds alternate which server goes first, and the medians
are reported with the ratio gateway ÷ bare against the goals.
"""

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:  # `python bench/gateway.py`: import from the project root
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

from bench import cli
from bench.gateway_report import Figures, Run, print_report, write_markdown
from bench.load import Clients, Hooks
from bench.profiled import print_stats, switches
from bench.servers import MAX_SESSIONS, SECRET, ServerProcess, backends, bare_server, cores, gateway_server, hellos
from gateway.config import Config

WARM_SESSIONS = 100  # opened and closed before the "before" RSS, so one-time costs are not per-session


@dataclass(frozen=True)
class Settings:
    idle_sessions: int
    sessions: int
    seconds: float
    warmup: float
    window: int
    rounds: int
    clients: int
    pin: bool

    @property
    def budget_s(self) -> int:
        """A hard bound on the whole run; generous, it only stops a bench that hangs."""
        per_server = 120 + self.idle_sessions / 40 + self.sessions / 40 + self.warmup + self.seconds
        return int(180 + 2 * self.rounds * per_server)


def parser() -> argparse.ArgumentParser:
    p = cli.parser("gateway", __doc__)
    p.add_argument("--idle-sessions", type=int, default=5000, help="idle sessions for the memory figure")
    p.add_argument("--sessions", type=int, default=1000, help="concurrent sessions for the ping throughput")
    p.add_argument("--seconds", type=float, default=5.0, help="measured seconds of ping load per run")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of ping load before the measurement")
    p.add_argument("--window", type=int, default=4, help="pings in flight per session")
    p.add_argument("--rounds", type=int, default=3, help="runs of each server (alternating); medians reported")
    return cli.common_options(p, quick="well under a minute", markdown="the report as Markdown", profile=(
        "PATH", "instead: run the gateway once under cProfile (the ping window only), write the stats to PATH and "
                "print where the time goes"))


def settings_from(args: argparse.Namespace) -> Settings:
    if args.quick:
        args.idle_sessions, args.sessions, args.seconds, args.warmup, args.rounds = 500, 200, 2.0, 0.5, 1
    if not 1 <= args.idle_sessions <= MAX_SESSIONS:
        raise SystemExit(f"--idle-sessions must be 1..{MAX_SESSIONS} (open files are capped at 20,000)")
    if args.sessions < 1 or args.seconds <= 0 or args.window < 1 or args.rounds < 1 or args.clients < 1:
        raise SystemExit("--sessions, --seconds, --window, --rounds and --clients must be positive")
    return Settings(args.idle_sessions, args.sessions, args.seconds, args.warmup, args.window, args.rounds,
                    args.clients, args.pin and len(os.sched_getaffinity(0)) >= 2)


def main(argv: Sequence[str] | None = None) -> int:
    return cli.main("gateway", argv, parser(), settings_from, measure, profile, print_report, write_markdown)


def measure(settings: Settings, command: str) -> Figures:
    server_cpus, client_cpus = cores(settings.pin)
    figures = Figures(command=command, started=time.time(),
                      settings=vars(settings) | {"pinned": settings.pin, "warm_sessions": WARM_SESSIONS,
                                                 "client_cores": len(client_cpus or os.sched_getaffinity(0))})
    with backends("bench-gateway-") as b:
        root, database_url, redis_url = b.root, b.database_url, b.redis_url
        data_dir = root / "gateway"
        _, frames = hellos(Config(data_dir=data_dir, secret=SECRET), settings.idle_sessions + settings.sessions)
        idle, busy = frames[:settings.idle_sessions], frames[settings.idle_sessions:]
        names = ("bare", "bare-send", "gateway")
        for round_ in range(1, settings.rounds + 1):
            order = names[round_ % 3:] + names[:round_ % 3]  # each goes first once in three rounds
            for name in order:
                log = root / f"{name}-{round_}.log"
                if name.startswith("bare"):
                    server = bare_server(log, server_cpus, "send" if name == "bare-send" else "transport")
                else:
                    server = gateway_server(log, server_cpus, database_url=database_url, redis_url=redis_url,
                                            data_dir=data_dir, secret=SECRET)
                print(f"round {round_}/{settings.rounds}: {name} server ...", flush=True)
                with server:
                    run = _measure_server(server, round_, idle, busy, settings, client_cpus)
                figures.runs.append(run)
                print(f"  {run.summary()}", flush=True)
    figures.seconds = time.time() - figures.started
    return figures


def profile(settings: Settings, path: Path) -> None:
    """The gateway alone, its ping window under cProfile; prints the functions that cost the most."""
    server_cpus, client_cpus = cores(settings.pin)
    path.unlink(missing_ok=True)
    with backends("bench-gateway-") as b:
        root, database_url, redis_url = b.root, b.database_url, b.redis_url
        data_dir = root / "gateway"
        _, frames = hellos(Config(data_dir=data_dir, secret=SECRET), settings.idle_sessions + settings.sessions)
        server = gateway_server(root / "gateway.log", server_cpus, database_url=database_url,
                                redis_url=redis_url, data_dir=data_dir, secret=SECRET,
                                launcher=[sys.executable, "-m", "bench.profiled", str(path)])
        with server:
            run = _measure_server(server, 1, frames[:settings.idle_sessions], frames[settings.idle_sessions:],
                                  settings, client_cpus, switches(server.pid))
            deadline = time.monotonic() + 30
            while not path.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
    print(f"under cProfile (slower than without): {run.summary()}")
    print_stats(path, 30, r"gateway|handlers|protocol|websockets|prometheus", 30)


def _measure_server(server: ServerProcess, round_: int, idle: Sequence[bytes], busy: Sequence[bytes],
                    s: Settings, client_cpus: set[int] | None,
                    hooks: Hooks | None = None) -> Run:
    def clients(hellos: Sequence[bytes], processes: int) -> Clients:
        return Clients(server.url, hellos, processes=processes, window=s.window, cpus=client_cpus)

    def open_all(group: Clients, what: str) -> None:
        opened, failed, error = group.open(timeout=60 + _open_timeout(s))
        if failed:
            raise RuntimeError(f"{server.name}: {failed} of {opened + failed} {what} sessions failed "
                               f"to open; first: {error}\n{server.log_tail()}")

    with clients(idle[:WARM_SESSIONS], 1) as warm:  # first-use costs: imports, caches, catalogs
        open_all(warm, "warm-up")
    time.sleep(0.5)
    before = _settled_rss(server)
    started = time.monotonic()
    with clients(idle, s.clients) as group:
        open_all(group, "idle")
        open_seconds = time.monotonic() - started
        after = _settled_rss(server)
    with clients(busy, s.clients) as group:
        open_all(group, "pinging")
        tally = group.ping(s.warmup, s.seconds, server.pid, hooks)
    if tally.errors:
        raise RuntimeError(f"{server.name}: {tally.errors} error frames or closed sessions while pinging\n"
                           f"{server.log_tail()}")
    return Run(server=server.name, round=round_, idle_sessions=len(idle), rss_before=before, rss_after=after,
               open_seconds=open_seconds, sessions=len(busy), replies=tally.replies, seconds=tally.seconds,
               server_cpu=tally.server_cpu, client_cpu=tally.client_cpu, other_cpu=tally.other_cpu)


def _open_timeout(s: Settings) -> float:
    return max(s.idle_sessions, s.sessions) / 40


def _settled_rss(server: ServerProcess) -> int:
    """The median of a few readings once the server has had a second to finish its work."""
    time.sleep(1.0)
    readings = []
    for _ in range(3):
        readings.append(server.rss())
        time.sleep(0.3)
    return int(statistics.median(readings))


if __name__ == "__main__":
    cli.run(main)
