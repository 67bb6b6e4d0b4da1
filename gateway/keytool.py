"""`run.py keys`: rotate the data key or the key-encryption key, seal plaintext left from before
encryption at rest. Each runs against the database while gateways serve."""

import asyncio
from pathlib import Path

import asyncpg

from gateway.app import start_cipher
from gateway.config import Config
from storage.backfill import encrypt_existing
from storage.blobs import LocalBlobs
from storage.db import connect_postgres
from storage.keys import new_data_key, pem, rewrap
from storage.migrate import migrate


async def _pool(url: str) -> asyncpg.Pool:
    db = await asyncio.wait_for(connect_postgres(url, 2), 15)
    async with db.acquire() as conn:
        await migrate(conn)
    return db


async def rotate(config: Config, url: str, kek: bool = False) -> list[str]:
    """A new data key (gateways write with it from their next upkeep on), or with `kek` a new
    KEK that every data key is re-wrapped under; the lines to print."""
    db = await _pool(url)
    try:
        cipher = await start_cipher(config, db)
        ring = cipher.keyring
        if not kek:
            key_id = await new_data_key(db, ring)
            return [f"data key {key_id} created: gateways write with it within SWEEP_INTERVAL_S; "
                    "values sealed before stay readable"]
        old = ring.current
        key = ring.add()
        count = await rewrap(db, ring)
        lines = [f"key-encryption key {ring.current} replaces {old}: {count} data keys re-wrapped"]
        lines += [f"removed {path}" for path in ring.retire({ring.current})]
        if ring.directory is None:
            lines += ["KEK is given in the environment: replace it with this key, then restart the gateways:",
                      pem(key).decode().strip()]
        return lines
    finally:
        await db.close()


async def seal_existing(config: Config, url: str) -> str:
    db = await _pool(url)
    try:
        cipher = await start_cipher(config, db)
        sealed = await encrypt_existing(db, cipher, LocalBlobs(Path(config.data_dir).absolute() / "blobs", cipher))
        return f"sealed {sealed}"
    finally:
        await db.close()

