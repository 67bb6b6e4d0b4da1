"""The gateway's HTTP side: health and Prometheus metrics on the websocket port."""

import asyncio
import re
import urllib.error
import urllib.request

from gateway.metrics import LATENCY_BUCKETS
from handlers.registry import ROUTES
from protocol.auth import Ping
from protocol.location import Duty, LocationUpdate
from protocol.orders import OrderAccept
from tests.conftest import mint
from tests.world import order_at, spot


def get(port: int, path: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


async def test_healthz_checks_postgres_and_redis(gateway):
    status, kind, body = await asyncio.to_thread(get, gateway.port, "/healthz")
    assert (status, kind) == (200, "application/json")
    assert body == '{"status":"ok","postgres":"ok","redis":"ok","pool":"ok","delivery":"ok"}'


async def test_liveness_asks_nothing_and_readiness_fails_first_when_draining(make_gateway, tmp_path):
    from storage import geo
    from storage.embedded import EmbeddedRedis

    redis = EmbeddedRedis(tmp_path / "redis")
    async with make_gateway(redis_url=redis.start()) as gw:
        for port in (gw.port, gw.http_port):  # the same body on both HTTP sides
            assert await asyncio.to_thread(get, port, "/livez") == (200, "application/json", '{"status":"ok"}')
            status, _, body = await asyncio.to_thread(get, port, "/readyz")
            assert (status, '"pool":"ok"' in body) == (200, True)
        await gw.services.redis.delete(geo.POOL_BUILT)  # the pool lost: not ready until rebuilt
        status, _, body = await asyncio.to_thread(get, gw.http_port, "/readyz")
        assert status == 503 and '"pool":"error: LookupError"' in body
        await gw.shutdown()
        status, _, body = await asyncio.to_thread(get, gw.http_port, "/readyz")
        assert (status, body) == (503, '{"status":"draining"}')
        assert (await asyncio.to_thread(get, gw.http_port, "/livez"))[0] == 200
    redis.stop()


async def test_metrics_count_sessions_frames_errors_and_latency(gateway, signed_in):
    client, _ = await signed_in("consumer")
    await client.request(Ping())
    await client.call("nope", {})
    status, kind, body = await asyncio.to_thread(get, gateway.port, "/metrics")
    assert status == 200 and kind.startswith("text/plain")
    lines = {line.split(" ")[0]: float(line.split(" ")[1]) for line in body.splitlines()
             if line and not line.startswith("#")}
    assert lines["gateway_sessions"] >= 1
    assert lines['gateway_frames_in_total{type="ping"}'] >= 1
    assert lines['gateway_frames_in_total{type="invalid"}'] >= 1
    assert lines['gateway_errors_total{code="bad_request"}'] >= 1
    assert lines['gateway_handler_seconds_count{type="ping"}'] >= 1


async def test_metrics_count_refused_frames_in_and_error_replies_out(make_gateway, connect):
    """Every frame is counted: one refused before decoding (too large, over the rate) under why,
    and every error reply among the frames sent."""
    async with make_gateway(rate_per_s=0.5, rate_burst=3, max_frame_bytes=1024) as gw:
        client = await connect(gw)
        await client.call("auth", {"token": mint(gw, "consumer")[1]})
        big, _ = await client.call("ping", {"pad": "x" * 2000})
        limited = [(await client.call("ping", {}))[0].get("code") for _ in range(3)]
        assert big["code"] == "too_large" and "rate_limited" in limited
        status, _, body = await asyncio.to_thread(get, gw.port, "/metrics")
        assert status == 200
        lines = {line.split(" ")[0]: float(line.split(" ")[1]) for line in body.splitlines()
                 if line and not line.startswith("#")}
        errors = 1 + limited.count("rate_limited") + limited.count("bad_request")
        assert lines['gateway_frames_in_total{type="too_large"}'] == 1
        assert lines['gateway_frames_in_total{type="rate_limited"}'] == limited.count("rate_limited")
        assert lines['gateway_frames_out_total{type="error"}'] == errors
        assert lines['gateway_frames_out_total{type="result"}'] == 1 + limited.count(None)  # auth, pongs


async def test_other_paths_are_404(gateway):
    status, _, body = await asyncio.to_thread(get, gateway.port, "/nope")
    assert status == 404 and "/ws" in body


async def test_a_lost_redis_gives_unavailable_and_an_unhealthy_healthz(make_gateway, connect, tmp_path):
    from storage.embedded import EmbeddedRedis

    redis = EmbeddedRedis(tmp_path / "redis")
    async with make_gateway(redis_url=redis.start()) as gw:
        admin = await connect(gw)
        await admin.call("auth", {"token": mint(gw, "admin")[1]})
        redis.stop()
        reply, _ = await admin.call("admin.notify", {"group": "role:technician", "text": "x"})
        assert reply["code"] == "unavailable"
        status, _, body = await asyncio.to_thread(get, gw.port, "/healthz")
        assert status == 503 and '"postgres":"ok"' in body and '"redis":"error' in body
        assert (await admin.call("ping", {}))[0]["type"] == "result"  # the session lives on


def samples(body: str) -> dict[str, float]:
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
            if line and not line.startswith("#")}


