"""What a SIGKILLed node leaves behind, timed with the default settings (docs/scaling.md, "When a
node dies"): how long its users still count as online (presence), how long its apps take to be
signed in on another node (the client library's reconnect), and when a push job it had leased is
sent by another node (the outbox lease).

    .venv/bin/python -m bench.node_death [--rounds 3] [--sessions 50]

Real parts throughout: embedded PostgreSQL and Redis in a scratch folder, gateways as processes
(`run.py serve`), the FCM stand-in of tests/ for pushes, the project's client library."""
# ruff: noqa: ASYNC110  (it polls the servers from outside, as tests do)

import argparse
import asyncio
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from gateway.app import start_cipher, token_issuer
from gateway.config import Config
from handlers.accounts.tokens import TokenIssuer
from handlers.chat.push import LEASE
from protocol.auth import Auth
from protocol.client import Client, Reconnecting
from storage import push
from storage.db import connect_postgres, connect_redis
from storage.embedded import Embedded
from tests.fake_fcm import FakeFcm
from tests.processes import GatewayProcess

SECRET = "node-death-secret-0123456789-abcdefghijklmnop"


def node(db: str, redis: str, data: Path, keys: Path, env: dict[str, str]) -> GatewayProcess:
    return GatewayProcess("--database-url", db, "--redis-url", redis, "--secret", SECRET, "--data-dir", str(data),
                          env={"KEY_DIR": str(keys), "LOG_LEVEL": "WARNING", **env})


async def one_death(db: str, redis_url: str, root: Path, keys: Path, survivor: GatewayProcess, sessions: int,
                    env: dict[str, str], issuer: TokenIssuer) -> tuple[float, float, float]:
    """Kill a node holding `sessions` apps: (seconds until all are signed in on the survivor,
    until the last reconnect's median, until none of its users counts as online)."""
    redis = connect_redis(redis_url)
    victim = await node(db, redis_url, root / f"victim-{uuid.uuid4().hex[:6]}", keys, env).start()
    users = [f"death-{uuid.uuid4().hex[:8]}" for _ in range(sessions)]
    apps = []
    signed: dict[int, float] = {}

    def sign_in_as(index: int, token: str) -> Callable[[Client], Awaitable[None]]:
        async def sign_in(client: Client) -> None:
            await client.request(Auth(token=token))
            signed[index] = time.monotonic()
        return sign_in

    for i, user in enumerate(users):
        token, _ = issuer.mint(user, "technician")
        apps.append(Reconnecting([victim.url, survivor.url], sign_in_as(i, token)))
    await asyncio.gather(*(app.start() for app in apps))
    while len(await push.online(redis, users)) < len(users):
        await asyncio.sleep(0.05)
    # the victim's presence, as `push.online` reads it (reconnected, the users count on the survivor)
    nodes: list[str] = [n.decode() for n in await redis.zrange(push.NODES, 0, -1)]  # type: ignore[union-attr]
    [victim_id] = [n for n in nodes if await redis.sismember(push.node_key(n), users[0])]
    await asyncio.sleep(random.uniform(0, push.NODE_TTL_S / 3))  # a random moment of the heartbeat's period
    assert victim.process is not None
    killed = time.monotonic()
    victim.kill()
    await victim.process.wait()
    while any(app.connections < 2 for app in apps):
        await asyncio.sleep(0.01)
    back = [signed[i] - killed for i in range(sessions)]
    while victim_id.encode() in await redis.zrangebyscore(push.NODES, time.time() - push.NODE_TTL_S, "+inf"):
        await asyncio.sleep(0.1)
    offline = time.monotonic() - killed
    for app in apps:
        await app.close()
    await redis.aclose()
    return max(back), statistics.median(back), offline


async def push_takeover(db_url: str, config: Config, fcm: FakeFcm) -> float:
    """A push job leased by a node that then dies: seconds until a live node has sent it."""
    db = await connect_postgres(db_url, 2)
    cipher = await start_cipher(config, db)
    user = f"death-push-{uuid.uuid4().hex[:8]}"
    device = f"device-{uuid.uuid4().hex[:8]}"
    await push.register(db, user, device, "android")
    key = f"death:{user}"
    async with db.acquire() as conn, conn.transaction():  # committed already leased: no live node takes it first
        await push.enqueue(conn, cipher, user, key, "Your technician is here", "Open the door", {})
        # the dying node's claim, by the statement its push worker runs; then it is gone
        [job] = await push.claim(conn, 1, LEASE)
    leased = time.monotonic()
    while await db.fetchval("SELECT state FROM push_outbox WHERE id = $1", job["id"]) != "sent":
        await asyncio.sleep(0.1)
    took = time.monotonic() - leased
    assert any(m.get("token") == device for m in fcm.delivered)
    await db.close()
    return took


async def main(rounds: int, sessions: int) -> None:
    with tempfile.TemporaryDirectory(prefix="node-death-") as scratch, FakeFcm() as fcm:
        root = Path(scratch)
        embedded = Embedded(root / "servers")
        db, redis = embedded.start()
        assert db and redis
        keys = root / "keys"
        env = {"FCM_CREDENTIALS": str(fcm.credentials(root)), "FCM_ENDPOINT": fcm.url}
        config = Config(data_dir=root / "x", key_dir=keys, database_url=db, redis_url=redis, secret=SECRET)
        try:
            survivor = await node(db, redis, root / "survivor", keys, env).start()
            issuer = token_issuer(config, create_secret=False)
            takeover = asyncio.create_task(push_takeover(db, config, fcm))
            print(f"node death, default settings (PRESENCE_TTL_S={push.NODE_TTL_S:g}, push lease {LEASE.seconds} s), "
                  f"{sessions} sessions on the killed node, {rounds} rounds:", flush=True)
            for i in range(1, rounds + 1):
                last, median, offline = await one_death(db, redis, root, keys, survivor, sessions, env, issuer)
                print(f"  round {i}: all signed in again on the survivor after {last:.2f} s (median {median:.2f} s); "
                      f"its users counted online until {offline:.1f} s after the kill", flush=True)
            push_s = await takeover
            print(f"  push job leased by a dead node: sent by the survivor {push_s:.1f} s after the lease was taken")
            await survivor.terminate()
        finally:
            embedded.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.sessions))
