"""The servers under test, each its own process: start, wait for /healthz, read its RSS and CPU, stop."""

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from bench.procfs import cpu_seconds, rss_bytes
from gateway.config import ENV
from storage.embedded import free_port

ROOT = Path(__file__).resolve().parent.parent
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


def bare_server(log: Path, cpus: set[int] | None) -> ServerProcess:
    port = free_port(HOST)
    argv = [sys.executable, "-m", "bench.bare", "--host", HOST, "--port", str(port)]
    return ServerProcess("bare", argv, port, log, cpus)


def gateway_server(log: Path, cpus: set[int] | None, *, database_url: str, redis_url: str, data_dir: Path,
                   secret: str, launcher: list[str] | None = None) -> ServerProcess:
    """`run.py serve` with one worker and the rate limit out of the way. `launcher` runs it under
    something else (the profiler)."""
    port = free_port(HOST)
    argv = [*(launcher or [sys.executable]), str(ROOT / "run.py"), "serve", "--host", HOST, "--port", str(port),
            "--workers", "1", "--database-url", database_url, "--redis-url", redis_url,
            "--data-dir", str(data_dir), "--secret", secret, "--log-level", "WARNING",
            "--rate-per-s", "1000000", "--rate-burst", "1000000", "--shutdown-grace-s", "2"]
    return ServerProcess("gateway", argv, port, log, cpus)