async def test_orders_connections_the_loop_and_the_pool_are_measured_with_bounded_labels(make_gateway, connect):
    """What an operator watches, from a real flow: orders created and their transitions by state,
    connections by close code, the event loop's lag, the database pool; and no label holds an id
    (a user's, an order's), so series stay few whatever the traffic."""
    async with make_gateway() as gw:
        consumer, tech = await connect(gw), await connect(gw)
        user_id, token = mint(gw, "consumer")
        await consumer.call("auth", {"token": token})
        tech_id, tech_token = mint(gw, "technician")
        await tech.call("auth", {"token": tech_token})
        place = spot()
        await tech.request(Duty(on_duty=True))
        await tech.request(LocationUpdate(lat=place[0], lng=place[1]))
        before = samples((await asyncio.to_thread(get, gw.port, "/metrics"))[2])
        order = (await consumer.request(order_at(place))).order
        await tech.request(OrderAccept(order_id=order.id))
        await consumer.close()
        async with asyncio.timeout(20):  # until a flush has put the pool's gauges and the loop's lag in
            while 'gateway_geo_indexed{what="technicians"}' not in (
                    after := samples((await asyncio.to_thread(get, gw.port, "/metrics"))[2])) or \
                    'gateway_connections_closed_total{code="1000"}' not in after:
                await asyncio.sleep(0.2)

    def moved(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert moved("orders_created_total") == 1
    assert moved('orders_transitions_total{state="open"}') == 1
    assert moved('orders_transitions_total{state="accepted"}') == 1
    assert moved("orders_announcement_recipients_count") == 1 and moved("orders_announcement_recipients_sum") == 1
    assert moved("orders_dispatch_seconds_count") == 1
    assert after["gateway_connections_opened_total"] >= 2
    assert after["process_resident_memory_bytes"] > 0 and after["process_open_fds"] > 0  # the process collector
    assert any(name.startswith("python_info") for name in after)
    assert after['gateway_connections_closed_total{code="1000"}'] >= 1
    assert after["gateway_event_loop_lag_seconds_count"] >= 4
    assert after['gateway_db_pool_connections{state="in_use"}'] >= 0
    assert after['gateway_db_pool_connections{state="idle"}'] >= 1
    assert after['gateway_geo_indexed{what="technicians"}'] >= 1  # this test's technician at least
    assert 'gateway_geo_indexed{what="open_orders"}' in after and 'gateway_geo_indexed{what="stale"}' in after
    assert moved("orders_time_to_accept_seconds_count") == 1
    assert moved('chat_messages_stored_total{kind="system"}') >= 1  # "accepted", told in the room
    assert moved("redis_command_seconds_count") >= 1
    assert after['gateway_db_pool_connections{state="waiting"}'] == 0
    assert [after[f'gateway_dependency_up{{dependency="{d}"}}'] for d in ("postgres", "redis", "pool")] == [1, 1, 1]
    assert 'push_outbox{what="pending"}' in after and 'money_jobs{kind="capture",state="failed"}' in after
    assert 'auth_failures_total{reason="token_invalid"}' in after
    # every label is one of a few closed kinds: a new one is a decision, made here
    names = {pair.split("=")[0] for name in after if "{" in name
             for pair in re.findall(r'[a-z_]+="', name.split("{", 1)[1])}
    assert names <= {"type", "code", "state", "what", "kind", "outcome", "reason", "direction", "dependency", "index",
                     "channel", "le",
                     "generation", "implementation", "major", "minor", "patchlevel", "version"}, names
    ids = {user_id, tech_id, order.id}
    labels = [name for name in after if "{" in name]
    assert not [name for name in labels if any(i in name for i in ids)]
    assert not [name for name in labels if re.search(r"[0-9a-f]{8}-[0-9a-f]{4}-", name)]
    families: dict[str, int] = {}
    for name in labels:
        families[name.split("{")[0]] = families.get(name.split("{")[0], 0) + 1
    # at most a series per operation (and per histogram bucket): bounded by the protocol, not traffic
    bound = (len(ROUTES) + 5) * (len(LATENCY_BUCKETS) + 3)
    assert max(families.values()) <= bound, families
