"""Wiring: configuration in, a running gateway out (one process, or a supervisor of several)."""

import asyncio
import contextlib
import gc
import logging
import os
import secrets
import signal
from collections.abc import Coroutine
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import redis.asyncio as aioredis

from gateway.config import Config, ConfigError, key_dir
from gateway.config import sentinels as config_sentinels
from gateway.delivery import Hub
from gateway.metrics import time_gc_pauses
from gateway.server import Gateway
from gateway.web import WebSide
from handlers.accounts.passwords import Passwords
from handlers.accounts.tokens import TokenIssuer
from handlers.ai.answering import engine_for
from handlers.ai.settings import AiRules
from handlers.chat.fcm import FcmClient
from handlers.chat.push import run_worker as push_worker
from handlers.chat.settings import ChatRules
from handlers.chat.writer import ChatWriter
from handlers.context import Context
from handlers.i18n import Catalogs
from handlers.money.audits import run_audits
from handlers.money.scheduler import run_scheduler
from handlers.money.settings import MoneyRules
from handlers.money.stripe_api import StripeAccess, StripeSettings
from handlers.money.stripe_events import run_reconciler
from handlers.orders.pool import rebuild_if_lost
from handlers.orders.pool import repair as repair_pool
from handlers.orders.settings import OrderRules
from handlers.services import Services
from storage import geo, lifecycle
from storage.backfill import encrypt_existing
from storage.blobs import LocalBlobs
from storage.coalesce import SignInReads
from storage.crypto import FieldCipher
from storage.db import connect_postgres, connect_redis
from storage.keys import KeyRing, KeyUnavailable
from storage.migrate import migrate

log = logging.getLogger(__name__)


class StartupError(RuntimeError):
    """A dependency is unreachable at start: reported as one line, exit status 1."""


def _where(url: str) -> str:
    """host:port of a server URL, never its password (or the socket folder of a local one)."""
    parts = urlsplit(url)
    if parts.hostname:
        return f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname
    return parse_qs(parts.query).get("host", ["the default socket"])[0]


def load_secret(config: Config, create: bool = True) -> str:
    """GATEWAY_SECRET, else the one generated on the gateway's first start and kept in DATA_DIR.

    Tools that only mint tokens pass `create=False`: a secret of their own would sign tokens
    that no gateway accepts."""
    if config.secret:
        return config.secret
    path = config.data_dir / "secret"
    if not path.exists() and not create:
        raise ConfigError(f"no secret: set GATEWAY_SECRET, or start the gateway once with --data-dir "
                          f"{config.data_dir} so that it generates {path}")
    if not path.exists():
        config.data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def keyring(config: Config) -> KeyRing:
    """The key-encryption keys: KEK's one key, else the folder KEY_DIR (created on first start)."""
    if config.kek:
        return KeyRing.from_pem(config.kek.encode(), "KEK")
    directory = key_dir(config)
    return KeyRing(f"KEY_DIR={directory}", directory)


async def start_cipher(config: Config, db: asyncpg.Pool) -> FieldCipher:
    """The field cipher with every data key unwrapped, or a StartupError naming the setting."""
    try:
        cipher = FieldCipher(db, keyring(config))
        await cipher.start()
    except KeyUnavailable as exc:
        raise StartupError(f"{exc}; set KEY_DIR (a folder of kek-*.pem) or KEK to the key-encryption key "
                           "this database was written with") from None
    return cipher


def token_issuer(config: Config, create_secret: bool = True) -> TokenIssuer:
    return TokenIssuer(load_secret(config, create_secret), timedelta(seconds=config.token_ttl_s),
                       timedelta(seconds=config.refresh_ttl_s))


def stripe_access(c: Config) -> StripeAccess | None:
    if not c.stripe_api_key:
        return None
    return StripeAccess.of(StripeSettings(
        c.stripe_api_key, c.stripe_api_base, c.stripe_webhook_secret, c.stripe_webhook_tolerance_s,
        c.stripe_connect_country))


def ai_rules(c: Config) -> AiRules:
    return AiRules(openai_api_key=c.openai_api_key, openai_base_url=c.openai_base_url, openai_model=c.openai_model,
                   openai_vision=c.openai_vision, timeout_s=c.ai_timeout_s, max_retries=c.ai_max_retries,
                   max_in_flight=c.ai_max_in_flight, max_answering=c.ai_max_answering,
                   quota_per_hour=c.ai_quota_per_hour,
                   stream_pause_s=c.ai_stream_pause_s, max_output_tokens=c.ai_max_output_tokens,
                   price_in_per_mtok_usd=c.ai_price_in_per_mtok_usd,
                   price_out_per_mtok_usd=c.ai_price_out_per_mtok_usd)


