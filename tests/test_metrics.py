"""What an operator reads on /metrics, from real flows: refused sign-ins by reason, the wait from
an order's opening to its acceptance, chat messages stored and their delivery lag, the push
outbox, the money jobs and Stripe's answers, Redis round trips and failures, the PostgreSQL pool's
waiters, each dependency's readiness, and the garbage collector's pauses."""

import asyncio
import gc
import uuid
from collections.abc import Callable
from datetime import timedelta

from gateway.server import Gateway
from protocol.auth import Auth, Login, Refresh, Register
from protocol.chat import ChatSend
from protocol.location import Duty
from protocol.orders import OrderAccept, OrderList
from storage import push
from tests.conftest import mint
from tests.money import app_stripe, complete, jobs, paid_order, paying_gateway, until
from tests.test_http import get, samples
from tests.world import events, order_at, refused, spot, technician


async def scrape(gw: Gateway) -> dict[str, float]:
    return samples((await asyncio.to_thread(get, gw.port, "/metrics"))[2])


async def scrape_until(gw: Gateway, ready: Callable[[dict[str, float]], bool],
                       timeout: float = 15.0) -> dict[str, float]:
    """Scrape until `ready` holds for what /metrics shows (the gauges are set by a periodic flush)."""
    async with asyncio.timeout(timeout):
        while not ready(found := await scrape(gw)):
            await asyncio.sleep(0.1)
    return found


def moved(before: dict[str, float], after: dict[str, float], name: str) -> float:
    return after.get(name, 0.0) - before.get(name, 0.0)


async def test_refused_sign_ins_are_counted_by_reason(gateway, connect):
    client = await connect()
    reasons = ("not_signed_in", "token_invalid", "token_expired", "wrong_password", "refresh_invalid")
    before = await scrape(gateway)
    assert all(f'auth_failures_total{{reason="{r}"}}' in before for r in (*reasons, "suspended"))  # from the start
    assert (await refused(client, OrderList())).code == "unauthorized"
    assert (await refused(client, Auth(token="not.a.token"))).code == "unauthorized"
    expired, _ = gateway.services.tokens.mint(str(uuid.uuid4()), "consumer", ttl=timedelta(seconds=-60))
    assert (await refused(client, Auth(token=expired))).code == "unauthorized"
    email = f"m-{uuid.uuid4().hex[:8]}@example.com"
    await client.request(Register(email=email, password="correct horse battery", role="consumer", name="M"))
    assert (await refused(client, Login(email=email, password="wrong horse"))).code == "unauthorized"
    assert (await refused(client, Refresh(refresh_token="x" * 43))).code == "unauthorized"
    after = await scrape(gateway)
    assert {r: moved(before, after, f'auth_failures_total{{reason="{r}"}}') for r in reasons} == dict.fromkeys(
        reasons, 1.0)
    assert moved(before, after, 'auth_failures_total{reason="suspended"}') == 0


async def test_acceptance_wait_chat_messages_and_their_delivery_are_measured(gateway, signed_in):
    place = spot()
    consumer, _ = await signed_in("consumer")
    tech, _ = await technician(signed_in, place)
    before = await scrape(gateway)
    order = (await consumer.request(order_at(place))).order
    await asyncio.sleep(0.2)  # the order waits in the pool a little
    await tech.request(OrderAccept(order_id=order.id))
    await consumer.request(ChatSend(order_id=order.id, client_id="m-1", text="On your way?"))
    await consumer.request(ChatSend(order_id=order.id, client_id="m-1", text="On your way?"))  # a resend
    await events(tech, "chat.message")
    after = await scrape(gateway)
    assert moved(before, after, "orders_time_to_accept_seconds_count") == 1
    waited = moved(before, after, "orders_time_to_accept_seconds_sum")
    assert 0.2 <= waited < 30
    assert moved(before, after, 'orders_time_to_accept_seconds_bucket{le="1.0"}') == 1  # accepted within a second
    assert moved(before, after, 'chat_messages_stored_total{kind="text"}') == 1  # the resend is not a second
    assert moved(before, after, 'chat_messages_stored_total{kind="system"}') >= 1  # "accepted" in the room
    assert moved(before, after, "chat_delivery_seconds_count") == moved(
        before, after, 'chat_messages_stored_total{kind="text"}') + moved(
        before, after, 'chat_messages_stored_total{kind="system"}')


