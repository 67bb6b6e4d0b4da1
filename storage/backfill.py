"""Seal what was stored in plaintext before encryption at rest (migration 0006): users' e-mails
and names, chat texts, push texts, attachment files. In batches, each one short transaction that
locks only its rows, so it runs while gateways serve (every start runs it in the background, and
`run.py keys encrypt-existing` runs it by hand). Idempotent: a sealed row no longer matches."""

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from storage.blobs import LocalBlobs
from storage.chat import body_context
from storage.crypto import FieldCipher
from storage.users import sealed_fields

log = logging.getLogger(__name__)
BATCH = 500


@dataclass
class Sealed:
    users: int = 0
    chat_messages: int = 0
    push_outbox: int = 0
    blobs: int = 0


async def _users(db: asyncpg.Pool, cipher: FieldCipher, batch: int) -> int:
    async with db.acquire() as conn, conn.transaction():
        rows = await conn.fetch("SELECT id, email, name FROM users WHERE email IS NOT NULL OR name IS NOT NULL"
                                " LIMIT $1 FOR UPDATE", batch)
        sealed = [(r["id"], *sealed_fields(cipher, r["id"], r["email"], r["name"])) for r in rows]
        await conn.executemany(
            "UPDATE users SET email_idx = coalesce($2, email_idx), email_enc = coalesce($3, email_enc),"
            " name_enc = coalesce($4, name_enc), email = NULL, name = NULL WHERE id = $1", sealed)
    return len(rows)


async def _chat(db: asyncpg.Pool, cipher: FieldCipher, batch: int) -> int:
    async with db.acquire() as conn, conn.transaction():
        rows = await conn.fetch("SELECT order_id, seq, body FROM chat_messages WHERE body IS NOT NULL"
                                " LIMIT $1 FOR UPDATE", batch)
        await conn.execute(
            "UPDATE chat_messages m SET body_enc = t.b, body = NULL FROM unnest($1::uuid[], $2::bigint[], $3::bytea[])"
            " AS t(o, q, b) WHERE m.order_id = t.o AND m.seq = t.q",
            [r["order_id"] for r in rows], [r["seq"] for r in rows],
            [cipher.encrypt(r["body"], body_context(r["order_id"], r["seq"])) for r in rows])
    return len(rows)


async def _push(db: asyncpg.Pool, cipher: FieldCipher, batch: int) -> int:
    async with db.acquire() as conn, conn.transaction():
        rows = await conn.fetch("SELECT id, dedupe_key, title, body FROM push_outbox"
                                " WHERE title IS NOT NULL OR body IS NOT NULL LIMIT $1 FOR UPDATE", batch)
        await conn.executemany(
            "UPDATE push_outbox SET title_enc = $2, body_enc = $3, title = NULL, body = NULL WHERE id = $1",
            [(r["id"], cipher.encrypt(r["title"] or "", f"push_outbox.title:{r['dedupe_key']}"),
              cipher.encrypt(r["body"] or "", f"push_outbox.body:{r['dedupe_key']}")) for r in rows])
    return len(rows)


async def _blobs(db: asyncpg.Pool, blobs: LocalBlobs, batch: int) -> int:
    """Seal plaintext files under their keyed name; the rows move to it, then the plaintext goes."""
    def seal(old: Path, part: Path, sha256: bytes) -> str | None:
        if not old.exists():
            return None
        sink, digest = blobs.writer(part), hashlib.sha256()
        with old.open("rb") as source:
            while block := source.read(1 << 16):
                sink.write(block)
                digest.update(block)
        if digest.digest() != sha256:  # not what the row says: left for a person to look at
            sink.close()
            part.unlink()
            return None
        return sink.finish()

    done, after = 0, b""
    # Keyset pages: a blob left unsealed (missing, or not matching its hash) is passed, not met again.
    while page := await db.fetch("SELECT DISTINCT sha256 FROM attachments WHERE NOT sealed AND sha256 > $2"
                                 " ORDER BY sha256 LIMIT $1", batch, after):
        after = page[-1]["sha256"]
        done += await _seal_page(db, blobs, page, seal)
    return done


async def _seal_page(db: asyncpg.Pool, blobs: LocalBlobs, page: list[asyncpg.Record],
                     seal: Callable[[Path, Path, bytes], str | None]) -> int:
    done = 0
    for row in page:
        old = blobs.path(row["sha256"].hex())
        async with db.acquire() as conn, conn.transaction():  # the row locks keep other processes off this blob
            if not await conn.fetch("SELECT id FROM attachments WHERE sha256 = $1 AND NOT sealed FOR UPDATE",
                                    row["sha256"]):
                continue  # another process sealed it meanwhile
            part = old.with_name(f"{old.name}.{uuid.uuid4().hex}.sealing")
            name = await asyncio.to_thread(seal, old, part, row["sha256"])
            if name is None:
                log.warning("attachment blob %s… is missing or does not match its hash; left unsealed",
                            row["sha256"].hex()[:8])
                continue
            await blobs.put_file(part, name)
            await conn.execute("UPDATE attachments SET sha256 = $2, sealed = true WHERE sha256 = $1 AND NOT sealed",
                               row["sha256"], bytes.fromhex(name))
        old.unlink(missing_ok=True)  # after the commit: readers of the old row retry with the new one
        done += 1
    return done


async def encrypt_existing(db: asyncpg.Pool, cipher: FieldCipher, blobs: LocalBlobs | None,
                           batch: int = BATCH) -> Sealed:
    """Seal every plaintext value left; returns how many rows (and blobs) were sealed."""
    total = Sealed()
    for name, step in (("users", _users), ("chat_messages", _chat), ("push_outbox", _push)):
        while count := await step(db, cipher, batch):
            setattr(total, name, getattr(total, name) + count)
    if blobs is not None:
        total.blobs = await _blobs(db, blobs, batch)
    if total != Sealed():
        log.info("sealed plaintext left from before encryption: %s", total)
    return total