class Running:
    """`async with Running(config) as gw:` a gateway serving on config's address (or `sock`)."""

    def __init__(self, config: Config, sock: object = None, passwords: Passwords | None = None) -> None:
        assert config.database_url and (config.redis_url or config.redis_sentinels), "resolve embedded servers first"
        self.config = config
        self.sock = sock
        self.passwords = passwords
        self.gateway: Gateway | None = None
        self.fcm: FcmClient | None = None
        self.web: WebSide | None = None

    async def __aenter__(self) -> Gateway:
        c = self.config
        assert c.database_url
        time_gc_pauses()  # the process's collections, on its /metrics
        try:
            db = await asyncio.wait_for(connect_postgres(c.database_url, c.db_pool_size), 15)
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            raise StartupError(f"cannot connect to PostgreSQL at {_where(c.database_url)}: {exc}") from None
        async with db.acquire() as conn:
            await migrate(conn)
        sentinels = config_sentinels(c.redis_sentinels) if c.redis_sentinels else None
        redis = connect_redis(c.redis_url, sentinels, c.redis_master)
        try:
            await asyncio.wait_for(redis.ping(), 15)
        except (OSError, TimeoutError, aioredis.RedisError) as exc:
            await db.close()
            where = (f"master {c.redis_master!r} of Sentinels {c.redis_sentinels}" if sentinels
                     else _where(c.redis_url or ""))
            raise StartupError(f"cannot connect to Redis at {where}: {exc}") from None
        try:
            cipher = await start_cipher(c, db)
        except StartupError:
            await redis.aclose()
            await db.close()
            raise
        data = Path(c.data_dir).absolute()
        order_rules = OrderRules(radius_mi=c.dispatch_radius_mi, max_radius_mi=c.max_radius_mi,
                                 stale_after_s=c.position_stale_s, upload_dir=str(data / "uploads"),
                                 invite_ttl_s=c.invite_ttl_s)
        chat_rules = ChatRules(push_max_attempts=c.push_max_attempts, push_retry_base_s=c.push_retry_base_s,
                               push_poll_s=c.push_poll_s, push_log_after_s=c.push_log_after_s,
                               presence_ttl_s=c.presence_ttl_s)
        money_rules = MoneyRules(platform_fee_bp=c.platform_fee_bp, payment_policy=c.payment_policy,
                                 payout_delay_s=c.payout_delay_s, cancellation_fee_bp=c.cancellation_fee_bp,
                                 money_max_attempts=c.money_max_attempts, money_retry_base_s=c.money_retry_base_s,
                                 money_poll_s=c.money_poll_s, money_lease_s=c.money_lease_s,
                                 audit_interval_s=c.audit_interval_s)
        blobs = LocalBlobs(data / "blobs", cipher)
        positions = geo.PositionWriter(redis)
        hub = Hub(redis, c.delivery_routing)
        chat = ChatWriter(hub.publish_many, hub.holds)
        services = Services(db, redis, token_issuer(c), self.passwords or Passwords(), cipher, positions,
                            geo.NearbySearch(redis), blobs, Catalogs(), chat, order_rules,
                            chat_rules, money_rules, SignInReads(db), stripe_access(c), ai_rules=ai_rules(c))
        engine_for(services)  # now: importing the OpenAI SDK on a first answer would stall every session
        positions.start()
        chat.start(services)
        await rebuild_if_lost(services)
        await hub.start()
        self.gateway = Gateway(c, services, hub)
        self.web = WebSide(self.gateway)
        await self._listen(self.web.start(), c.http_port)  # first: upload.end replies hold its URL
        self.gateway.http_port = self.web.port
        services.public_url.base = c.public_url or f"http://{c.host}:{self.web.port}"
        await self._listen(self.gateway.start(self.sock), c.port)
        self.fcm = FcmClient(Path(c.fcm_credentials), c.fcm_endpoint) if c.fcm_credentials else None
        self.gateway.spawn(push_worker(services, self.fcm))
        self.gateway.spawn(seal_leftovers(services, blobs))
        self.gateway.spawn(upkeep(self.web.system, c.sweep_interval_s))
        if c.audit_interval_s > 0:
            self.gateway.spawn(run_audits(self.web.system))
        if services.stripe is not None:
            self.gateway.spawn(run_scheduler(self.web.system))
            self.gateway.spawn(run_reconciler(self.web.system, c.reconcile_interval_s, c.reconcile_lookback_s))
        return self.gateway

    async def _listen(self, start: Coroutine[Any, Any, None], port: int) -> None:
        """Bind a port, or undo the start so far and say why in one line (exit status 1)."""
        try:
            await start
        except OSError as exc:
            await self.__aexit__(None, None, None)
            reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
            raise StartupError(f"cannot listen on {self.config.host}:{port}: {reason}") from None

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        gateway = self.gateway
        if gateway is None:
            return
        if self.web is not None:
            await self.web.stop()
        await gateway.shutdown()
        log.debug("stopping answers in progress")
        await gateway.services.ai_runtime.stop()
        log.debug("stopping presence")
        await gateway.presence.stop()
        if self.fcm is not None:
            await self.fcm.aclose()
        log.debug("stopping writers")
        await gateway.services.positions.stop()
        await gateway.services.chat.stop()
        log.debug("stopping the hub")
        await gateway.hub.stop()
        log.debug("closing Redis and PostgreSQL connections")
        await gateway.services.redis.aclose()
        await gateway.services.db.close()
        log.debug("closed")


