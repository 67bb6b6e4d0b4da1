"""Events reach a user's sessions and a group's, on whichever gateway process holds them."""

import asyncio
import uuid

import pytest

from protocol.admin import Notice, Notify
from protocol.auth import Auth
from protocol.client import Client
from tests.conftest import SECRET, mint
from tests.processes import GatewayProcess


@pytest.fixture
def process_args(servers, tmp_path):
    return ("--database-url", servers[0], "--redis-url", servers[1], "--secret", SECRET,
            "--data-dir", str(tmp_path))


async def test_an_event_published_on_one_process_reaches_a_session_on_another(gateway, process_args):
    async with GatewayProcess(*process_args) as first, GatewayProcess(*process_args) as second:
        user_id, user_token = mint(gateway, "technician")
        _, admin_token = mint(gateway, "admin")
        async with await Client.connect(second.url) as tech, await Client.connect(first.url) as admin:
            await tech.request(Auth(token=user_token))
            await admin.request(Auth(token=admin_token))
            reply = await admin.request(Notify(user_id=user_id, text="your order is ready"))
            assert reply.sessions == 0  # none of the user's sessions is on the admin's process
            event = await tech.next_event(timeout=5)
            assert event == Notice(text="your order is ready", sender=event.sender)
            # and a group: every technician, wherever connected
            await admin.request(Notify(group="role:technician", text="storm warning"))
            assert (await tech.next_event(timeout=5)).text == "storm warning"


async def test_all_sessions_of_a_user_across_processes_get_it_once(gateway, process_args):
    async with GatewayProcess(*process_args) as other:
        user_id, token = mint(gateway, "consumer")
        _, admin_token = mint(gateway, "admin")
        here = f"ws://127.0.0.1:{gateway.port}/ws"
        phones = [await Client.connect(url) for url in (here, here, other.url)]
        try:
            for phone in phones:
                await phone.request(Auth(token=token))
            async with await Client.connect(here) as admin:
                await admin.request(Auth(token=admin_token))
                reply = await admin.request(Notify(user_id=user_id, text="one"))
                assert reply.sessions == 2
            for phone in phones:
                assert (await phone.next_event()).text == "one"
            await asyncio.sleep(0.3)
            assert all(phone.events.empty() for phone in phones)  # no echo from Redis
        finally:
            for phone in phones:
                await phone.close()


async def test_a_user_who_left_gets_nothing_and_others_are_unaffected(gateway, signed_in):
    leaver, leaver_id = await signed_in("consumer")
    stayer, stayer_id = await signed_in("consumer")
    await leaver.close()
    admin, _ = await signed_in("admin")
    assert (await admin.request(Notify(user_id=leaver_id, text="gone"))).sessions == 0
    assert (await admin.request(Notify(user_id=stayer_id, text="here"))).sessions == 1
    assert (await stayer.next_event()).text == "here"
    assert f"u:{leaver_id}" not in gateway.hub.channels


async def test_workers_share_one_port_and_deliver_across_each_other(gateway, process_args):
    async with GatewayProcess(*process_args, "--workers", "2") as served:
        user_id, token = mint(gateway, "technician")
        _, admin_token = mint(gateway, "admin")
        phones = [await Client.connect(served.url) for _ in range(8)]
        try:
            for phone in phones:
                await phone.request(Auth(token=token))
            async with await Client.connect(served.url) as admin:
                await admin.request(Auth(token=admin_token))
                await admin.request(Notify(user_id=user_id, text=f"hello {uuid.uuid4()}"))
            texts = {(await phone.next_event(timeout=5)).text for phone in phones}
            assert len(texts) == 1
        finally:
            for phone in phones:
                await phone.close()
        assert await served.terminate() == 0
