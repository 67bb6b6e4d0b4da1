"""Content-addressed blob storage behind a small interface (local folder now; S3 later)."""

import asyncio
import os
from pathlib import Path
from typing import Protocol


class BlobStore(Protocol):
    async def put_file(self, source: Path, sha256: str) -> None:
        """Move a finished upload in under its hash (idempotent: same bytes, same blob)."""

    async def read(self, sha256: str) -> bytes:
        """The blob's bytes; FileNotFoundError when absent."""


class LocalBlobs:
    """`root/ab/cd/abcd…` files; writes are atomic renames."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256[2:4] / sha256

    async def put_file(self, source: Path, sha256: str) -> None:
        target = self.path(sha256)

        def move() -> None:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)

        await asyncio.to_thread(move)

    async def read(self, sha256: str) -> bytes:
        return await asyncio.to_thread(self.path(sha256).read_bytes)
