"""Where the key-encryption key lives, and both rotations, against gateways on their own databases
(scratch_db): rotating keys of the database every other test shares would pull the rug from them."""

import asyncio
import base64
import shutil
import stat

import pytest

from gateway.app import StartupError
from gateway.config import ConfigError, load
from gateway.keytool import rotate
from protocol.orders import OrderGet
from storage.keys import KeyRing, KeyUnavailable, kid, new_data_key, parse
from tests.processes import run_command
from tests.world import order_at, spot


async def test_a_new_data_key_serves_new_writes_and_gateways_started_before_read_them(
        make_gateway, scratch_db, tmp_path, signed_in):
    keys = tmp_path / "keys"
    async with make_gateway(database_url=scratch_db, key_dir=keys) as before:
        consumer, consumer_id = await signed_in("consumer", gw=before)
        old = (await consumer.request(order_at(spot(), address="1 Old Road"))).order
        old_key = before.services.cipher.current[0]
        status, output = await run_command("keys", "rotate", "--database-url", scratch_db, "--key-dir", str(keys))
        assert status == 0 and "data key" in output, output
        async with make_gateway(database_url=scratch_db, key_dir=keys) as after:
            assert after.services.cipher.current[0] > old_key
            same, _ = await signed_in("consumer", gw=after, user_id=consumer_id)
            new = (await same.request(order_at(spot(), address="2 New Road"))).order
            assert (await same.request(OrderGet(order_id=old.id))).order.address == "1 Old Road"
        # the gateway started before the rotation reads what was sealed with the new key
        assert (await consumer.request(OrderGet(order_id=new.id))).order.address == "2 New Road"
        await before.services.cipher.refresh()  # what its upkeep does: new writes use the new key
        assert before.services.cipher.current[0] > old_key


async def test_a_new_kek_rewraps_every_data_key_and_the_old_one_no_longer_opens_them(
        make_gateway, scratch_db, tmp_path, signed_in):
    keys, saved = tmp_path / "keys", tmp_path / "saved"
    async with make_gateway(database_url=scratch_db, key_dir=keys) as gw:
        consumer, _ = await signed_in("consumer", gw=gw)
        order = (await consumer.request(order_at(spot(), address="3 Kept Lane"))).order
        [old_file] = keys.glob("kek-*.pem")
        shutil.copytree(keys, saved)
        lines = await rotate(gw.config, scratch_db, kek=True)
        [new_file] = keys.glob("kek-*.pem")
        assert new_file != old_file and any(str(old_file) in line for line in lines)
        assert stat.S_IMODE(new_file.stat().st_mode) == 0o600
        new_kid = kid(parse(new_file.read_bytes(), "test"))
        assert {r["kek_id"] for r in await gw.services.db.fetch("SELECT kek_id FROM data_keys")} == {new_kid}
        assert (await consumer.request(OrderGet(order_id=order.id))).order.address == "3 Kept Lane"
        await rotate(gw.config, scratch_db)  # a data key under the new KEK: the running gateway finds it
        await gw.services.cipher.refresh()
        later = (await consumer.request(order_at(spot(), address="4 Later Street"))).order
        assert (await consumer.request(OrderGet(order_id=later.id))).order.address == "4 Later Street"
    async with make_gateway(database_url=scratch_db, key_dir=keys) as restarted:
        again, _ = await signed_in("consumer", gw=restarted)
        assert again is not None
    with pytest.raises(StartupError) as caught:
        async with make_gateway(database_url=scratch_db, key_dir=saved):
            pass
    message = str(caught.value)
    assert "KEY_DIR" in message and "KEK" in message and "\n" not in message


async def test_a_node_without_the_key_fails_at_start_and_creates_none(make_gateway, gateway, tmp_path):
    empty = tmp_path / "no-keys"
    with pytest.raises(StartupError) as caught:
        async with make_gateway(key_dir=empty):
            pass
    assert f"KEY_DIR={empty}" in str(caught.value)
    assert not list(empty.glob("*")) if empty.exists() else True


