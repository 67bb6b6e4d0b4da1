"""bench.storm's Sans-I/O technician apps against real gateways: they must do on the wire what the
client library's `Reconnecting` does, or the storm's figures would measure something else."""

import asyncio
from collections.abc import Callable

import pytest

from bench.storm_sansio import Refused, SansioTechnician
from tests.conftest import mint, ws_url
from tests.world import order_at, spot


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


async def test_a_technician_is_back_on_duty_on_the_next_node_when_the_close_frame_arrives(make_gateway):
    async with make_gateway() as draining, make_gateway() as other:
        _, token = mint(draining, "technician")
        app = SansioTechnician([ws_url(draining), ws_url(other)], token, spot(), lambda order, at: None, {})
        await app.start(timeout=10)
        assert app.node() == ws_url(draining) and len(app.ready_at) == 1
        (session,) = draining.sessions
        session.ws.transport.pause_reading()  # the app's answer to the close frame is never read: no TCP close
        session.close(1012, "service restart")
        await until(lambda: len(app.ready_at) == 2)
        # on duty on the other node without sending tech.duty again: its location.update said so
        assert app.node() == ws_url(other) and app.attempts == 2 and app.failed is None
        session.ws.transport.resume_reading()
        await app.close()


async def test_a_refused_sign_in_is_final_and_counted(make_gateway):
    async with make_gateway() as gw:
        refused: dict[str, int] = {}
        app = SansioTechnician([ws_url(gw)], "not-a-token", spot(), lambda order, at: None, refused)
        with pytest.raises(Refused):
            await app.start(timeout=10)
        assert app.failed is not None and app.attempts == 1 and sum(refused.values()) == 1
        assert app.node() is None
        await app.close()


async def test_a_technician_tries_the_next_url_when_a_node_is_down_and_hears_its_orders(gateway, signed_in):
    place = spot()
    _, token = mint(gateway, "technician")
    heard: list[str] = []
    down = "ws://127.0.0.1:9/ws"  # nothing listens there: refused, then the next URL after a backoff
    app = SansioTechnician([down, ws_url(gateway)], token, place, lambda order, _: heard.append(order), {})
    await app.start(timeout=10)
    assert app.node() == ws_url(gateway) and app.attempts == 2
    consumer, _ = await signed_in("consumer")
    order = (await consumer.request(order_at(place))).order
    await until(lambda: order.id in heard)
    await app.close()
