"""Envelope encryption of personal fields (phone numbers, addresses, bank details).

Each value is sealed with AES-256-GCM under a data key; data keys are stored in PostgreSQL
wrapped with an RSA-OAEP key-encryption key (KEK) kept outside the database. A sealed value
carries the id of its data key, so KEKs and data keys can rotate while old values stay readable.
The associated data binds a value to its place (table, column, row): it cannot be copied to
another row and decrypted there.

    blob = version(1) | data_key_id(4, big-endian) | nonce(12) | ciphertext+tag
"""

import hashlib
import os
import struct
from datetime import timedelta
from pathlib import Path

import asyncpg
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = 1
HEADER = struct.Struct(">BI")
NONCE_LEN = 12
DATA_KEY_MAX_AGE = timedelta(days=30)
OAEP = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


class KeyRing:
    """RSA key-encryption keys, one PEM file each (`kek-*.pem`); the newest file is current."""

    def __init__(self, keys: dict[str, rsa.RSAPrivateKey], current: str) -> None:
        self.keys = keys
        self.current = current

    @staticmethod
    def kid(key: rsa.RSAPrivateKey) -> str:
        der = key.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
        return hashlib.sha256(der).hexdigest()[:16]

    @classmethod
    def load_or_create(cls, directory: Path) -> "KeyRing":
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        files = sorted(directory.glob("kek-*.pem"), key=lambda p: p.stat().st_mtime)
        if not files:
            key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
            path = directory / f"kek-{cls.kid(key)}.pem"
            path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
            path.chmod(0o600)
            files = [path]
        keys: dict[str, rsa.RSAPrivateKey] = {}
        current = ""
        for path in files:  # oldest first: the last one read is the current KEK
            loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(loaded, rsa.RSAPrivateKey):
                raise ValueError(f"{path} is not an RSA private key")
            current = cls.kid(loaded)
            keys[current] = loaded
        return cls(keys, current)


class FieldCipher:
    def __init__(self, db: asyncpg.Pool, keyring: KeyRing) -> None:
        self._db = db
        self._keyring = keyring
        self._data_keys: dict[int, AESGCM] = {}
        self._current: tuple[int, AESGCM] | None = None

    async def start(self) -> None:
        """Use the current KEK's newest data key, or create one when there is none young enough."""
        row = await self._db.fetchrow(
            "SELECT id, wrapped FROM data_keys WHERE kek_id = $1 AND created_at > now() - $2::interval"
            " ORDER BY id DESC LIMIT 1", self._keyring.current, DATA_KEY_MAX_AGE)
        if row is None:
            key = AESGCM.generate_key(bit_length=256)
            wrapped = self._keyring.keys[self._keyring.current].public_key().encrypt(key, OAEP)
            key_id = await self._db.fetchval(
                "INSERT INTO data_keys (kek_id, wrapped) VALUES ($1, $2) RETURNING id",
                self._keyring.current, wrapped)
            aead = AESGCM(key)
        else:
            key_id, aead = row["id"], self._unwrap(self._keyring.current, row["wrapped"])
        self._data_keys[key_id] = aead
        self._current = (key_id, aead)

    def _unwrap(self, kek_id: str, wrapped: bytes) -> AESGCM:
        kek = self._keyring.keys.get(kek_id)
        if kek is None:
            raise LookupError(f"key-encryption key {kek_id} is not in the key ring")
        return AESGCM(kek.decrypt(wrapped, OAEP))

    def encrypt(self, plaintext: str, context: str) -> bytes:
        assert self._current is not None, "FieldCipher.start() was not awaited"
        key_id, aead = self._current
        nonce = os.urandom(NONCE_LEN)
        return HEADER.pack(VERSION, key_id) + nonce + aead.encrypt(nonce, plaintext.encode(), context.encode())

    async def decrypt(self, blob: bytes, context: str) -> str:
        version, key_id = HEADER.unpack_from(blob)
        if version != VERSION:
            raise ValueError(f"unknown envelope version {version}")
        aead = self._data_keys.get(key_id)
        if aead is None:
            row = await self._db.fetchrow("SELECT kek_id, wrapped FROM data_keys WHERE id = $1", key_id)
            if row is None:
                raise LookupError(f"data key {key_id} not found")
            aead = self._data_keys[key_id] = self._unwrap(row["kek_id"], row["wrapped"])
        start = HEADER.size
        nonce = blob[start:start + NONCE_LEN]
        return aead.decrypt(nonce, blob[start + NONCE_LEN:], context.encode()).decode()
