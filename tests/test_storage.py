"""Migrations and the encryption of personal fields, against the real PostgreSQL."""

import asyncio
import uuid

import asyncpg
import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from protocol.auth import Register
from storage.crypto import FieldCipher
from storage.db import connect_redis
from storage.embedded import redis_binary
from storage.keys import KeyRing, kid, new_data_key
from storage.migrate import migrate, migrations


async def test_migrations_run_twice_and_concurrently_apply_once(gateway, servers):
    conns = [await asyncpg.connect(servers[0]) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate(c) for c in conns))
        assert all(r == [] for r in results)  # the gateway fixture applied them already
        versions = await conns[0].fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [r["version"] for r in versions] == [v for v, _, _ in migrations()]
    finally:
        for conn in conns:
            await conn.close()


async def test_a_fresh_database_migrates_from_two_processes_at_once(servers):
    admin = await asyncpg.connect(servers[0])
    name = f"m_{uuid.uuid4().hex[:10]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = servers[0].replace("/postgres?", f"/{name}?") if "/postgres?" in servers[0] else None
        if url is None:
            pytest.skip("external database URL: cannot derive a scratch database")
        conns = [await asyncpg.connect(url) for _ in range(2)]
        results = await asyncio.gather(*(migrate(c) for c in conns))
        assert sorted(len(r) for r in results) == [0, len(migrations())]  # one applied all, one none
        for conn in conns:
            await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


async def test_phone_numbers_are_stored_encrypted(gateway, connect):
    client = await connect()
    phone = "+1 555 867 5309"
    tokens = await client.request(Register(email=f"p-{uuid.uuid4().hex[:8]}@example.com", password="password1",
                                           role="consumer", name="Jenny", phone=phone))
    stored = await gateway.services.db.fetchval("SELECT phone_enc FROM users WHERE id = $1::uuid", tokens.user_id)
    assert phone.encode() not in stored and b"8675309" not in stored
    everything = await gateway.services.db.fetchval("SELECT row_to_json(u)::text FROM users u WHERE id = $1::uuid",
                                                    tokens.user_id)
    assert "867 5309" not in everything and phone.encode().hex() not in everything
    cipher = gateway.services.cipher
    assert await cipher.decrypt(stored, f"users.phone:{tokens.user_id}") == phone
    # bound to its row: the same bytes copied to another user do not decrypt
    with pytest.raises(InvalidTag):
        await cipher.decrypt(stored, f"users.phone:{uuid.uuid4()}")


async def test_a_new_key_encryption_key_rotates_and_old_values_stay_readable(scratch_db, tmp_path):
    db = await asyncpg.create_pool(scratch_db, min_size=1, max_size=2)
    try:
        async with db.acquire() as conn:
            await migrate(conn)
        old = FieldCipher(db, KeyRing("test", tmp_path))
        await old.start()
        sealed = old.encrypt("221B Baker Street", "test:1")
        ring = KeyRing("test", tmp_path)
        new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        path = tmp_path / f"kek-{kid(new_key)}.pem"
        path.write_bytes(new_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        rotated_ring = KeyRing("test", tmp_path)
        assert rotated_ring.current == kid(new_key) != ring.current
        await new_data_key(db, rotated_ring)
        rotated = FieldCipher(db, rotated_ring)
        await rotated.start()
        fresh = rotated.encrypt("10 Downing Street", "test:2")
        assert fresh[1:5] != sealed[1:5]  # a new data key id
        assert await rotated.decrypt(sealed, "test:1") == "221B Baker Street"
        assert await rotated.decrypt(fresh, "test:2") == "10 Downing Street"
    finally:
        await db.close()


async def test_redis_is_reached_over_a_unix_socket_too(tmp_path):
    """REDIS_URL=unix:///path: a Redis beside the gateway, on its socket (no TCP keepalive there)."""
    sock = tmp_path / "redis.sock"
    server = await asyncio.create_subprocess_exec(redis_binary(), "--port", "0", "--unixsocket", str(sock),
                                                  "--save", "", "--dir", str(tmp_path),
                                                  stdout=asyncio.subprocess.DEVNULL)
    try:
        async with asyncio.timeout(10):
            while not sock.exists():
                await asyncio.sleep(0.05)
        redis = connect_redis(f"unix://{sock}")
        try:
            await redis.set("k", "v")
            assert await redis.get("k") == b"v"
        finally:
            await redis.aclose()
    finally:
        server.terminate()
        await server.wait()
