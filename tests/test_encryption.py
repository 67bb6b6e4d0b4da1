"""Encryption at rest as an attacker with a copy of the disks would test it: after a scenario
(register, order, attachment, chat, an offline push) no personal value is in any column, in
Redis's append-only file, on the blob disk or in the DEBUG log; sealed files resist cuts and
swaps; plaintext planted the way older versions stored it gets sealed while the gateway serves."""

import asyncio
import contextlib
import hashlib
import io
import logging
import os
import random
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag

from gateway import logs
from protocol.auth import Auth, Login, Register
from protocol.chat import ChatHistory, ChatSend
from protocol.client import ErrorReply
from protocol.orders import OrderAccept, OrderGet
from protocol.push import PushRegister
from storage import push
from storage.backfill import Sealed, encrypt_existing
from storage.sealed import CHUNK, HEADER, TAG, SealedWriter, header_key_id, read_chunks
from tests.conftest import mint
from tests.processes import run_command
from tests.test_uploads import JPEG, fetch, upload
from tests.world import order_at, spot, technician


@contextlib.contextmanager
def debug_log() -> Iterator[io.StringIO]:
    """Everything logged at DEBUG and above, configured as `LOG_LEVEL=DEBUG` configures it."""
    stream, root = io.StringIO(), logging.getLogger()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    before = root.level, {name: logging.getLogger(name).level for name in logs.NOISY}
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    for name in logs.NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(before[0])
        for name, level in before[1].items():
            logging.getLogger(name).setLevel(level)


async def plaintext_columns(db, value: str) -> list[str]:
    """table.column of every text, bytea, json and array column holding `value` (any case)."""
    columns = await db.fetch(
        "SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_schema = 'public'"
        " AND data_type IN ('text', 'character varying', 'bytea', 'jsonb', 'json', 'ARRAY')")
    found = []
    for c in columns:
        column = f'"{c["column_name"]}"'
        test = (f"position(convert_to($1, 'UTF8') in {column}) > 0" if c["data_type"] == "bytea"
                else f"strpos(lower({column}::text), lower($1)) > 0")
        if await db.fetchval(f'SELECT count(*) FROM "{c["table_name"]}" WHERE {test}', value):
            found.append(f"{c['table_name']}.{c['column_name']}")
    return found


async def append_only_files(redis) -> list[Path] | None:
    config = await redis.config_get("dir")
    folder = Path(config["dir"])
    if not folder.is_dir():
        return None  # a Redis on another machine (TEST_REDIS_URL)
    return [p for p in folder.rglob("*") if p.is_file() and ".aof" in p.name]


