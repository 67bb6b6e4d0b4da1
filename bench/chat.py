"""Chat: message latency at rising rates and throughput, against a bare chat server doing the same work
(bench.chat_bare), with bare asyncpg inserts of the same rows as references.

    .venv/bin/python -m bench.chat [--quick] [--markdown docs/benchmarks.md] [--profile DIR]

Orders are put straight into PostgreSQL as accepted (a consumer and a technician each), and both
members of every room connect to one gateway process; as many rooms of their own to the baseline.

1. Latency, open loop: `chat.send` at a steady aggregate rate, whatever the replies; from the frame
   leaving the sender to the OTHER member's `chat.message`, p50/p99 at each rate of a rising
   series, on the gateway and on the baseline chat server (below), each until its p99 reaches
   50 ms or it falls behind. Reported: each one's highest rate held. Goal: the gateway's >= 0.7x.
2. Throughput, closed loop: rooms keep one message each in flight; a message counts once the other
   member has it (and the sender its reply). Baseline: `bench.chat_bare`, a bare chat server
   doing the same work per message (websockets, the same statements in batches of up to 500, the
   same encryption, delivery to both members, the reply after the commit) with rooms and sessions
   of its own, as many. Goal: >= 0.7x. Second references: `bench.chat_inserts`, bare asyncpg
   inserting the rows only, batched as the gateway's writer and one per statement. With the CPU of
   the server, PostgreSQL and Redis over each window.
"""

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:  # `python bench/chat.py`: import from the project root
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import asyncio
import contextlib
import json
import os
import select
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import asyncpg
import msgspec

from bench import cli
from bench.chat_clients import DRAIN_S, TEXT, ChatClients, Counts, Room, Start
from bench.chat_report import Figures, LogErrors, Step, Throughput, print_report, write_markdown
from bench.load import Hooks, sleep_until
from bench.procfs import busy_seconds, cpu_seconds, family_cpu_seconds
from bench.profiled import print_stats, switches
from bench.servers import HOST, ROOT, SECRET, Backends, ServerProcess, backends, cores, gateway_server, postmaster_pid
from gateway.app import token_issuer
from gateway.config import Config
from protocol.auth import Auth
from storage.embedded import free_port

RATES = (200, 500, 1000, 1500, 2000, 2500, 3000, 4000, 5000, 6500, 8000)
QUICK_RATES = (200, 1000, 2000, 4000)
SETTLE_S = 11.0  # measure from this long after the sessions opened
SEQ_FROM = 10**12  # the baseline's sequence numbers: far above the gateway's counters
Probes = dict[str, Callable[[], float]]


@dataclass(frozen=True)
class Settings:
    rooms: int
    rates: tuple[float, ...]
    step_seconds: float
    seconds: float
    warmup: float
    in_flight: int
    rounds: int
    pool_size: int
    clients: int
    pin: bool

    @property
    def budget_s(self) -> int:
        """A hard bound on the whole run; generous, it only stops a bench that hangs."""
        steps = len(self.rates) * (self.warmup + self.step_seconds + 3) + 2 * DRAIN_S
        rounds = self.rounds * 3 * (self.warmup + self.seconds + 10)
        return int(180 + self.rooms / 50 + steps + rounds)


def parser() -> argparse.ArgumentParser:
    p = cli.parser("chat", __doc__)
    p.add_argument("--rooms", type=int, default=1000, help="orders with both members connected")
    p.add_argument("--rates", type=lambda v: tuple(float(r) for r in v.split(",")), default=RATES,
                   help="open loop: the offered rates, msg/s, ascending, comma-separated")
    p.add_argument("--step-seconds", type=float, default=10.0,
                   help="open loop: measured seconds per rate")
    p.add_argument("--seconds", type=float, default=5.0, help="closed loop: measured seconds per run")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of load before each measurement")
    p.add_argument("--in-flight", type=int, default=200, help="closed loop: rooms with a message in flight each")
    p.add_argument("--rounds", type=int, default=3, help="closed loop: runs per side (alternating); medians")
    return cli.common_options(p, pinned="the gateway and the baseline", profile=(
        "DIR", "instead: run the closed loop of the gateway and of the baseline chat server once each under "
               "cProfile (measured window only), write DIR/chat.prof and DIR/chat_bare.prof and print where the "
               "time goes"))


