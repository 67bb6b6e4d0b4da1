"""Envelope encryption of personal fields (names, e-mails, phones, addresses, chat and push texts).

Each value is sealed with AES-256-GCM under a data key; data keys are stored in PostgreSQL
wrapped with an RSA-OAEP key-encryption key (KEK) kept outside the database (storage.keys). A
sealed value carries the id of its data key, so KEKs and data keys can rotate while old values
stay readable. The associated data binds a value to its place (table, column, row): it cannot be
copied to another row and decrypted there.

    blob = version(1) | data_key_id(4, big-endian) | nonce(12) | ciphertext+tag

Lookups that must not decrypt (login by e-mail, attachment dedup) use a blind index: HMAC-SHA256
under the index key, one more wrapped row of `data_keys` that never leaves memory unwrapped.
"""

import hashlib
import hmac
import logging
import os
import struct
from datetime import timedelta

import asyncpg
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from storage.keys import KeyRing, KeyUnavailable, add_key, new_data_key

log = logging.getLogger(__name__)
VERSION = 1
HEADER = struct.Struct(">BI")
NONCE_LEN = 12
DATA_KEY_MAX_AGE = timedelta(days=30)


def normalize_email(email: str) -> str:
    return email.strip().lower()


class FieldCipher:
    def __init__(self, db: asyncpg.Pool, keyring: KeyRing) -> None:
        self._db = db
        self.keyring = keyring
        self._data_keys: dict[int, AESGCM] = {}
        self._current: tuple[int, AESGCM] | None = None
        self._index_key = b""

    async def start(self) -> None:
        """Unwrap every data key now (a key this node cannot unwrap is a start failure, not an
        `internal` later), then write with the newest one, or a new one when it is too old.
        A ring with no KEK gets one generated, but only for a database that has no data key yet."""
        rows = await self._db.fetch("SELECT id, kek_id, wrapped, purpose FROM data_keys ORDER BY id")
        if not self.keyring.keys and not rows:
            self.keyring.add()
        if not self.keyring.keys:
            raise KeyUnavailable(f"no key-encryption key in {self.keyring.source}, but the database has "
                                 f"{len(rows)} data keys")
        for row in rows:
            raw = self.keyring.unwrap(row["id"], row["kek_id"], row["wrapped"])
            if row["purpose"] == "data":
                self._data_keys[row["id"]] = AESGCM(raw)
        self._index_key = await self._load_index_key()
        await self.refresh(create_if_older=DATA_KEY_MAX_AGE)

    async def _load_index_key(self) -> bytes:
        query = "SELECT id, kek_id, wrapped FROM data_keys WHERE purpose = 'index'"
        row = await self._db.fetchrow(query)
        if row is None:  # concurrent first starts: one insert wins, all read the winner
            await add_key(self._db, self.keyring, os.urandom(32), "index")
            row = await self._db.fetchrow(query)
        assert row is not None
        return self.keyring.unwrap(row["id"], row["kek_id"], row["wrapped"])

    async def refresh(self, create_if_older: timedelta | None = None) -> None:
        """Write with the newest data key (`run.py keys rotate` adds one while gateways run)."""
        row = await self._db.fetchrow(
            "SELECT id, created_at < now() - $1::interval AS old FROM data_keys WHERE purpose = 'data'"
            " ORDER BY id DESC LIMIT 1", create_if_older or timedelta(days=36500))
        if row is None or (create_if_older is not None and row["old"]):
            key_id = await new_data_key(self._db, self.keyring)
        else:
            key_id = row["id"]
        if self._current is not None and self._current[0] == key_id:
            return
        try:
            self._current = (key_id, await self.key(key_id))
        except KeyUnavailable as exc:
            if self._current is None:
                raise
            log.warning("still writing with data key %d: %s", self._current[0], exc)

    async def key(self, key_id: int) -> AESGCM:
        """A data key by id, fetched and unwrapped on first use (rotations by other processes)."""
        aead = self._data_keys.get(key_id)
        if aead is None:
            row = await self._db.fetchrow("SELECT kek_id, wrapped FROM data_keys WHERE id = $1 AND purpose = 'data'",
                                          key_id)
            if row is None:
                raise KeyUnavailable(f"data key {key_id} not found")
            aead = self._data_keys[key_id] = AESGCM(self.keyring.unwrap(key_id, row["kek_id"], row["wrapped"]))
        return aead

    @property
    def current(self) -> tuple[int, AESGCM]:
        assert self._current is not None, "FieldCipher.start() was not awaited"
        return self._current

    def seal(self, plaintext: bytes, context: str) -> bytes:
        key_id, aead = self.current
        nonce = os.urandom(NONCE_LEN)
        return HEADER.pack(VERSION, key_id) + nonce + aead.encrypt(nonce, plaintext, context.encode())

    def encrypt(self, plaintext: str, context: str) -> bytes:
        return self.seal(plaintext.encode(), context)

    async def open(self, blob: bytes, context: str) -> bytes:
        version, key_id = HEADER.unpack_from(blob)
        if version != VERSION:
            raise ValueError(f"unknown envelope version {version}")
        aead = await self.key(key_id)
        start = HEADER.size
        return aead.decrypt(blob[start:start + NONCE_LEN], blob[start + NONCE_LEN:], context.encode())

    async def decrypt(self, blob: bytes, context: str) -> str:
        return (await self.open(blob, context)).decode()

    async def reveal(self, blob: bytes | None, legacy: str | None, context: str) -> str | None:
        """A sealed column's value, or the plaintext column of a row not yet encrypted (backfill)."""
        return legacy if blob is None else await self.decrypt(blob, context)

    def mac(self, purpose: str) -> "hmac.HMAC":
        """A keyed hash for the blind index of `purpose` (one subkey per purpose)."""
        subkey = hmac.digest(self._index_key, purpose.encode(), hashlib.sha256)
        return hmac.new(subkey, digestmod=hashlib.sha256)

    def blind(self, purpose: str, value: str) -> bytes:
        h = self.mac(purpose)
        h.update(value.encode())
        return h.digest()

    def email_index(self, email: str) -> bytes:
        return self.blind("users.email", normalize_email(email))