async def test_no_personal_value_is_stored_or_logged_in_plaintext(gateway, connect, signed_in):
    mark = uuid.uuid4().hex[:8]
    name, email = f"Zelda Quux{mark}", f"zelda.{mark}@example.com"
    phone = f"+1 212 {random.randint(1_000_000, 9_999_999)}"
    address = f"{mark} Mulberry Street, Apt 9"
    texts = [f"the gate code is {mark}-4411", f"see you at noon {mark}", f"parked outside {mark}"]
    device = f"device-{uuid.uuid4().hex}"
    place = spot()
    with debug_log() as log:
        consumer = await connect()
        account = await consumer.request(Register(email=email, password="password1", role="consumer", name=name,
                                                  phone=phone))
        await consumer.request(Auth(token=account.token))
        await consumer.request(PushRegister(token=device))
        photo = await upload(consumer, JPEG + f"photo-{mark}".encode(), "image/jpeg")
        tech, _ = await technician(signed_in, place)
        order = (await consumer.request(order_at(place, address=address, attachments=[photo]))).order
        await tech.request(OrderAccept(order_id=order.id))
        assert (await tech.request(OrderGet(order_id=order.id))).order.address == address
        await consumer.request(ChatSend(order_id=order.id, client_id="c1", text=texts[0]))
        await tech.request(ChatSend(order_id=order.id, client_id="t1", text=texts[1]))
        await consumer.close()
        async with asyncio.timeout(5):
            while await push.online(gateway.services.redis, [account.user_id]):
                await asyncio.sleep(0.02)
        await tech.request(ChatSend(order_id=order.id, client_id="t2", text=texts[2]))  # pushed: consumer offline
        async with asyncio.timeout(10):
            while not await gateway.services.db.fetchval(
                    "SELECT count(*) FROM push_outbox WHERE user_id = $1 AND state = 'sent'", account.user_id):
                await asyncio.sleep(0.05)
        again = await (await connect()).request(Login(email=email.upper(), password="password1"))
        history = await tech.request(ChatHistory(order_id=order.id))
        assert [m.text for m in history.messages if m.kind == "text"] == texts
        assert (await asyncio.to_thread(fetch, gateway, photo, again.token))[1] == JPEG + f"photo-{mark}".encode()
    logged = log.getvalue()
    assert "push" in logged  # the log was captured
    personal = [name, email, phone, address, *texts]
    for value in [*personal, "password1", account.token, account.refresh_token, again.token, device]:
        assert value.lower() not in logged.lower(), value
    assert "orders.description" in await plaintext_columns(gateway.services.db, "Fridge is warm")  # the scan sees
    for value in personal:
        assert await plaintext_columns(gateway.services.db, value) == [], value
    blobs = gateway.config.data_dir.absolute() / "blobs"
    assert all(f"photo-{mark}".encode() not in p.read_bytes() for p in blobs.rglob("*") if p.is_file())
    files = await append_only_files(gateway.services.redis)
    if files is None:
        pytest.skip("Redis's append-only file is not on this machine")
    await asyncio.sleep(1.2)  # appendfsync everysec
    aof = b"".join(p.read_bytes() for p in files).lower()
    assert files and all(v.lower().encode() not in aof for v in personal)


def seal(cipher, path: Path, data: bytes, piece: int = 10_000) -> str:
    writer = SealedWriter(path.open("wb"), cipher, cipher.mac("test"))
    for offset in range(0, len(data), piece):
        writer.write(data[offset:offset + piece])
    return writer.finish()


async def unseal(cipher, raw: bytes) -> bytes:
    key = await cipher.key(header_key_id(raw[:HEADER.size]))
    return b"".join(read_chunks(io.BytesIO(raw), key))


async def test_sealed_files_round_trip_and_refuse_cuts_swaps_and_edits(gateway, tmp_path):
    cipher = gateway.services.cipher
    for size in (1, CHUNK, 2 * CHUNK, 3 * CHUNK + 123):
        data = os.urandom(size)
        name = seal(cipher, tmp_path / "f", data)
        assert await unseal(cipher, (tmp_path / "f").read_bytes()) == data
        assert name == seal(cipher, tmp_path / "g", data)  # the same keyed name, different ciphertext
        assert (tmp_path / "f").read_bytes() != (tmp_path / "g").read_bytes()
    raw = (tmp_path / "f").read_bytes()
    block = CHUNK + TAG
    body = raw[HEADER.size:]
    chunks = [body[i:i + block] for i in range(0, len(body), block)]
    tampered = {
        "cut at a chunk boundary": raw[:HEADER.size + 2 * block],
        "chunks swapped": raw[:HEADER.size] + chunks[1] + chunks[0] + b"".join(chunks[2:]),
        "a byte flipped": raw[:-5] + bytes([raw[-5] ^ 1]) + raw[-4:],
        "another file's header": (tmp_path / "g").read_bytes()[:HEADER.size] + body,
        "the last chunk dropped": raw[:HEADER.size] + b"".join(chunks[:-1]),
    }
    for what, altered in tampered.items():
        with pytest.raises(InvalidTag):
            await unseal(cipher, altered)
            pytest.fail(what)


async def test_a_sealed_blob_moved_under_another_name_is_refused(gateway, signed_in):
    consumer, _ = await signed_in("consumer")
    blobs = gateway.services.blobs
    names = []
    for n in (1, 2):
        photo = await upload(consumer, JPEG + f"swap-{n}-{uuid.uuid4()}".encode(), "image/jpeg")
        names.append((await gateway.services.db.fetchval("SELECT sha256 FROM attachments WHERE id = $1::uuid",
                                                         photo)).hex())
    first, second = (blobs.path(name) for name in names)  # type: ignore[attr-defined]
    first.write_bytes(second.read_bytes())
    with pytest.raises(ValueError, match="does not hold"):
        await blobs.read(names[0])
    assert (await blobs.read(names[1])).startswith(JPEG)


