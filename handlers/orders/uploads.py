"""Attachments: photos and short videos uploaded in chunks over the session, sealed on disk as
they arrive and stored by keyed content hash, fetched over HTTP, chunk by chunk, by those who may
see an order that uses them."""

import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from handlers.context import Context
from handlers.errors import N_, BadRequest, Conflict, NotFound, TooLarge
from handlers.orders.views import sight
from handlers.routing import ANY_ROLE, Router
from protocol.uploads import Attachment, ChunkAck, UploadBegin, UploadChunk, UploadEnd, UploadStarted
from storage.sealed import SealedWriter

router = Router()
CHUNK_BYTES = 32 * 1024  # base64 in JSON stays under the 64 KiB frame limit
MAX_BYTES = {"image": 15 * 1024 * 1024, "video": 100 * 1024 * 1024}
MAX_OPEN_UPLOADS = 4
HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1"}
MP4_BRANDS = {b"isom", b"iso2", b"iso4", b"iso5", b"iso6", b"mp41", b"mp42", b"avc1", b"M4V ", b"dash"}


def sniff(head: bytes) -> str | None:
    """The content type the bytes' signature says, whatever the client claimed."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in HEIF_BRANDS:
            return "image/heic"
        if brand == b"qt  ":
            return "video/quicktime"
        if brand in MP4_BRANDS:
            return "video/mp4"
    return None


@dataclass
class Upload:
    path: Path
    sink: SealedWriter
    size: int
    content_type: str
    received: int = 0
    head: bytes = b""

    def discard(self) -> None:
        self.sink.close()
        self.path.unlink(missing_ok=True)


def open_uploads(ctx: Context) -> dict[str, Upload]:
    uploads: dict[str, Upload] | None = ctx.memo.get("uploads")
    if uploads is None:
        uploads = ctx.memo["uploads"] = {}

        def discard_all() -> None:
            for upload in uploads.values():
                upload.discard()

        ctx.on_close(discard_all)
    return uploads


@router.route(UploadBegin, roles=ANY_ROLE)
async def begin(ctx: Context, req: UploadBegin) -> UploadStarted:
    limit = MAX_BYTES[req.content_type.split("/")[0]]
    if req.size > limit:
        raise TooLarge(N_("Files of this type may be at most {limit} bytes."), limit=limit)
    uploads = open_uploads(ctx)
    if len(uploads) >= MAX_OPEN_UPLOADS:
        raise Conflict(N_("Finish an upload before starting another."))
    upload_id = uuid.uuid4().hex
    folder = Path(ctx.services.order_rules.upload_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{upload_id}.part"
    uploads[upload_id] = Upload(path, ctx.services.blobs.writer(path), req.size, req.content_type)
    return UploadStarted(upload_id=upload_id, chunk_bytes=CHUNK_BYTES)


def _upload(ctx: Context, upload_id: str) -> Upload:
    upload = open_uploads(ctx).get(upload_id)
    if upload is None:
        raise NotFound(N_("No such upload in this session."))
    return upload


@router.route(UploadChunk, roles=ANY_ROLE, logged=False)
async def chunk(ctx: Context, req: UploadChunk) -> ChunkAck:
    upload = _upload(ctx, req.upload_id)
    if req.offset != upload.received:
        raise Conflict(N_("Expected the chunk at offset {offset}."), offset=upload.received,
                       current_state=str(upload.received))
    if len(req.data) > CHUNK_BYTES or upload.received + len(req.data) > upload.size:
        open_uploads(ctx).pop(req.upload_id).discard()
        raise TooLarge(N_("The upload is larger than announced."), limit=upload.size)
    upload.sink.write(req.data)
    if len(upload.head) < 16:
        upload.head = (upload.head + req.data)[:16]
    upload.received += len(req.data)
    return ChunkAck(received=upload.received)


@router.route(UploadEnd, roles=ANY_ROLE)
async def end(ctx: Context, req: UploadEnd) -> Attachment:
    assert ctx.identity is not None
    upload = open_uploads(ctx).pop(req.upload_id, None)
    if upload is None:
        raise NotFound(N_("No such upload in this session."))
    try:
        name = upload.sink.finish()
        if upload.received != upload.size:
            raise BadRequest(N_("The upload is incomplete: {received} of {size} bytes."),
                             received=upload.received, size=upload.size)
        if sniff(upload.head) != upload.content_type:
            raise BadRequest(N_("The file is not a valid {content_type}."), content_type=upload.content_type)
        await ctx.services.blobs.put_file(upload.path, name)
    finally:
        upload.path.unlink(missing_ok=True)
    attachment_id = uuid.uuid4()
    await ctx.services.db.execute(
        "INSERT INTO attachments (id, owner_id, sha256, content_type, size, sealed) VALUES ($1, $2, $3, $4, $5, true)",
        attachment_id, ctx.identity.user_id, bytes.fromhex(name), upload.content_type, upload.size)
    return Attachment(attachment_id=str(attachment_id), content_type=upload.content_type, size=upload.size,
                      url=ctx.services.public_url.to(f"/attachments/{attachment_id}"))


@dataclass(frozen=True, slots=True)
class Download:
    """An attachment opened for reading: its plaintext, chunk by chunk (close `chunks` when it is
    not read to the end)."""

    attachment_id: str
    content_type: str
    size: int
    chunks: AsyncGenerator[bytes, None]


async def download(ctx: Context, attachment_id: str) -> Download | None:
    """The attachment if the caller may see it (its owner, or anyone who may see an order that
    uses it), opened: its first chunk is read already, so a missing file fails here, before
    anything of a response is sent."""
    who = ctx.identity
    assert who is not None
    try:
        aid = uuid.UUID(attachment_id)
    except ValueError:
        return None
    db = ctx.services.db
    query = "SELECT id, sha256, content_type, size, owner_id, sealed FROM attachments WHERE id = $1"
    row = await db.fetchrow(query, aid)
    if row is None:
        return None
    if row["owner_id"] != who.user_id:
        using = await db.fetch("SELECT * FROM orders WHERE $1 = ANY(attachments) OR $1 = ANY(completion_attachments)",
                               aid)
        if not any([await sight(ctx, who, order) for order in using]):
            return None
    try:
        return await _opened(ctx, row)
    except FileNotFoundError:
        if row["sealed"]:
            raise
        row = await db.fetchrow(query, aid)  # the backfill sealed it meanwhile, under a new name
        assert row is not None
        return await _opened(ctx, row)


async def _opened(ctx: Context, row: asyncpg.Record) -> Download:
    chunks = ctx.services.blobs.chunks(row["sha256"].hex(), row["sealed"])
    first = await anext(chunks, b"")
    return Download(str(row["id"]), row["content_type"], row["size"], _resumed(first, chunks))


async def _resumed(first: bytes, rest: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
    try:
        yield first
        async for chunk in rest:
            yield chunk
    finally:
        await rest.aclose()