def settings_from(args: argparse.Namespace) -> Settings:
    if args.quick:
        args.rooms, args.rates, args.step_seconds = 500, QUICK_RATES, 2.0
        args.seconds, args.warmup, args.rounds = 3.0, 0.5, 1
    positive = ("rooms", "step_seconds", "seconds", "in_flight", "rounds", "clients")
    if any(getattr(args, name) <= 0 for name in positive) or args.warmup < 0:
        raise SystemExit(f"--{', --'.join(n.replace('_', '-') for n in positive)} must be positive")
    if not args.rates or min(args.rates) <= 0:
        raise SystemExit("--rates: one or more positive rates, comma-separated")
    if args.in_flight > args.rooms or 2 * args.rooms > 15_000:
        raise SystemExit("--in-flight must be at most --rooms, and --rooms at most 7,500 (open files: 20,000)")
    return Settings(args.rooms, tuple(sorted(args.rates)), args.step_seconds, args.seconds, args.warmup,
                    args.in_flight, args.rounds, Config().db_pool_size, args.clients, args.pin)


def main(argv: Sequence[str] | None = None) -> int:
    return cli.main("chat", argv, parser(), settings_from, measure, profile, print_report, write_markdown)


def measure(s: Settings, command: str) -> Figures:
    server_cpus, client_cpus = cores(s.pin)
    figures = Figures(command=command, started=time.time(),
                      settings=vars(s) | {"pinned": server_cpus is not None, "text_bytes": len(TEXT),
                                          "drain_s": DRAIN_S, "settle_s": SETTLE_S})
    with backends("bench-chat-") as b:
        with Bench(s, b, server_cpus, client_cpus) as bench:
            figures.steps = bench.ramp()
            for round_ in range(1, s.rounds + 1):
                sides = ("gateway", "bare", "asyncpg-batched", "asyncpg")
                for side in sides if round_ % 2 else sides[::-1]:
                    figures.throughput.append(bench.closed_loop(round_, side) if side in ("gateway", "bare") else
                                              bench.inserts(round_, batched=side == "asyncpg-batched"))
            bench.measured()
        figures.log_measuring, figures.log_closing = bench.log_measuring, bench.log_closing
    figures.seconds = time.time() - figures.started
    return figures