async def test_plaintext_stored_by_older_versions_is_sealed_while_serving(make_gateway, scratch_db, tmp_path,
                                                                       connect):
    async with make_gateway(database_url=scratch_db, key_dir=tmp_path / "keys", data_dir=tmp_path / "data") as gw:
        db, services = gw.services.db, gw.services
        user_id, email, name = uuid.uuid4(), f"Old.{uuid.uuid4().hex[:6]}@Example.com", "Olga Oldrow"
        await db.execute("INSERT INTO users (id, email, password_hash, role, name) VALUES ($1, $2, $3, 'consumer', $4)",
                         user_id, email, await services.passwords.hash("password1"), name)
        _, token = mint(gw, "consumer", str(user_id))
        consumer = await connect(gw)
        await consumer.request(Auth(token=token))
        order = (await consumer.request(order_at(spot()))).order
        old_texts = ["written before encryption", "so was this one"]
        await db.execute("UPDATE chat_rooms SET last_seq = 2 WHERE order_id = $1::uuid", order.id)
        for seq, text in enumerate(old_texts, 1):
            await db.execute("INSERT INTO chat_messages (order_id, seq, sender_id, sender_role, client_id, kind, body)"
                             " VALUES ($1::uuid, $2, $3, 'consumer', $4, 'text', $5)", order.id, seq, str(user_id),
                             f"old-{seq}", text)
        await db.execute("INSERT INTO push_outbox (user_id, dedupe_key, title, body, state)"
                         " VALUES ($1, 'old:1', 'Old title', 'Old body', 'sent')", str(user_id))
        photo = JPEG + b"an old photo"
        plain = hashlib.sha256(photo).digest()
        old_file = services.blobs.path(plain.hex())  # type: ignore[attr-defined]
        old_file.parent.mkdir(parents=True, exist_ok=True)
        old_file.write_bytes(photo)
        photo_id = uuid.uuid4()
        await db.execute("INSERT INTO attachments (id, owner_id, sha256, content_type, size)"
                         " VALUES ($1, $2, $3, 'image/jpeg', $4)", photo_id, str(user_id), plain, len(photo))

        async def served() -> None:
            client = await connect(gw)
            assert (await client.request(Login(email=email.lower(), password="password1"))).user_id == str(user_id)
            with pytest.raises(ErrorReply) as caught:  # still taken, whatever the case
                await client.request(Register(email=email.upper(), password="password1", role="consumer", name="X"))
            assert caught.value.code == "conflict"
            history = await consumer.request(ChatHistory(order_id=order.id))
            assert [m.text for m in history.messages] == old_texts
            assert (await asyncio.to_thread(fetch, gw, str(photo_id), token))[1] == photo

        await served()
        # The gateway's own background sealer (started with it) may take some rows first: the two
        # together seal everything, whichever gets a row.
        await encrypt_existing(db, services.cipher, services.blobs, batch=1)  # type: ignore[arg-type]
        await served()
        user = await db.fetchrow("SELECT * FROM users WHERE id = $1", user_id)
        assert user["email"] is None and user["name"] is None and user["email_enc"] and user["email_idx"]
        assert not await db.fetchval("SELECT count(*) FROM chat_messages WHERE body IS NOT NULL")
        [job] = await db.fetch("SELECT * FROM push_outbox WHERE dedupe_key = 'old:1'")
        assert job["title"] is None and await push.texts(services.cipher, job) == ("Old title", "Old body")
        assert await db.fetchval("SELECT sealed FROM attachments WHERE id = $1", photo_id)
        assert not old_file.exists()
        for value in (email, name, *old_texts, "Old body"):
            assert await plaintext_columns(db, value) == [], value
        assert await encrypt_existing(db, services.cipher, services.blobs) == Sealed()  # type: ignore[arg-type]
        status, output = await run_command("keys", "encrypt-existing", "--database-url", scratch_db,
                                           "--key-dir", str(tmp_path / "keys"), "--data-dir", str(tmp_path / "data"))
        assert status == 0 and "users=0" in output, output
