"""Real PostgreSQL and Redis (embedded, started once per run), real gateways on free ports, real
websocket clients. Each test makes its own users, so tests never depend on one another."""

import contextlib
import dataclasses
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from argon2 import PasswordHasher

from gateway.app import Running
from gateway.config import Config
from gateway.server import Gateway
from handlers.accounts.passwords import Passwords
from protocol.auth import Auth
from protocol.client import Client
from storage.embedded import Embedded
from tests.browser import browser, tab  # noqa: F401  (fixtures: chromium per module, a watched page)
from tests.stripe_server import stripe_server  # noqa: F401  (session fixture: the local Stripe server)

SECRET = "test-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
# Cheap argon2 parameters: the same code path, without ~50 ms of hashing per sign-up.
FAST_PASSWORDS = Passwords(PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(database_url, redis_url): TEST_DATABASE_URL/TEST_REDIS_URL, or embedded servers."""
    db, redis = os.environ.get("TEST_DATABASE_URL"), os.environ.get("TEST_REDIS_URL")
    embedded = Embedded(tmp_path_factory.mktemp("servers"))
    started_db, started_redis = embedded.start(db is None, redis is None)
    try:
        yield (db or started_db or ""), (redis or started_redis or "")
    finally:
        embedded.stop()


@pytest.fixture(scope="session")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """This run's key-encryption keys, also for gateways started as processes (KEY_DIR inherited)."""
    path = tmp_path_factory.mktemp("keys")
    before = os.environ.get("KEY_DIR")
    os.environ["KEY_DIR"] = str(path)
    yield path
    if before is None:
        os.environ.pop("KEY_DIR", None)
    else:
        os.environ["KEY_DIR"] = before


@pytest.fixture(scope="session")
def base_config(servers: tuple[str, str], key_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Config:
    return Config(data_dir=tmp_path_factory.mktemp("data"), key_dir=key_dir, database_url=servers[0],
                  redis_url=servers[1], host="127.0.0.1", port=0, http_port=0, secret=SECRET, rate_per_s=1000,
                  # Without FCM a gateway logs pushes 2 s overdue: long after the FCM-backed test
                  # gateways have sent theirs, well within the 10 s the push tests wait.
                  rate_burst=1000, push_log_after_s=2)


@pytest.fixture
async def scratch_db(servers: tuple[str, str]) -> AsyncIterator[str]:
    """The URL of an empty database of its own, for tests that rotate keys or plant old rows
    (they must not touch the data keys every other test's gateway unwraps)."""
    if "/postgres?" not in servers[0]:
        pytest.skip("external database URL: cannot derive a scratch database")
    name = f"s_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(servers[0])
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield servers[0].replace("/postgres?", f"/{name}?")
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


GatewayFactory = Callable[..., contextlib.AbstractAsyncContextManager[Gateway]]


@pytest.fixture(scope="session")
def make_gateway(base_config: Config) -> GatewayFactory:
    """`async with make_gateway(outbox_limit=5) as gw:` a gateway with some settings changed."""

    def make(**overrides: Any) -> contextlib.AbstractAsyncContextManager[Gateway]:
        return Running(dataclasses.replace(base_config, **overrides), passwords=FAST_PASSWORDS)

    return make


@pytest.fixture(scope="session")
async def gateway(make_gateway: GatewayFactory) -> AsyncIterator[Gateway]:
    async with make_gateway() as gw:
        yield gw


def ws_url(gw: Gateway) -> str:
    return f"ws://127.0.0.1:{gw.port}/ws"


@pytest.fixture
async def connect(gateway: Gateway) -> AsyncIterator[Callable[..., Awaitable[Client]]]:
    """Open clients to the shared gateway (or `gw=`); all are closed after the test."""
    opened: list[Client] = []

    async def open_client(gw: Gateway | None = None, **kwargs: Any) -> Client:
        client = await Client.connect(ws_url(gw or gateway), **kwargs)
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        await client.close()


def mint(gw: Gateway, role: str, user_id: str | None = None, locale: str = "en") -> tuple[str, str]:
    """(user_id, session token) for a fresh user of the role."""
    user_id = user_id or str(uuid.uuid4())
    token, _ = gw.services.tokens.mint(user_id, role, locale)  # type: ignore[arg-type]
    return user_id, token


@pytest.fixture
def signed_in(gateway: Gateway,
              connect: Callable[..., Awaitable[Client]]) -> Callable[..., Awaitable[tuple[Client, str]]]:
    """`client, user_id = await signed_in("technician")`: a connected, authenticated session."""

    async def sign_in(role: str, *, gw: Gateway | None = None, user_id: str | None = None,
                      locale: str = "en", **kwargs: Any) -> tuple[Client, str]:
        gw = gw or gateway
        user_id, token = mint(gw, role, user_id, locale)
        client = await connect(gw, **kwargs)
        await client.request(Auth(token=token))
        return client, user_id

    return sign_in


ROOT = Path(__file__).resolve().parent.parent
