"""`run.py reset`: wipe the embedded data (DATA_DIR: PostgreSQL, Redis, the token secret, the
attachments, the console's history) for a fresh start; the key folder only when asked.

Keeping KEY_DIR is safe: its key-encryption key wraps the data keys of the database it was made
with; an empty database gets a new data key wrapped under whatever KEK is current (tested)."""

import json
import shutil
from pathlib import Path

from gateway.config import Config, key_dir
from storage.embedded import EmbeddedPostgres, EmbeddedRedis, _alive


class ResetError(RuntimeError):
    """A reset refused, with a one-line reason."""


def targets(config: Config, keys: bool) -> list[Path]:
    """The folders a reset deletes (those that exist)."""
    paths = [config.data_dir.absolute()]
    if keys and not config.kek:
        paths.append(key_dir(config))
    return [path for path in paths if path.exists()]


def users(data_dir: Path) -> list[int]:
    """Live processes holding the embedded PostgreSQL (gateways, `run.py` tools)."""
    try:
        pids = json.loads((data_dir.absolute() / "postgres" / ".handle_pids.json").read_text())
    except (OSError, ValueError):
        return []
    return sorted({pid for pid in pids if isinstance(pid, int) and _alive(pid)})


def stop_leftovers(data_dir: Path) -> None:
    """Stop servers a killed gateway left running on these folders (no process holds them)."""
    postgres = EmbeddedPostgres(data_dir.absolute() / "postgres")
    pid_file = postgres.directory / "postmaster.pid"
    try:
        running = _alive(int(pid_file.read_text().split()[0]))
    except (OSError, ValueError, IndexError):
        running = False
    if running:
        postgres.start()  # takes the leftover server over: the last handle's stop stops it
        postgres.stop()
    EmbeddedRedis._stop_leftover(data_dir.absolute() / "redis" / "redis.pid")


def reset(config: Config, keys: bool) -> list[Path]:
    """Delete the folders; the ones deleted. ResetError while a gateway runs on them."""
    holders = users(config.data_dir)
    if holders:
        raise ResetError(f"the embedded PostgreSQL in {config.data_dir} is in use by process "
                         f"{', '.join(map(str, holders))}: stop the gateway first")
    stop_leftovers(config.data_dir)
    deleted = targets(config, keys)
    for path in deleted:
        shutil.rmtree(path)
    return deleted
