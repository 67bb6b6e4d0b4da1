"""Gateways as real OS processes (`python run.py serve ...`), for multi-process and shutdown tests."""

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from types import TracebackType

from storage.embedded import free_port, redis_binary

ROOT = Path(__file__).resolve().parent.parent


def healthz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            status: int = response.status
            return status
    except OSError:
        return 0


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (from /proc)."""
    found = []
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            if proc.name.isdigit() and int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(proc.name))
    return found


def workers_of(pid: int) -> list[int]:
    """Its multiprocessing workers (`spawn_main`; not the resource tracker, which exits by itself)."""
    found = []
    for child in children(pid):
        with contextlib.suppress(OSError):
            if b"spawn_main" in (Path("/proc") / str(child) / "cmdline").read_bytes():
                found.append(child)
    return found


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its new parent to reap it counts as gone)."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def gone(pids: list[int], timeout: float = 30) -> list[int]:
    """Wait until none of `pids` runs; those still running after `timeout`."""
    deadline = time.monotonic() + timeout
    while (left := [pid for pid in pids if alive(pid)]) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return left


class GatewayProcess:
    def __init__(self, *args: str, env: dict[str, str] | None = None, port: int | None = None) -> None:
        self.port = port or free_port()
        self.http_port = free_port()
        self.args = ["run.py", "serve", "--port", str(self.port), "--http-port", str(self.http_port), *args]
        self.env = {**os.environ, "LOG_LEVEL": "WARNING", **(env or {})}
        self.process: asyncio.subprocess.Process | None = None
        self.output = b""  # what it wrote so far (read as it comes, so a chatty node never blocks on the pipe)
        self._pump: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def start(self, timeout: float = 60) -> "GatewayProcess":
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, *self.args, cwd=ROOT, env=self.env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        self._pump = asyncio.create_task(self._read())
        async with asyncio.timeout(timeout):
            while await asyncio.to_thread(healthz, self.port) != 200:
                if self.process.returncode is not None:
                    raise RuntimeError(f"gateway exited: {await self.read_output()}")
                await asyncio.sleep(0.1)
        return self

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        while chunk := await self.process.stdout.read(65536):
            self.output += chunk

    async def read_output(self) -> str:
        """Everything it wrote, once it has exited (or closed its output)."""
        assert self._pump is not None
        await self._pump
        return self.output.decode(errors="replace")

    @property
    def log(self) -> str:
        """What it wrote so far."""
        return self.output.decode(errors="replace")

    def kill(self) -> None:
        """SIGKILL: no chance to close a session, leave presence or release a lease."""
        assert self.process is not None
        self.process.kill()

    async def terminate(self, timeout: float = 30) -> int:
        """SIGTERM, then wait for the exit code."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(timeout):
            await self.read_output()
            return await self.process.wait()

    async def __aenter__(self) -> "GatewayProcess":
        return await self.start()

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        if self._pump is not None:
            await self._pump


async def run_command(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> tuple[int, str]:
    """`python run.py ARGS...` to its end: exit status and output (stdout and stderr together)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "run.py", *args, cwd=ROOT, env=env if env is not None else dict(os.environ),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


class RedisProcess:
    """A redis-server of the test's own on a fixed port, to kill and start again (empty, as if its
    machine were replaced, or with its append-only file)."""

    def __init__(self, root: Path, *args: str) -> None:
        self.root, self.port, self.args = root, free_port(), args
        self.process: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self, *, empty: bool = False) -> None:
        directory = self.root / (uuid.uuid4().hex if empty else "data")
        directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [redis_binary(), "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(directory),
             "--appendonly", "yes", "--save", "", "--daemonize", "no", *self.args], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()


class SentinelProcess:
    """A Redis Sentinel (redis-server --sentinel) watching one master, quick to fail over."""

    def __init__(self, root: Path, master: RedisProcess, name: str = "mymaster") -> None:
        self.port, self.name = free_port(), name
        root.mkdir(parents=True, exist_ok=True)
        self.conf = root / f"sentinel-{self.port}.conf"
        self.conf.write_text(f"port {self.port}\nbind 127.0.0.1\ndir {root}\n"
                             f"sentinel monitor {name} 127.0.0.1 {master.port} 1\n"
                             f"sentinel down-after-milliseconds {name} 1000\n"
                             f"sentinel failover-timeout {name} 5000\n")
        self.process = subprocess.Popen([redis_binary(), str(self.conf), "--sentinel"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def master(self) -> int | None:
        """The port of the master this Sentinel names now."""
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
            s.sendall(f"SENTINEL get-master-addr-by-name {self.name}\r\n".encode())
            reply = s.recv(256).split(b"\r\n")
            if len(reply) >= 5 and reply[4].isdigit():
                return int(reply[4])
        return None

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()