async def test_serve_without_the_key_exits_with_one_line_naming_the_setting(gateway, servers, tmp_path):
    status, output = await run_command("serve", "--database-url", servers[0], "--redis-url", servers[1],
                                       "--data-dir", str(tmp_path / "data"), "--key-dir", str(tmp_path / "none"),
                                       "--port", "0", "--http-port", "0")
    assert status == 1 and len(output.strip().splitlines()) == 1 and "KEY_DIR" in output, output
    assert "Traceback" not in output


async def test_the_kek_can_come_from_the_environment(make_gateway, scratch_db, tmp_path, signed_in, key_dir):
    pem_file = next(key_dir.glob("kek-*.pem"))
    one_line = base64.b64encode(pem_file.read_bytes()).decode()
    unused = tmp_path / "unused"
    config = load({"KEK": one_line, "KEY_DIR": str(unused), "DATABASE_URL": scratch_db})
    async with make_gateway(database_url=scratch_db, kek=config.kek, key_dir=unused) as gw:
        consumer, consumer_id = await signed_in("consumer", gw=gw)
        order = (await consumer.request(order_at(spot(), address="5 Env Avenue"))).order
        assert order.address == "5 Env Avenue"
        with pytest.raises(StartupError):  # the new key would only be in a terminal
            await rotate(gw.config, scratch_db, kek=True)
        out = tmp_path / "new-kek.pem"
        lines = await rotate(gw.config, scratch_db, kek=True, kek_out=out)
        assert str(out) in lines[-1] and out.stat().st_mode & 0o777 == 0o600
        assert out.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
        moved = load({"KEK": out.read_text(), "KEY_DIR": str(unused), "DATABASE_URL": scratch_db})
        async with make_gateway(database_url=scratch_db, kek=moved.kek, key_dir=unused) as again:
            reader, _ = await signed_in("consumer", gw=again, user_id=consumer_id)  # the new KEK opens the keys
            assert (await reader.request(OrderGet(order_id=order.id))).order.address == "5 Env Avenue"
    assert not unused.exists()


async def test_the_default_key_folder_is_outside_the_data_folder_and_private(make_gateway, scratch_db, tmp_path):
    data = tmp_path / "data"
    async with make_gateway(database_url=scratch_db, data_dir=data, key_dir=None):
        pass
    folder = tmp_path / "data-keys"
    [kek] = folder.glob("kek-*.pem")
    assert stat.S_IMODE(kek.stat().st_mode) == 0o600 and stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert not list(data.rglob("kek-*"))
    with pytest.raises(ConfigError, match="KEY_DIR"):
        load({"DATA_DIR": str(data), "KEY_DIR": str(data / "keys")})


async def test_two_kek_rotations_at_once_and_a_stale_node_leave_every_data_key_openable(
        make_gateway, scratch_db, tmp_path, signed_in):
    keys, stale = tmp_path / "keys", tmp_path / "stale"
    async with make_gateway(database_url=scratch_db, key_dir=keys) as gw:
        consumer, consumer_id = await signed_in("consumer", gw=gw)
        order = (await consumer.request(order_at(spot(), address="6 Twice Road"))).order
        shutil.copytree(keys, stale)
        await asyncio.gather(rotate(gw.config, scratch_db, kek=True), rotate(gw.config, scratch_db, kek=True))
        # A node still on the old KEK may not add a data key the next restart could not open.
        with pytest.raises(KeyUnavailable):
            await new_data_key(gw.services.db, KeyRing("stale", stale))
    async with make_gateway(database_url=scratch_db, key_dir=keys) as restarted:  # every data key unwraps
        again, _ = await signed_in("consumer", gw=restarted, user_id=consumer_id)
        assert (await again.request(OrderGet(order_id=order.id))).order.address == "6 Twice Road"
