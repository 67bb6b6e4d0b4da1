"""Streamed AES-256-GCM for files (attachments): written and read in 64 KiB chunks, never whole.

Each file has its own random key, wrapped by the current data key in the header. Chunk i is
sealed with nonce = prefix(8) | i(4) and associated data = header | i(8) | last(1): chunks cannot
be reordered, dropped, moved to another file, and a file cut at a chunk boundary does not verify
(its new last chunk was sealed as not last).

    file   = header | chunk* ; every chunk but the last holds exactly CHUNK plaintext bytes
    header = MAGIC(4) | data_key_id(4) | key_nonce(12) | wrapped_file_key(48) | prefix(8)
"""

import hmac
import os
import struct
from collections.abc import Iterator
from typing import IO

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from storage.crypto import FieldCipher

MAGIC = b"DGB1"
CHUNK = 64 * 1024
TAG = 16
HEADER = struct.Struct(">4sI12s48s8s")
KEY_AD = b"dispatch blob file key"


def _chunk_nonce(prefix: bytes, index: int) -> bytes:
    return prefix + index.to_bytes(4, "big")


def _chunk_ad(header: bytes, index: int, last: bool) -> bytes:
    return header + index.to_bytes(8, "big") + (b"\x01" if last else b"\x00")


class SealedWriter:
    """Encrypts what is written into `file` chunk by chunk, and hashes the plaintext with the
    keyed hash `mac` (the blob's address: equal contents dedup without a plain SHA-256 on disk)."""

    def __init__(self, file: IO[bytes], cipher: FieldCipher, mac: "hmac.HMAC") -> None:
        self._file = file
        self._mac = mac
        key_id, data_key = cipher.current
        file_key, key_nonce, self._prefix = AESGCM.generate_key(bit_length=256), os.urandom(12), os.urandom(8)
        self._header = HEADER.pack(MAGIC, key_id, key_nonce, data_key.encrypt(key_nonce, file_key, KEY_AD),
                                   self._prefix)
        self._aead = AESGCM(file_key)
        self._buffer = bytearray()
        self._index = 0
        file.write(self._header)

    def _emit(self, data: bytes, last: bool) -> None:
        if self._index >= 2**32:
            raise ValueError("file too large for its nonce space")
        nonce = _chunk_nonce(self._prefix, self._index)
        self._file.write(self._aead.encrypt(nonce, data, _chunk_ad(self._header, self._index, last)))
        self._index += 1

    def write(self, data: bytes) -> None:
        self._mac.update(data)
        self._buffer += data
        while len(self._buffer) > CHUNK:  # keep the tail: only finish() knows which chunk is last
            self._emit(bytes(self._buffer[:CHUNK]), last=False)
            del self._buffer[:CHUNK]

    def close(self) -> None:
        """Abandon the file (the caller removes it)."""
        self._file.close()

    def finish(self) -> str:
        """Seal the last chunk, close the file; the keyed hash of the plaintext (hex)."""
        self._emit(bytes(self._buffer), last=True)
        self._buffer.clear()
        self._file.close()
        return self._mac.hexdigest()


def header_key_id(header: bytes) -> int:
    magic, key_id, *_ = HEADER.unpack(header)
    if magic != MAGIC:
        raise ValueError("not a sealed file")
    key_id_: int = key_id
    return key_id_


def read_chunks(file: IO[bytes], data_key: AESGCM, header: bytes | None = None) -> Iterator[bytes]:
    """The plaintext, chunk by chunk (blocking reads: run it in a thread); InvalidTag when the
    file was altered, cut or assembled from other files. `header`: what the caller read of the
    file already (to find its data key); the file is read once, front to back, never sought."""
    header = header or file.read(HEADER.size)
    _, _, key_nonce, wrapped, prefix = HEADER.unpack(header)
    aead = AESGCM(data_key.decrypt(key_nonce, wrapped, KEY_AD))
    index, block = 0, file.read(CHUNK + TAG)
    while True:
        following = file.read(CHUNK + TAG) if len(block) == CHUNK + TAG else b""
        last = not following
        yield aead.decrypt(_chunk_nonce(prefix, index), block, _chunk_ad(header, index, last))
        if last:
            return
        index, block = index + 1, following
