"""`run.py keys`: rotate the data key or the key-encryption key, seal plaintext left from before
encryption at rest. Each runs against the database while gateways serve."""

import asyncio
import os
from pathlib import Path

import asyncpg

from gateway.app import StartupError, start_cipher
from gateway.config import Config
from storage.backfill import encrypt_existing
from storage.blobs import LocalBlobs
from storage.db import connect_postgres
from storage.keys import ROTATION_LOCK, kek_ids_in_use, new_data_key, pem, rewrap
from storage.migrate import migrate


async def _pool(url: str) -> asyncpg.Pool:
    db = await asyncio.wait_for(connect_postgres(url, 2), 15)
    async with db.acquire() as conn:
        await migrate(conn)
    return db


async def rotate(config: Config, url: str, kek: bool = False, kek_out: Path | None = None) -> list[str]:
    """A new data key (gateways write with it from their next upkeep on), or with `kek` a new
    KEK that every data key is re-wrapped under; the lines to print. With the KEK given in the
    environment, the new one is written to `kek_out` (0600, a new file) before anything changes,
    so it is never only in a terminal."""
    db = await _pool(url)
    try:
        async with db.acquire() as lock:
            # A whole KEK rotation at a time (two at once would each retire the other's key).
            await lock.execute("SELECT pg_advisory_lock($1)", ROTATION_LOCK)
            try:
                return await _rotate(config, db, kek, kek_out)
            finally:
                await lock.execute("SELECT pg_advisory_unlock($1)", ROTATION_LOCK)
    finally:
        await db.close()


async def _rotate(config: Config, db: asyncpg.Pool, kek: bool, kek_out: Path | None) -> list[str]:
    cipher = await start_cipher(config, db)
    ring = cipher.keyring
    if not kek:
        key_id = await new_data_key(db, ring)
        return [f"data key {key_id} created: gateways write with it within SWEEP_INTERVAL_S; "
                "values sealed before stay readable"]
    if ring.directory is None and kek_out is None:
        raise StartupError("KEK is given in the environment: name a new file for the new key with --kek-out")
    old = ring.current
    key = ring.add()
    if kek_out is not None and ring.directory is None:
        fd = os.open(kek_out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pem(key))
    count = await rewrap(db, ring)
    lines = [f"key-encryption key {ring.current} replaces {old}: {count} data keys re-wrapped"]
    # Only KEKs no data key uses any more (a gateway's key added meanwhile was refused by add_key).
    lines += [f"removed {path}" for path in ring.retire(await kek_ids_in_use(db) | {ring.current})]
    if ring.directory is None:
        lines += [f"the new KEK is in {kek_out}: put it in the secret store as KEK, delete the file, then "
                  "restart the gateways"]
    return lines


async def seal_existing(config: Config, url: str) -> str:
    db = await _pool(url)
    try:
        cipher = await start_cipher(config, db)
        sealed = await encrypt_existing(db, cipher, LocalBlobs(Path(config.data_dir).absolute() / "blobs", cipher))
        return f"sealed {sealed}"
    finally:
        await db.close()