def profile(s: Settings, folder: Path) -> None:
    """The closed loop of the gateway and of the baseline chat server once each, under cProfile
    during its measured window."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"gateway": folder / "chat.prof", "bare": folder / "chat_bare.prof"}
    for path in paths.values():
        path.unlink(missing_ok=True)
        Path(f"{path}.gc").unlink(missing_ok=True)
    server_cpus, client_cpus = cores(s.pin)
    with backends("bench-chat-") as b, Bench(s, b, server_cpus, client_cpus, folder) as bench:
        for side in paths:
            print(f"under cProfile (slower than without): {bench.closed_loop(1, side).summary()}", flush=True)
    for side, path in paths.items():
        deadline = time.monotonic() + 30
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        print(f"\n==== chat.send, closed loop: {'the gateway' if side == 'gateway' else 'the baseline'}'s window ====")
        print_stats(path, 30, r"gateway|handlers|storage|protocol|websockets|redis|asyncpg|bench", 40)


class Bench:
    """`with Bench(...) as bench:` the gateway running, the rooms in PostgreSQL, every member
    connected and the rooms warmed up; then the phases. With `profile` (a folder), the gateway and
    the baseline chat server run under cProfile, switched on for the closed loop's window."""

    def __init__(self, s: Settings, b: Backends, server_cpus: set[int] | None, client_cpus: set[int] | None,
                 profile: Path | None = None) -> None:
        self.s, self.b = s, b
        self.server_cpus, self.client_cpus = server_cpus, client_cpus
        self.config = Config(data_dir=b.root / "gateway", secret=SECRET)
        self.profile = profile
        self.stack = contextlib.ExitStack()
        self.rooms_file = b.root / "rooms.json"
        self.server: ServerProcess | None = None
        self.clients: ChatClients | None = None
        self.bare: ServerProcess | None = None  # the like-for-like baseline
        self.bare_clients: ChatClients | None = None
        self.postmaster = 0
        self.baseline_runs = 0  # each baseline run numbers its rows from SEQ_FROM times its number
        self.log_measuring = self.log_closing = LogErrors.of([])  # what the gateway logged as errors
        self.log_lines = 0  # lines of its log by the end of the phases

    def __enter__(self) -> "Bench":
        try:
            self._start()
        except BaseException:
            self.stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stack.close()

    def _start(self) -> None:
        s, b = self.s, self.b
        def launcher(out: str) -> list[str] | None:
            return None if self.profile is None else [sys.executable, "-m", "bench.profiled", str(self.profile / out)]

        print("starting the gateway (it migrates the database) ...", flush=True)
        self.server = server = self.stack.enter_context(gateway_server(
            b.root / "gateway.log", self.server_cpus, database_url=b.database_url, redis_url=b.redis_url,
            data_dir=self.config.data_dir, secret=SECRET, launcher=launcher("chat.prof")))
        self.stack.callback(self._read_log)  # once the clients have closed, before the gateway stops
        self.postmaster = postmaster_pid(b)
        started = time.monotonic()
        rooms, bare_rooms = self._seed()
        print(f"{2 * s.rooms:,} accepted orders into PostgreSQL in {time.monotonic() - started:.1f} s (half of "
              f"them for the baseline server); connecting {2 * s.rooms:,} members to the gateway ...", flush=True)
        started = time.monotonic()
        self.clients = self._connect(server, rooms)
        opened_at = time.monotonic()
        print(f"  open in {opened_at - started:.1f} s; warming every room up ...", flush=True)
        self._warm(server, self.clients)
        print(f"starting the baseline chat server; connecting {2 * s.rooms:,} members to it ...", flush=True)
        bare_argv = launcher("chat_bare.prof") or [sys.executable, "-m"]
        self.bare = bare = self.stack.enter_context(ServerProcess("chat-bare", [
            *bare_argv, "bench/chat_bare.py" if self.profile else "bench.chat_bare", "--host", HOST,
            "--port", str(port := free_port(HOST)), "--database-url", b.database_url,
            "--data-dir", str(self.config.data_dir), "--secret", SECRET, "--pool-size", str(s.pool_size)],
            port, b.root / "chat_bare.log", self.server_cpus))
        self.bare_clients = self._connect(bare, bare_rooms)
        bare_opened_at = time.monotonic()
        self._warm(bare, self.bare_clients)
        # Steady state: both servers move long-lived objects (the sessions) out of the garbage
        # collector's way every second (gateway.app.settle_garbage_collector); until they have, full
        # collections of 60 ms land on whatever is measured.
        sleep_until(max(opened_at, bare_opened_at) + SETTLE_S)

    def _connect(self, server: ServerProcess, rooms: list[Room]) -> ChatClients:
        s = self.s
        clients = self.stack.enter_context(
            ChatClients(server.url, rooms, processes=min(s.clients, s.rooms), cpus=self.client_cpus))
        opened, failed, error = clients.open(timeout=60 + s.rooms / 20)
        if failed:
            raise RuntimeError(f"{failed} of {opened + failed} sessions failed to open; first: {error}\n"
                               f"{server.log_tail()}")
        return clients

    def _warm(self, server: ServerProcess, clients: ChatClients) -> None:
        s = self.s
        warm = max(2.0, 2 * s.warmup)
        clients.start_loop(s.rooms)(time.monotonic(), time.monotonic(), time.monotonic() + warm)
        counts = clients.collect(warm)
        self._check(counts, "warm-up", server)
        if counts.done < s.rooms:
            raise RuntimeError(f"warm-up: only {counts.done} messages were delivered in {s.rooms:,} rooms\n"
                               f"{server.log_tail()}")

    def _seed(self) -> tuple[list[Room], list[Room]]:
        """The orders, accepted, straight into PostgreSQL, twice as many as rooms: the gateway's
        and the baseline server's; the rooms with their members' hellos; the gateway's rooms
        (order, consumer, technician) in a file for the inserting baselines."""
        issuer = token_issuer(self.config)
        encode = msgspec.json.Encoder().encode
        records, rooms, listed = [], [], []
        for _ in range(2 * self.s.rooms):
            order_id, consumer, technician = uuid.uuid4(), str(uuid.uuid4()), str(uuid.uuid4())
            records.append((order_id, consumer, consumer, "whirlpool", "WRF535SWHZ", "repair",
                            "Refrigerator stopped cooling, the freezer works.", b"bench: not an envelope", 41.88,
                            -87.63, 13900, "usd", "accepted", technician))
            hellos = tuple(encode(Auth(id="auth", token=issuer.mint(user, role)[0]))  # type: ignore[arg-type]
                           for user, role in ((consumer, "consumer"), (technician, "technician")))
            rooms.append(Room(str(order_id), (hellos[0], hellos[1])))
            listed.append([str(order_id), consumer, technician])

        async def load() -> None:
            conn = await asyncpg.connect(self.b.database_url)
            try:
                await conn.copy_records_to_table(
                    "orders", records=records,
                    columns=["id", "consumer_id", "created_by", "brand_id", "sku_id", "service_type", "description",
                             "address_enc", "lat", "lng", "price_cents", "currency", "state", "technician_id"])
            finally:
                await conn.close()

        asyncio.run(load())
        self.rooms_file.write_text(json.dumps(listed[:self.s.rooms]))
        return rooms[:self.s.rooms], rooms[self.s.rooms:]

    # -- 1. latency, open loop ----------------------------------------------------------------
    def ramp(self) -> list[Step]:
        """Each rate on the gateway, then on the baseline server; a side stops at its first miss."""
        s = self.s
        steps: list[Step] = []
        rising = ["gateway", "bare"]
        for rate in s.rates:
            for side in list(rising):
                server, clients = self._side(side)
                print(f"open loop at {rate:,.0f} msg/s: {self._name(side)} ...", flush=True)
                cpu = self._window(clients.start_rate(rate), s.step_seconds, {"server": server.cpu}, clients=clients)
                counts = clients.collect(s.warmup + s.step_seconds)
                self._check(counts, f"open loop at {rate:,.0f} msg/s ({self._name(side)})", server)
                step = Step(rate=rate, seconds=s.step_seconds, sent=counts.sent, done=counts.done, late=counts.late,
                            errors=counts.errors, latencies=list(counts.latencies), replies=list(counts.replies),
                            lag=list(counts.lag), cpu=cpu, slow=counts.slow, side=side)
                steps.append(step)
                print(f"  {step.summary()}", flush=True)
                if not step.held:
                    rising.remove(side)
            if not rising:
                break
        return steps

    def _side(self, side: str) -> tuple[ServerProcess, ChatClients]:
        server, clients = (self.server, self.clients) if side == "gateway" else (self.bare, self.bare_clients)
        assert server is not None and clients is not None
        return server, clients

    @staticmethod
    def _name(side: str) -> str:
        return "the gateway" if side == "gateway" else "the baseline chat server"

    # -- 2. throughput, closed loop -----------------------------------------------------------
    def closed_loop(self, round_: int, side: str = "gateway") -> Throughput:
        s = self.s
        server, clients = self._side(side)
        what = self._name(side)
        print(f"closed loop, round {round_}/{s.rounds}: {what}, {s.in_flight} in flight ...", flush=True)
        hooks = None if self.profile is None else switches(server.pid)
        cpu = self._window(clients.start_loop(s.in_flight), s.seconds, {"server": server.cpu}, hooks, clients=clients)
        counts = clients.collect(s.warmup + s.seconds)
        self._check(counts, f"closed loop ({what})", server)
        run = Throughput(side=side, round=round_, in_flight=s.in_flight, done=counts.done, seconds=s.seconds,
                         latencies=list(counts.latencies), cpu=cpu)
        print(f"  {run.summary()}", flush=True)
        return run

    def inserts(self, round_: int, batched: bool = False) -> Throughput:
        s = self.s
        how = ", batched as the gateway's chat writer" if batched else ", one row per statement"
        print(f"closed loop, round {round_}/{s.rounds}: bare asyncpg inserts{how}, {s.in_flight} in flight ...",
              flush=True)
        self.baseline_runs += 1
        argv = [sys.executable, "-m", "bench.chat_inserts", "--database-url", self.b.database_url,
                "--rooms", str(self.rooms_file), "--in-flight", str(s.in_flight), "--pool-size", str(s.pool_size),
                "--seq-from", str(SEQ_FROM * self.baseline_runs), *(["--batch"] if batched else [])]
        with (self.b.root / "inserts.log").open("ab") as log:
            process = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                       start_new_session=True)
        assert process.stdin is not None and process.stdout is not None
        try:
            if self.server_cpus:
                os.sched_setaffinity(process.pid, self.server_cpus)  # where the gateway runs
            _read_line(process, 60, "ready")

            def start(begin: float, t_from: float, t_until: float) -> None:
                assert process.stdin is not None
                process.stdin.write(f"start {begin} {t_from} {t_until}\n".encode())
                process.stdin.flush()

            cpu = self._window(start, s.seconds, {"server": lambda: cpu_seconds(process.pid)})
            result = json.loads(_read_line(process, s.warmup + s.seconds + 60, "{"))
            process.wait(30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(5)
        if result["errors"]:
            raise RuntimeError(f"baseline: {result['errors']} inserts failed; first: {result['first_error']}")
        run = Throughput(side="asyncpg-batched" if batched else "asyncpg", round=round_, in_flight=s.in_flight,
                         done=result["inserted"], seconds=s.seconds, latencies=result["latencies"], cpu=cpu)
        print(f"  {run.summary()}", flush=True)
        return run

    # -- helpers ------------------------------------------------------------------------------
    def _window(self, start: Start, seconds: float, probes: Probes, hooks: Hooks | None = None,
                clients: ChatClients | None = None) -> dict[str, float]:
        """Tell the load when to start, when the window opens and closes; the CPU seconds used over
        the window by the probes' processes, PostgreSQL, Redis, the clients and the rest (other)."""
        probes = probes | {"postgres": lambda: family_cpu_seconds(self.postmaster),
                           "redis": lambda: cpu_seconds(self.b.redis_pid), "clients": (clients or self._clients()).cpu}
        begin = time.monotonic() + 0.2
        t_from = begin + self.s.warmup
        t_until = t_from + seconds
        start(begin, t_from, t_until)
        sleep_until(t_from)
        if hooks:
            hooks[0]()
        before = {name: probe() for name, probe in probes.items()}
        machine = busy_seconds()
        sleep_until(t_until)
        used = {name: probe() - before[name] for name, probe in probes.items()}
        used["other"] = max(0.0, busy_seconds() - machine - sum(used.values()))
        if hooks:
            hooks[1]()
        return used

    def measured(self) -> None:
        """The phases are over: what the gateway logged so far was logged while measuring."""
        self.log_measuring = LogErrors.of(self._log_lines())
        self.log_lines = len(self._log_lines())

    def _read_log(self) -> None:
        time.sleep(1.0)  # the sessions' close-down tasks
        self.log_closing = LogErrors.of(self._log_lines()[self.log_lines:])

    def _log_lines(self) -> list[str]:
        try:
            return self._server().log.read_text(errors="replace").splitlines()
        except OSError:
            return []

    def _server(self) -> ServerProcess:
        assert self.server is not None
        return self.server

    def _clients(self) -> ChatClients:
        assert self.clients is not None
        return self.clients

    def _check(self, counts: Counts, what: str, server: ServerProcess | None = None) -> None:
        if counts.errors:
            raise RuntimeError(f"{what}: {counts.errors} error replies or lost sessions; first: "
                               f"{counts.first_error}\n{(server or self._server()).log_tail()}")


def _read_line(process: subprocess.Popen[bytes], timeout: float, starts: str) -> str:
    """The child's next line starting with `starts` within `timeout` seconds."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.2)
        if ready:
            line = process.stdout.readline().decode()
            if not line:
                break
            if line.startswith(starts):
                return line
        elif process.poll() is not None:
            break
    raise RuntimeError(f"baseline: no line starting with {starts!r} (exit status {process.poll()}); see its log")


if __name__ == "__main__":
    cli.run(main)
