"""The servers under test, each its own process: start, wait for /healthz, read its RSS and CPU, stop.
Also what every bench needs around them: embedded PostgreSQL and Redis in a scratch folder, the
cores for servers and clients, the sessions' hello frames, and a run that stops on SIGTERM or when
it outlives its budget as it does on Ctrl-C."""

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import msgspec
from prometheus_client.parser import text_string_to_metric_families

from bench.procfs import cpu_seconds, rss_bytes
from gateway.app import token_issuer
from gateway.config import ENV, Config
from handlers.context import Role
from protocol.auth import Auth
from storage.embedded import Embedded, free_port

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret-0123456789-abcdefghijklmnopqrstuvwxyz"  # the benches' gateways and their minted tokens
MAX_SESSIONS = 18_000  # sessions one server process may hold here: its descriptors are capped at 20,000
HOST = "127.0.0.1"


class ServerProcess:
    """`with ServerProcess("bare", argv, port, log) as server:` a server answering /healthz."""

    def __init__(self, name: str, argv: list[str], port: int, log: Path, cpus: set[int] | None = None) -> None:
        self.name = name
        self.argv = argv
        self.port = port
        self.log = log
        self.cpus = cpus
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ws://{HOST}:{self.port}/ws"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def rss(self) -> int:
        return rss_bytes(self.pid)

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def __enter__(self) -> "ServerProcess":
        env = {k: v for k, v in os.environ.items() if k not in ENV}  # only the flags configure it
        env["PYTHONUNBUFFERED"] = "1"
        with self.log.open("ab") as log:
            # Its own session: a Ctrl-C reaches the bench, which stops the server in order.
            self.process = subprocess.Popen(self.argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            if self.cpus:
                os.sched_setaffinity(self.pid, self.cpus)
            self._wait_healthy(60.0)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://{HOST}:{self.port}/healthz"
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} server exited with {self.process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError, urllib.error.URLError):
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        return
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} server: /healthz not 200 within {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM (graceful shutdown), then SIGKILL; the whole process group it leads."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


def bare_server(log: Path, cpus: set[int] | None, write: str = "transport") -> ServerProcess:
    """The bare baseline, writing replies as the gateway does, or (`write="send"`, named
    `bare-send`) each with `await ws.send()` as it did before."""
    port = free_port(HOST)
    argv = [sys.executable, "-m", "bench.bare", "--host", HOST, "--port", str(port), "--write", write]
    return ServerProcess("bare" if write == "transport" else "bare-send", argv, port, log, cpus)


def gateway_server(log: Path, cpus: set[int] | None, *, database_url: str, redis_url: str, data_dir: Path,
                   secret: str, launcher: list[str] | None = None, flags: tuple[str, ...] = ()) -> ServerProcess:
    """`run.py serve` with one worker and the rate limit out of the way, plus `flags`. `launcher`
    runs it under something else (the profiler)."""
    port = free_port(HOST)
    argv = [*(launcher or [sys.executable]), str(ROOT / "run.py"), "serve", "--host", HOST, "--port", str(port),
            "--workers", "1", "--http-port", "0", "--database-url", database_url, "--redis-url", redis_url,
            "--data-dir", str(data_dir), "--secret", secret, "--log-level", "WARNING",
            "--rate-per-s", "1000000", "--rate-burst", "1000000", "--shutdown-grace-s", "2", *flags]
    return ServerProcess("gateway", argv, port, log, cpus)


@dataclass(frozen=True)
class Backends:
    root: Path  # the scratch folder: logs, the gateway's data dir
    database_url: str
    redis_url: str
    redis_pid: int


@contextlib.contextmanager
def backends(prefix: str) -> Iterator[Backends]:
    """A scratch folder with embedded PostgreSQL and Redis running, all removed afterwards."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        root = Path(tmp)
        print(f"starting embedded PostgreSQL and Redis under {root} ...", flush=True)
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")  # pgserver's, harmless
        embedded = Embedded(root / "servers")
        try:
            database_url, redis_url = embedded.start()
            assert database_url and redis_url and embedded.redis.process is not None
            yield Backends(root, database_url, redis_url, embedded.redis.process.pid)
        finally:
            embedded.stop()


def postmaster_pid(b: Backends) -> int:
    """The pid of the embedded PostgreSQL's postmaster (the first line of its postmaster.pid)."""
    for pidfile in b.root.glob("**/postmaster.pid"):
        return int(pidfile.read_text().split()[0])
    raise RuntimeError(f"no postmaster.pid under {b.root}")


def cores(pin: bool) -> tuple[set[int] | None, set[int] | None]:
    """(the server's CPUs, the clients'): the last one for the server, the others for the clients;
    None, None when not pinning (or with a single CPU)."""
    cpus = sorted(os.sched_getaffinity(0))
    if not pin or len(cpus) < 2:
        return None, None
    return {cpus[-1]}, set(cpus[:-1])


def hellos(config: Config, count: int, role: Role = "technician") -> tuple[list[str], list[bytes]]:
    """One `auth` frame per session, each for its own user, as real apps would connect: (the users'
    ids, the frames)."""
    issuer = token_issuer(config)
    encode = msgspec.json.Encoder().encode
    users = [str(uuid.uuid4()) for _ in range(count)]
    return users, [encode(Auth(id="auth", token=issuer.mint(user, role)[0])) for user in users]


@contextlib.contextmanager
def stopped_by_signals(budget_s: int) -> Iterator[None]:
    """SIGTERM, and the run outliving its time budget, unwind like Ctrl-C: every `finally` and
    `with` above stops what it started."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    def overdue(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError(f"the bench ran past its {budget_s} s budget")

    previous = signal.signal(signal.SIGTERM, interrupt), signal.signal(signal.SIGALRM, overdue)
    signal.alarm(budget_s)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGALRM, previous[1])


def delivery_received(http_port: int) -> tuple[float, float]:
    """What the node has received from other nodes for delivery to many users: (bytes on its node
    and the multicast channel, recipients decoded), from its /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    got, decoded = 0.0, 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "gateway_delivery_bytes_received_total" and sample.labels["channel"] in (
                    "node", "multicast"):
                got += sample.value
            elif sample.name == "gateway_delivery_recipients_decoded_total":
                decoded += sample.value
    return got, decoded