async def seal_leftovers(services: Services, blobs: LocalBlobs) -> None:
    """Encrypt what an older version stored in plaintext, in batches, while serving."""
    try:
        await encrypt_existing(services.db, services.cipher, blobs)
    except (OSError, asyncpg.PostgresError, KeyUnavailable) as exc:
        if lifecycle.cancelling():
            raise
        log.warning("sealing plaintext left from before encryption failed (next start retries): %r", exc)


async def upkeep(ctx: Context, interval_s: float) -> None:
    """Periodic chores of every process (all idempotent): drop stale positions from matching,
    rebuild the order pool if Redis lost it, announce open orders whose announcement was lost,
    write with the newest data key (`run.py keys rotate`)."""
    services = ctx.services
    while True:
        await asyncio.sleep(interval_s)
        try:
            await services.cipher.refresh()
            swept = await geo.sweep_stale(services.redis, services.order_rules.stale_after_s)
            if swept:
                log.info("swept %d stale technician positions", swept)
            if not await rebuild_if_lost(services) and (repaired := await repair_pool(ctx)):
                log.warning("announced %d open orders missing from the pool", repaired)
        except (OSError, aioredis.RedisError, asyncpg.PostgresError) as exc:
            if lifecycle.cancelling():
                raise
            log.warning("upkeep failed, retrying: %r", exc)


YOUNG_GC_THRESHOLD = 20_000  # allocations between collections of the youngest generation (Python's default: 700)


async def settle_garbage_collector(freeze_every_s: float = 1.0, collect_every: int = 600) -> None:
    """Keep full collections off the hot path. Thousands of long-lived sessions make every full
    collection scan them all (150-225 ms measured with 5,000 sessions, landing on one order
    announcement in eleven). Objects alive at each tick move to the permanent generation, which
    collections skip; every `collect_every` ticks one deliberate full collection (unfreeze,
    collect, freeze) reclaims the cycles frozen meanwhile. Freezing is O(1), so the tick is short:
    with 10 s, sessions that had just connected were still scanned, and the dispatch p99 to 5,000
    sessions was 250-300 ms; with 1 s it is under 100 ms (docs/benchmarks.md).

    The youngest generation is collected every YOUNG_GC_THRESHOLD allocations instead of Python's
    700: a chat message allocates dozens of objects that live until its batch commits, so with 700
    a collection ran every few messages, each one scanning what was still in flight (bench.chat:
    0.169 -> 0.123 ms of gateway CPU per message). Nearly everything here dies by reference count,
    so fewer collections scan less in all; one of 20,000 young objects takes about a millisecond."""
    gc.set_threshold(YOUNG_GC_THRESHOLD, *gc.get_threshold()[1:])
    ticks = 0
    while True:
        await asyncio.sleep(freeze_every_s)
        ticks += 1
        if ticks % collect_every == 0:
            gc.unfreeze()
            gc.collect()
        gc.freeze()


def addresses(config: Config, gateway: Gateway) -> list[tuple[str, str]]:
    """(what, URL) of everything a started process serves, each named in the start log."""
    host = f"[{config.host}]" if ":" in config.host else config.host
    http = f"http://{host}:{gateway.http_port}"
    lines = [("websocket", f"ws://{host}:{gateway.port}/ws"),
             ("HTTP", f"{http} (/livez, /readyz, /metrics, /attachments/, /stripe/webhook)"),
             ("back office", f"{http}/admin/")]
    public = gateway.services.public_url.base
    if public.rstrip("/") != http:
        lines.append(("public URL", public))
    return lines


async def serve_until_signalled(config: Config) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Running(config) as gateway:
        for what, url in addresses(config, gateway):
            log.info("gateway listening: %-10s %s", what, url)
        gateway.spawn(settle_garbage_collector())
        await stop.wait()
        log.info("signal received, shutting down")


def run_worker(config: Config) -> None:
    """A worker process's body: serve until SIGTERM (or the supervisor's end), then shut down gracefully."""
    from gateway import logs
    from gateway.orphans import exit_with_parent

    exit_with_parent()  # a supervisor killed outright forwards no signal: its workers must not serve on

    logs.setup(config.log_level, config.log_format)
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    try:
        asyncio.run(serve_until_signalled(config))
    except StartupError as exc:
        log.error("%s", exc)
        raise SystemExit(1) from None
