"""Content-addressed blob storage behind a small interface (local folder now; S3 later).

Blobs are sealed on disk (storage.sealed) and named by the keyed hash of their content, so
neither the bytes nor a plain SHA-256 of them is stored. Blobs written before encryption
(`sealed` false in `attachments`) are plaintext named by SHA-256 until storage.backfill seals them."""

import asyncio
import hmac
import os
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path
from typing import Protocol

from storage.crypto import FieldCipher
from storage.sealed import HEADER, SealedWriter, header_key_id, read_chunks

MAC_PURPOSE = "attachments.content"


def _next(blocks: Iterator[bytes]) -> bytes | None:
    return next(blocks, None)


class BlobStore(Protocol):
    def writer(self, part: Path) -> SealedWriter:
        """A streaming writer that seals what it is given into the file `part`."""

    async def put_file(self, source: Path, name: str) -> None:
        """Move a finished upload in under its name (idempotent: same bytes, same blob)."""

    def chunks(self, name: str, sealed: bool = True) -> AsyncGenerator[bytes, None]:
        """The blob's plaintext, chunk by chunk; FileNotFoundError when absent, ValueError (or
        InvalidTag) instead of the last chunk when the file is not the blob its name says."""

    async def read(self, name: str, sealed: bool = True) -> bytes:
        """The blob's whole plaintext; FileNotFoundError when absent."""


class LocalBlobs:
    """`root/ab/cd/abcd…` files; writes are atomic renames."""

    def __init__(self, root: Path, cipher: FieldCipher) -> None:
        self.root = root
        self.cipher = cipher

    def path(self, name: str) -> Path:
        return self.root / name[:2] / name[2:4] / name

    def writer(self, part: Path) -> SealedWriter:
        return SealedWriter(part.open("wb"), self.cipher, self.cipher.mac(MAC_PURPOSE))

    async def put_file(self, source: Path, name: str) -> None:
        target = self.path(name)

        def move() -> None:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)

        await asyncio.to_thread(move)

    async def chunks(self, name: str, sealed: bool = True) -> AsyncGenerator[bytes, None]:
        """A sealed blob's chunks are each authenticated before they are given out, and the last
        one is held back until the keyed hash of the whole plaintext matched the name: a sealed
        file moved under another blob's name decrypts, but is never delivered whole."""
        file = await asyncio.to_thread(self.path(name).open, "rb")
        try:
            if not sealed:  # written before encryption: plaintext until the backfill seals it
                while block := await asyncio.to_thread(file.read, 1 << 16):
                    yield block
                return
            head = await asyncio.to_thread(file.read, HEADER.size)
            data_key = await self.cipher.key(header_key_id(head))
            plain, mac = read_chunks(file, data_key, head), self.cipher.mac(MAC_PURPOSE)
            chunk = await asyncio.to_thread(_next, plain)
            while chunk is not None:
                following = await asyncio.to_thread(_next, plain)
                mac.update(chunk)
                if following is None and not hmac.compare_digest(mac.hexdigest(), name):
                    raise ValueError(f"blob {name[:8]}… does not hold what its name says")
                yield chunk
                chunk = following
        finally:
            file.close()

    async def read(self, name: str, sealed: bool = True) -> bytes:
        """The whole plaintext, checked against its name like `chunks`."""
        return b"".join([block async for block in self.chunks(name, sealed)])
