"""Key-encryption keys (KEKs): RSA private keys kept apart from the database, in a folder of PEM
files (`kek-<id>.pem`, the newest is current) or given whole in the environment; and the two
rotations (a new data key; a new KEK that re-wraps every data key)."""

import base64
import binascii
import hashlib
import logging
import os
from pathlib import Path

import asyncpg
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

log = logging.getLogger(__name__)
OAEP = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
KEK_BITS = 3072


class KeyUnavailable(RuntimeError):
    """A data key this node cannot unwrap: its KEK is not where the node was told to look."""


def kid(key: rsa.RSAPrivateKey) -> str:
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()[:16]


def pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def parse(text: bytes, source: str) -> rsa.RSAPrivateKey:
    """An RSA private key from PEM, or from base64 of PEM (environment variables hold one line)."""
    if b"-----BEGIN" not in text:
        try:
            text = base64.b64decode(text, validate=False)
        except (binascii.Error, ValueError):
            raise KeyUnavailable(f"{source} is neither a PEM private key nor base64 of one") from None
    try:
        key = serialization.load_pem_private_key(text.strip(), password=None)
    except (ValueError, TypeError):
        raise KeyUnavailable(f"{source} is not a readable unencrypted PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KeyUnavailable(f"{source} is not an RSA private key")
    return key


class KeyRing:
    """The KEKs this node holds. `source` says where they come from, in the words of the setting
    (e.g. "KEY_DIR=/etc/dispatch/keys"), for one-line errors."""

    def __init__(self, source: str, directory: Path | None = None,
                 keys: dict[str, rsa.RSAPrivateKey] | None = None) -> None:
        self.source = source
        self.directory = directory
        self.keys: dict[str, rsa.RSAPrivateKey] = dict(keys or {})
        self.current = next(reversed(self.keys), "")
        if directory is not None:
            self.reload()

    @classmethod
    def from_pem(cls, text: bytes, source: str) -> "KeyRing":
        key = parse(text, source)
        return cls(source, keys={kid(key): key})

    def reload(self) -> None:
        """Read the folder again (another process may have rotated the KEK)."""
        if self.directory is None or not self.directory.is_dir():
            return
        if self.directory.stat().st_mode & 0o077 and not self.keys:
            log.warning("%s can be read by other users of this machine: chmod 700 it", self.source)
        files = sorted(self.directory.glob("kek-*.pem"), key=lambda p: (p.stat().st_mtime_ns, p.name))
        for path in files:  # oldest first: the last one read is the current KEK
            key = parse(path.read_bytes(), f"{path} ({self.source})")
            self.current = kid(key)
            self.keys[self.current] = key

    def get(self, kek_id: str) -> rsa.RSAPrivateKey:
        if kek_id not in self.keys:
            self.reload()
        key = self.keys.get(kek_id)
        if key is None:
            raise KeyUnavailable(f"key-encryption key {kek_id} is not in {self.source}")
        return key

    def wrap(self, key: bytes) -> bytes:
        return self.keys[self.current].public_key().encrypt(key, OAEP)

    def unwrap(self, key_id: int, kek_id: str, wrapped: bytes) -> bytes:
        try:
            return self.get(kek_id).decrypt(wrapped, OAEP)
        except ValueError:
            raise KeyUnavailable(f"data key {key_id} does not unwrap with key-encryption key {kek_id} "
                                 f"from {self.source}") from None

    def add(self) -> rsa.RSAPrivateKey:
        """A new KEK, current from now on; written (0600) into the folder when there is one."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=KEK_BITS)
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            path = self.directory / f"kek-{kid(key)}.pem"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(pem(key))
        self.current = kid(key)
        self.keys[self.current] = key
        return key

    def retire(self, keep: set[str]) -> list[Path]:
        """Delete the folder's KEK files whose id is not in `keep`; returns the paths removed."""
        removed = []
        for path in sorted(self.directory.glob("kek-*.pem")) if self.directory else []:
            if path.stem.removeprefix("kek-") not in keep:
                path.unlink()
                removed.append(path)
        return removed


# One advisory lock serializes every change to data_keys (a new data key, the index key, a
# re-wrap): a key added under the old KEK while a rotation re-wraps would be lost with that KEK.
KEYS_LOCK = 0x6B657973  # "keys"
ROTATION_LOCK = 0x726F7461  # "rota": one `run.py keys rotate` at a time, around its KEYS_LOCK steps


async def add_key(db: asyncpg.Pool, ring: KeyRing, raw: bytes, purpose: str = "data") -> int | None:
    """Store a key wrapped by the ring's current KEK; None when an index key exists already.
    Refused (KeyUnavailable) when data keys have moved to a KEK this ring lacks meanwhile: the
    new key would be wrapped by a KEK that rotation retires."""
    async with db.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", KEYS_LOCK)
        if await conn.fetchval("SELECT count(*) FROM data_keys WHERE kek_id <> ALL($1::text[])", list(ring.keys)):
            raise KeyUnavailable(f"the data keys were re-wrapped under a key-encryption key not in {ring.source}: "
                                 "restart with the new one")
        key_id: int | None = await conn.fetchval(
            "INSERT INTO data_keys (kek_id, wrapped, purpose) VALUES ($1, $2, $3)"
            " ON CONFLICT (purpose) WHERE purpose = 'index' DO NOTHING RETURNING id",
            ring.current, ring.wrap(raw), purpose)
        return key_id


async def new_data_key(db: asyncpg.Pool, ring: KeyRing) -> int:
    """Create a data key wrapped by the current KEK: gateways write with the newest data key."""
    key_id = await add_key(db, ring, AESGCM.generate_key(bit_length=256))
    assert key_id is not None
    return key_id


async def kek_ids_in_use(db: asyncpg.Pool) -> set[str]:
    return {r["kek_id"] for r in await db.fetch("SELECT DISTINCT kek_id FROM data_keys")}


async def rewrap(db: asyncpg.Pool, ring: KeyRing) -> int:
    """Re-wrap every data key under the ring's current KEK, in one transaction; returns how many
    changed. Values never change: they are sealed by the data keys, not by the KEK."""
    changed = 0
    async with db.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", KEYS_LOCK)
        for row in await conn.fetch("SELECT id, kek_id, wrapped FROM data_keys ORDER BY id FOR UPDATE"):
            if row["kek_id"] == ring.current:
                continue
            raw = ring.unwrap(row["id"], row["kek_id"], row["wrapped"])
            await conn.execute("UPDATE data_keys SET kek_id = $2, wrapped = $3 WHERE id = $1",
                               row["id"], ring.current, ring.wrap(raw))
            changed += 1
    return changed
