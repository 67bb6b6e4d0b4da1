"""Attachments (photos, short videos) uploaded in chunks over the session."""

from typing import Annotated, Literal

import msgspec

from protocol.bounds import INT64_MAX, LINE
from protocol.frames import Reply, Request

ContentType = Literal["image/jpeg", "image/png", "image/heic", "image/webp", "video/mp4", "video/quicktime"]
UploadId = Annotated[str, LINE, msgspec.Meta(min_length=1, max_length=64)]


class UploadStarted(Reply):
    upload_id: str
    chunk_bytes: int  # the largest `data` one `upload.chunk` may carry


class UploadBegin(Request, tag="upload.begin"):
    """Announce an upload: its declared type and exact size (capped by type: images 15 MB,
    videos 100 MB). The type is checked against the bytes at the end."""

    content_type: ContentType
    size: Annotated[int, msgspec.Meta(gt=0, le=INT64_MAX)]
    reply = UploadStarted


class ChunkAck(Reply):
    received: int


class UploadChunk(Request, tag="upload.chunk"):
    """The next piece of an upload, at byte `offset` (sequential). Fire-and-forget without `id`."""

    upload_id: UploadId
    offset: Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]
    data: bytes
    reply = ChunkAck
    silent_without_id = True


class Attachment(Reply):
    attachment_id: str
    content_type: str
    size: int
    url: str  # absolute, on the gateway's HTTP port: GET with the session token as a bearer token


class UploadEnd(Request, tag="upload.end"):
    """Finish an upload: the bytes are checked (size, type from their signature) and stored."""

    upload_id: UploadId
    reply = Attachment
