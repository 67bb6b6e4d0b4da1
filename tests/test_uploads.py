"""Attachments: chunked uploads checked by their bytes, stored by hash, fetched by those who may,
streamed from the HTTP port as they are decrypted."""

import asyncio
import contextlib
import hashlib
import os
import threading
import urllib.error
import urllib.request

import aiohttp
import pytest

from protocol.client import ErrorReply
from protocol.orders import OrderAccept, OrderComplete, OrderDepart, OrderGet, OrderStart
from protocol.uploads import Attachment, UploadBegin, UploadChunk, UploadEnd
from storage.sealed import CHUNK, HEADER, TAG
from tests.world import order_at, spot, technician

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 300  # ~77 KB: three chunks
JPEG = b"\xff\xd8\xff\xe0" + b"\x00\x10JFIF" + b"\x11" * 1000
MP4 = b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 5000
HEIC = b"\x00\x00\x00\x18ftypheic" + b"\x00" * 500


async def upload_for(client, data: bytes, content_type: str, declared: int | None = None) -> Attachment:
    started = await client.request(UploadBegin(content_type=content_type, size=declared or len(data)))
    step = started.chunk_bytes
    for offset in range(0, len(data), step):
        await client.request(UploadChunk(upload_id=started.upload_id, offset=offset, data=data[offset:offset + step]))
    return await client.request(UploadEnd(upload_id=started.upload_id))


async def upload(client, data: bytes, content_type: str, declared: int | None = None) -> str:
    return (await upload_for(client, data, content_type, declared)).attachment_id