async def test_an_offline_recipient_shows_in_the_push_outbox(make_gateway, connect, signed_in):
    """A push queued for a consumer with no session waits in the outbox until a worker takes it
    (this gateway's, without FCM, leaves it an hour): the gauges show it pending, then overdue."""
    async with make_gateway(metrics_db_interval_s=0.2, push_log_after_s=3600) as gw:
        consumer, _ = await signed_in("consumer", gw=gw)
        place = spot()
        tech, _ = await technician(signed_in, place, connect={"gw": gw})
        order = (await consumer.request(order_at(place))).order
        await tech.request(OrderAccept(order_id=order.id))
        await consumer.close()
        async with asyncio.timeout(5):
            while await push.online(gw.services.redis, [order.consumer_id]):
                await asyncio.sleep(0.02)
        await tech.request(ChatSend(order_id=order.id, client_id="t-1", text="Ten minutes away"))
        assert await gw.services.db.fetchval(
            "SELECT count(*) FROM push_outbox WHERE user_id = $1 AND state = 'pending'", order.consumer_id) == 1
        shown = await scrape_until(gw, lambda s: s.get('push_outbox{what="overdue_seconds"}', 0) > 0)
        assert shown['push_outbox{what="pending"}'] >= 1


async def test_a_failing_capture_shows_in_the_money_jobs_and_stripes_answers(make_gateway, stripe_server, signed_in):
    """Stripe answers a capture with 500 every time: each attempt is counted as a server error
    and timed, and the job, out of attempts, is counted failed until a person retries it."""
    async with paying_gateway(make_gateway, stripe_server, money_max_attempts=2,
                              metrics_db_interval_s=0.2) as gw:
        app = app_stripe(stripe_server)
        _, tech, order_id, _ = await paid_order(gw, signed_in, app)
        failed = 'money_jobs{kind="capture",state="failed"}'
        before = await scrape_until(gw, lambda s: failed in s)
        assert before['money_stripe_requests_total{outcome="ok"}'] >= 2  # the customer, the payment intent
        stripe_server.fail("/v1/payment_intents/", times=6)  # both runs, with the SDK's two retries each
        await complete(tech, order_id)
        await until(lambda: _capture_failed(gw, order_id))
        after = await scrape_until(gw, lambda s: s[failed] > before[failed])
        assert after[failed] - before[failed] == 1
        errors = moved(before, after, 'money_stripe_requests_total{outcome="server_error"}')
        assert errors >= 2  # an attempt per run at least
        answered = sum(moved(before, after, f'money_stripe_requests_total{{outcome="{o}"}}')
                       for o in ("ok", "declined", "rate_limited", "client_error", "server_error"))
        assert moved(before, after, "money_stripe_request_seconds_count") == answered
        assert moved(before, after, 'money_job_runs_total{kind="capture",outcome="failed"}') == 1


async def _capture_failed(gw: Gateway, order_id: str) -> bool:
    return any(j["kind"] == "capture" and j["state"] == "failed" for j in await jobs(gw, order_id))


async def test_redis_round_trips_and_failures_and_readiness_per_dependency(make_gateway, connect, tmp_path):
    from storage.embedded import EmbeddedRedis

    redis = EmbeddedRedis(tmp_path / "redis")
    async with make_gateway(redis_url=redis.start()) as gw:
        up = {f'gateway_dependency_up{{dependency="{d}"}}' for d in ("postgres", "redis", "pool")}
        before = await scrape_until(gw, lambda s: all(s.get(name) == 1 for name in up))
        client = await connect(gw)
        await client.request(Auth(token=mint(gw, "technician")[1]))
        await client.request(Duty(on_duty=True))
        during = await scrape(gw)
        assert moved(before, during, "redis_command_seconds_count") >= 1
        redis.stop()
        after = await scrape_until(gw, lambda s: s['gateway_dependency_up{dependency="redis"}'] == 0)
        assert after['gateway_dependency_up{dependency="postgres"}'] == 1
        assert moved(before, after, 'redis_errors_total{kind="connection"}') >= 1
    redis.stop()


async def test_callers_waiting_for_a_database_connection_are_shown(make_gateway):
    async with make_gateway(db_pool_size=2) as gw:
        db = gw.services.db
        waiting = 'gateway_db_pool_connections{state="waiting"}'
        await scrape_until(gw, lambda s: s.get(waiting) == 0)
        first, second = await db.acquire(), await db.acquire()
        third = asyncio.create_task(db.fetchval("SELECT 1"))
        try:
            await scrape_until(gw, lambda s: s[waiting] >= 1 and s['gateway_db_pool_connections{state="idle"}'] == 0)
        finally:
            await db.release(first)
            await db.release(second)
        assert await third == 1
        await scrape_until(gw, lambda s: s[waiting] == 0)



async def test_garbage_collection_pauses_are_timed_by_generation(gateway):
    """A full collection holds the event loop: each one shows in gateway_gc_pause_seconds."""
    before = await scrape(gateway)
    assert all(f'gateway_gc_pause_seconds_count{{generation="{g}"}}' in before for g in "012")
    for _ in range(3):
        gc.collect()
    after = await scrape(gateway)
    assert moved(before, after, 'gateway_gc_pause_seconds_count{generation="2"}') >= 3
    assert moved(before, after, 'gateway_gc_pause_seconds_sum{generation="2"}') > 0
    assert moved(before, after, 'gateway_gc_pause_seconds_bucket{generation="2",le="+Inf"}') >= 3