def fetch(gw, attachment_id: str, token: str | None, port: int | None = None) -> tuple[int, bytes, str]:
    """GET the attachment from the HTTP port (or `port`; urllib follows redirects)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port or gw.http_port}/attachments/{attachment_id}")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, r.read(), r.headers["Content-Type"]
    except urllib.error.HTTPError as exc:
        return exc.code, b"", ""


async def test_photos_attach_to_an_order_and_only_its_parties_fetch_them(gateway, signed_in):
    from tests.conftest import mint

    consumer, consumer_id = await signed_in("consumer")
    photo = await upload(consumer, PNG, "image/png")
    order = (await consumer.request(order_at(spot(), attachments=[photo]))).order
    assert order.attachments == [photo]
    owner_token = mint(gateway, "consumer", consumer_id)[1]
    assert await asyncio.to_thread(fetch, gateway, photo, owner_token) == (200, PNG, "image/png")
    stranger = mint(gateway, "consumer")[1]
    assert (await asyncio.to_thread(fetch, gateway, photo, stranger))[0] == 404
    assert (await asyncio.to_thread(fetch, gateway, photo, None))[0] == 401
    assert (await asyncio.to_thread(fetch, gateway, photo, "forged.token.value"))[0] == 401
    assert (await asyncio.to_thread(fetch, gateway, "0" * 32, owner_token))[0] == 404  # unknown id
    assert (await asyncio.to_thread(fetch, gateway, "not-an-id", owner_token))[0] == 404
    admin = mint(gateway, "admin")[1]
    assert (await asyncio.to_thread(fetch, gateway, photo, admin))[0] == 200


async def test_completion_photos_and_videos(gateway, signed_in):
    from tests.conftest import mint

    place = spot()
    consumer, consumer_id = await signed_in("consumer")
    tech, _tech_id = await technician(signed_in, place)
    order = (await consumer.request(order_at(place))).order
    await tech.request(OrderAccept(order_id=order.id))
    await tech.request(OrderDepart(order_id=order.id))
    await tech.request(OrderStart(order_id=order.id))
    proof = [await upload(tech, JPEG, "image/jpeg"), await upload(tech, MP4, "video/mp4"),
             await upload(tech, HEIC, "image/heic")]
    done = (await tech.request(OrderComplete(order_id=order.id, attachments=proof))).order
    assert done.completion_attachments == proof
    seen = (await consumer.request(OrderGet(order_id=order.id))).order
    assert seen.completion_attachments == proof
    consumer_token = mint(gateway, "consumer", consumer_id)[1]
    status, body, kind = await asyncio.to_thread(fetch, gateway, proof[1], consumer_token)
    assert (status, body, kind) == (200, MP4, "video/mp4")
    # a consumer cannot pass off someone else's upload as theirs
    reply, _ = await consumer.call("order.create", {"brand": "whirlpool", "sku": "WRF535SWHZ",
                                                    "service_type": "repair", "description": "x", "address": "a",
                                                    "lat": place[0], "lng": place[1], "attachments": [proof[0]]})
    assert reply["code"] == "bad_request"


async def test_the_bytes_decide_the_type(gateway, signed_in):
    consumer, _ = await signed_in("consumer")
    for data, claimed in ((JPEG, "image/png"), (b"GIF89a" + b"\x00" * 100, "image/png"),
                          (b"<html>not a photo</html>", "image/jpeg"), (PNG, "video/mp4")):
        with pytest.raises(ErrorReply) as caught:
            await upload(consumer, data, claimed)
        assert caught.value.code == "bad_request" and claimed in caught.value.error.message
    assert await gateway.services.db.fetchval("SELECT count(*) FROM attachments WHERE content_type = 'image/gif'") == 0


async def test_size_caps_and_sizes_that_do_not_match(gateway, signed_in):
    consumer, _ = await signed_in("consumer")
    with pytest.raises(ErrorReply) as caught:
        await consumer.request(UploadBegin(content_type="image/jpeg", size=15 * 1024 * 1024 + 1))
    assert caught.value.code == "too_large"
    assert (await consumer.request(UploadBegin(content_type="video/mp4", size=100 * 1024 * 1024))).upload_id
    with pytest.raises(ErrorReply) as caught:  # more bytes than announced
        await upload(consumer, JPEG, "image/jpeg", declared=100)
    assert caught.value.code == "too_large"
    started = await consumer.request(UploadBegin(content_type="image/jpeg", size=len(JPEG)))
    with pytest.raises(ErrorReply) as caught:  # fewer
        await consumer.request(UploadChunk(upload_id=started.upload_id, offset=0, data=JPEG[:10]))
        await consumer.request(UploadEnd(upload_id=started.upload_id))
    assert caught.value.code == "bad_request"
    started = await consumer.request(UploadBegin(content_type="image/jpeg", size=len(JPEG)))
    with pytest.raises(ErrorReply) as caught:  # out of order
        await consumer.request(UploadChunk(upload_id=started.upload_id, offset=10, data=JPEG[10:20]))
    assert caught.value.code == "conflict" and caught.value.error.details == {"current_state": "0"}


async def test_unfinished_uploads_are_removed_when_the_session_ends(gateway, signed_in):
    consumer, _ = await signed_in("consumer")
    started = await consumer.request(UploadBegin(content_type="image/png", size=len(PNG)))
    await consumer.request(UploadChunk(upload_id=started.upload_id, offset=0, data=PNG[:1000]))
    spool = gateway.config.data_dir.absolute() / "uploads" / f"{started.upload_id}.part"
    assert spool.exists()
    await consumer.close()
    async with asyncio.timeout(5):
        while spool.exists():
            await asyncio.sleep(0.05)


async def test_the_same_bytes_are_stored_once(gateway, signed_in):
    first, _ = await signed_in("consumer")
    second, _ = await signed_in("consumer")
    a = await upload(first, JPEG + b"unique-1", "image/jpeg")
    b = await upload(second, JPEG + b"unique-1", "image/jpeg")
    hashes = await gateway.services.db.fetch("SELECT sha256 FROM attachments WHERE id = ANY($1::uuid[])", [a, b])
    assert a != b and hashes[0]["sha256"] == hashes[1]["sha256"]
    name = hashes[0]["sha256"].hex()
    blob = gateway.services.blobs.path(name)  # type: ignore[attr-defined]
    on_disk = blob.read_bytes()  # sealed, and named by a keyed hash, not the content's SHA-256
    assert b"unique-1" not in on_disk and JPEG[:64] not in on_disk
    assert name != hashlib.sha256(JPEG + b"unique-1").hexdigest()
    assert await gateway.services.blobs.read(name) == JPEG + b"unique-1"


async def test_a_large_sealed_file_downloads_whole_from_its_url(gateway, signed_in):
    from tests.conftest import mint

    consumer, consumer_id = await signed_in("consumer")
    data = PNG[:8] + os.urandom(1 << 20)  # 17 sealed chunks
    attachment = await upload_for(consumer, data, "image/png")
    assert attachment.url == f"http://127.0.0.1:{gateway.http_port}/attachments/{attachment.attachment_id}"
    token = mint(gateway, "consumer", consumer_id)[1]
    async with aiohttp.ClientSession() as http:
        async with http.get(attachment.url, headers={"Authorization": f"Bearer {token}"}) as response:
            assert response.status == 200
            body = await response.read()
            headers = response.headers
        async with http.get(attachment.url) as response:
            assert response.status == 401 and response.headers["WWW-Authenticate"] == "Bearer"
        async with http.get(attachment.url, headers={"Authorization": f"Basic {token}"}) as response:
            assert response.status == 401
    assert body == data
    assert (headers["Content-Length"], headers["Content-Type"]) == (str(len(data)), "image/png")
    assert headers["ETag"] == f'"{attachment.attachment_id}"'
    assert (headers["Cache-Control"], headers["X-Content-Type-Options"]) == ("private", "nosniff")


async def test_a_download_streams_while_the_file_is_still_being_read(gateway, signed_in):
    """The first bytes arrive while most of the sealed file is not even on the disk yet (a named
    pipe stands in for it, fed by the test): a body built whole before sending cannot arrive."""
    from tests.conftest import mint

    consumer, consumer_id = await signed_in("consumer")
    data = PNG[:8] + os.urandom(1 << 20)
    attachment = await upload_for(consumer, data, "image/png")
    name = (await gateway.services.db.fetchval("SELECT sha256 FROM attachments WHERE id = $1::uuid",
                                               attachment.attachment_id)).hex()
    blob = gateway.services.blobs.path(name)  # type: ignore[attr-defined]
    sealed = blob.read_bytes()
    blob.unlink()
    os.mkfifo(blob)
    head = HEADER.size + 3 * (CHUNK + TAG)  # the first chunk is given out once the next two are read
    more = threading.Event()

    def feed() -> None:
        with contextlib.suppress(BrokenPipeError), blob.open("wb") as pipe:
            pipe.write(sealed[:head])
            pipe.flush()
            more.wait(30)
            pipe.write(sealed[head:])

    feeding = asyncio.create_task(asyncio.to_thread(feed))
    token = mint(gateway, "consumer", consumer_id)[1]
    try:
        async with aiohttp.ClientSession() as http, \
                http.get(attachment.url, headers={"Authorization": f"Bearer {token}"}) as response:
            assert response.status == 200 and response.content_length == len(data)
            first = await asyncio.wait_for(response.content.readexactly(CHUNK), 5)
            assert first == data[:CHUNK] and not feeding.done()  # most of the file is still to come
            more.set()
            assert first + await response.read() == data
    finally:
        more.set()
        if not feeding.done():  # the gateway never opened the pipe: let the feeder's open return
            os.close(os.open(blob, os.O_RDONLY | os.O_NONBLOCK))
        await feeding
        blob.unlink()
        blob.write_bytes(sealed)


async def test_a_file_that_fails_its_check_is_cut_off_before_its_end(gateway, signed_in):
    from tests.conftest import mint

    consumer, consumer_id = await signed_in("consumer")
    names, urls = [], []
    for _ in (1, 2):
        attachment = await upload_for(consumer, PNG[:8] + os.urandom(3 * CHUNK), "image/png")
        names.append((await gateway.services.db.fetchval("SELECT sha256 FROM attachments WHERE id = $1::uuid",
                                                         attachment.attachment_id)).hex())
        urls.append(attachment.url)
    first, second = (gateway.services.blobs.path(name) for name in names)  # type: ignore[attr-defined]
    first.write_bytes(second.read_bytes())  # another photo's sealed file under this one's name
    token = mint(gateway, "consumer", consumer_id)[1]
    async with aiohttp.ClientSession() as http, \
            http.get(urls[0], headers={"Authorization": f"Bearer {token}"}) as response:
        assert response.status == 200  # sent before the end could be checked
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()


async def test_the_websocket_port_sends_attachments_to_the_http_port(gateway, signed_in):
    from tests.conftest import mint

    consumer, consumer_id = await signed_in("consumer")
    attachment = await upload_for(consumer, JPEG + os.urandom(100), "image/jpeg")
    async with aiohttp.ClientSession() as http, \
            http.get(f"http://127.0.0.1:{gateway.port}/attachments/{attachment.attachment_id}",
                     allow_redirects=False) as response:
        assert response.status == 307 and response.headers["Location"] == attachment.url
    token = mint(gateway, "consumer", consumer_id)[1]  # a client that keeps the token across the redirect
    status, body, _ = await asyncio.to_thread(fetch, gateway, attachment.attachment_id, token, gateway.port)
    assert status == 200 and body.startswith(JPEG)
