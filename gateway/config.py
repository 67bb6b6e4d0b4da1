"""The gateway's configuration: one frozen object, built once from environment and flags."""

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlparse


class ConfigError(ValueError):
    """Raised with a one-line, human-readable explanation."""


@dataclass(frozen=True, slots=True)
class Config:
    data_dir: Path = Path("var")
    database_url: str | None = None  # None: start the embedded PostgreSQL under data_dir
    redis_url: str | None = None  # None: start the embedded Redis under data_dir (unless Sentinel is set)
    redis_sentinels: str | None = None  # "host:port,host:port": the master is asked of these Sentinels
    redis_master: str = "mymaster"  # the master's name in Sentinel
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    secret: str | None = None  # None: generated once and kept in data_dir
    key_dir: Path | None = None  # folder of the key-encryption keys; None: DATA_DIR's sibling DATA_DIR-keys
    kek: str | None = None  # the key-encryption key itself (PEM, or base64 of it); wins over key_dir
    log_level: str = "INFO"
    log_format: str = "text"
    token_ttl_s: int = 3600
    refresh_ttl_s: int = 30 * 24 * 3600
    auth_timeout_s: float = 10.0
    idle_timeout_s: float = 600.0
    ping_interval_s: float = 20.0
    max_frame_bytes: int = 64 * 1024
    rate_per_s: float = 50.0
    rate_burst: int = 100
    outbox_limit: int = 1000
    db_pool_size: int = 10
    shutdown_grace_s: float = 10.0
    shutdown_spread_s: float = 0.0  # a stopping node sends its sessions' close frames in waves over this; 0: at once
    dispatch_radius_mi: float = 50.0
    max_radius_mi: float = 100.0
    position_stale_s: float = 300.0
    invite_ttl_s: float = 14 * 86_400.0
    platform_fee_bp: int = 1500
    sweep_interval_s: float = 15.0
    presence_ttl_s: float = 30.0  # a node that has not beaten for this long is dead: its users are offline
    delivery_routing: str = "nodes"  # events for many users: "nodes" (each node its users' share) or "multicast"
    embedded_listen: str | None = None  # None: embedded servers on loopback only; else this address, with passwords
    embedded_postgres_port: int = 5432  # with embedded_listen
    embedded_redis_port: int = 6379  # with embedded_listen
    fcm_credentials: str | None = None  # service-account JSON; None: pushes are logged, not sent
    fcm_endpoint: str = "https://fcm.googleapis.com"
    push_max_attempts: int = 8
    push_retry_base_s: float = 2.0
    push_poll_s: float = 1.0
    push_log_after_s: float = 30.0  # without FCM: how overdue a push is before this process logs it
    http_port: int = 8081  # Stripe webhooks (POST /stripe/webhook), /healthz, /metrics, Connect return pages
    public_url: str | None = None  # how browsers reach the HTTP port; None: http://HOST:HTTP_PORT
    map_tiles_url: str | None = None  # the back office map's tiles ({z}/{x}/{y}); None: points on a plain background
    stripe_api_key: str | None = None  # None: payments are off, payment.* answer `unavailable`
    stripe_api_base: str = "https://api.stripe.com"
    stripe_webhook_secret: str | None = None  # None: webhooks are refused; the reconciler still applies events
    stripe_webhook_tolerance_s: int = 300
    stripe_connect_country: str = "US"
    payment_policy: str = "capture_at_completion"
    payout_delay_s: float = 86_400.0
    cancellation_fee_bp: int = 0
    money_max_attempts: int = 8
    money_retry_base_s: float = 30.0
    money_poll_s: float = 1.0
    money_lease_s: float = 60.0
    reconcile_interval_s: float = 300.0
    reconcile_lookback_s: float = 3 * 86_400.0
    audit_interval_s: float = 3_600.0  # between scheduled money and order audits (one process of the fleet); 0: off
    openai_api_key: str | None = None  # None: the AI troubleshooter answers with its offline engine
    openai_base_url: str | None = None  # any OpenAI-compatible server; None: OpenAI's
    openai_model: str = "gpt-4o-mini"
    openai_vision: bool = False
    ai_timeout_s: float = 30.0
    ai_max_retries: int = 2
    ai_max_in_flight: int = 16
    ai_max_answering: int = 16
    ai_quota_per_hour: int = 30
    ai_stream_pause_s: float = 0.05
    ai_max_output_tokens: int = 1_500
    ai_price_in_per_mtok_usd: float = 0.15  # the model's prices (gpt-4o-mini's by default), for the estimated cost
    ai_price_out_per_mtok_usd: float = 0.60
    metrics_db_interval_s: float = 10.0  # between the PostgreSQL reads behind the outbox and money-job gauges


# environment variable -> field; each also has a --flag on `serve` (field name, dashes).
ENV = {
    "DATA_DIR": "data_dir",
    "DATABASE_URL": "database_url",
    "REDIS_URL": "redis_url",
    "REDIS_SENTINELS": "redis_sentinels",
    "REDIS_MASTER": "redis_master",
    "GATEWAY_HOST": "host",
    "GATEWAY_PORT": "port",
    "GATEWAY_WORKERS": "workers",
    "GATEWAY_SECRET": "secret",
    "KEY_DIR": "key_dir",
    "KEK": "kek",
    "LOG_LEVEL": "log_level",
    "LOG_FORMAT": "log_format",
    "TOKEN_TTL_S": "token_ttl_s",
    "REFRESH_TTL_S": "refresh_ttl_s",
    "AUTH_TIMEOUT_S": "auth_timeout_s",
    "IDLE_TIMEOUT_S": "idle_timeout_s",
    "PING_INTERVAL_S": "ping_interval_s",
    "MAX_FRAME_BYTES": "max_frame_bytes",
    "RATE_PER_S": "rate_per_s",
    "RATE_BURST": "rate_burst",
    "OUTBOX_LIMIT": "outbox_limit",
    "DB_POOL_SIZE": "db_pool_size",
    "METRICS_DB_INTERVAL_S": "metrics_db_interval_s",
    "SHUTDOWN_GRACE_S": "shutdown_grace_s",
    "SHUTDOWN_SPREAD_S": "shutdown_spread_s",
    "DISPATCH_RADIUS_MI": "dispatch_radius_mi",
    "MAX_RADIUS_MI": "max_radius_mi",
    "POSITION_STALE_S": "position_stale_s",
    "INVITE_TTL_S": "invite_ttl_s",
    "PLATFORM_FEE_BP": "platform_fee_bp",
    "SWEEP_INTERVAL_S": "sweep_interval_s",
    "PRESENCE_TTL_S": "presence_ttl_s",
    "DELIVERY_ROUTING": "delivery_routing",
    "EMBEDDED_LISTEN": "embedded_listen",
    "EMBEDDED_POSTGRES_PORT": "embedded_postgres_port",
    "EMBEDDED_REDIS_PORT": "embedded_redis_port",
    "FCM_CREDENTIALS": "fcm_credentials",
    "FCM_ENDPOINT": "fcm_endpoint",
    "PUSH_MAX_ATTEMPTS": "push_max_attempts",
    "PUSH_RETRY_BASE_S": "push_retry_base_s",
    "PUSH_POLL_S": "push_poll_s",
    "PUSH_LOG_AFTER_S": "push_log_after_s",
    "HTTP_PORT": "http_port",
    "PUBLIC_URL": "public_url",
    "MAP_TILES_URL": "map_tiles_url",
    "STRIPE_API_KEY": "stripe_api_key",
    "STRIPE_API_BASE": "stripe_api_base",
    "STRIPE_WEBHOOK_SECRET": "stripe_webhook_secret",
    "STRIPE_WEBHOOK_TOLERANCE_S": "stripe_webhook_tolerance_s",
    "STRIPE_CONNECT_COUNTRY": "stripe_connect_country",
    "PAYMENT_POLICY": "payment_policy",
    "PAYOUT_DELAY_S": "payout_delay_s",
    "CANCELLATION_FEE_BP": "cancellation_fee_bp",
    "MONEY_MAX_ATTEMPTS": "money_max_attempts",
    "MONEY_RETRY_BASE_S": "money_retry_base_s",
    "MONEY_POLL_S": "money_poll_s",
    "MONEY_LEASE_S": "money_lease_s",
    "RECONCILE_INTERVAL_S": "reconcile_interval_s",
    "RECONCILE_LOOKBACK_S": "reconcile_lookback_s",
    "AUDIT_INTERVAL_S": "audit_interval_s",
    "OPENAI_API_KEY": "openai_api_key",
    "OPENAI_BASE_URL": "openai_base_url",
    "OPENAI_MODEL": "openai_model",
    "OPENAI_VISION": "openai_vision",
    "AI_TIMEOUT_S": "ai_timeout_s",
    "AI_MAX_RETRIES": "ai_max_retries",
    "AI_MAX_IN_FLIGHT": "ai_max_in_flight",
    "AI_MAX_ANSWERING": "ai_max_answering",
    "AI_QUOTA_PER_HOUR": "ai_quota_per_hour",
    "AI_STREAM_PAUSE_S": "ai_stream_pause_s",
    "AI_MAX_OUTPUT_TOKENS": "ai_max_output_tokens",
    "AI_PRICE_IN_PER_MTOK_USD": "ai_price_in_per_mtok_usd",
    "AI_PRICE_OUT_PER_MTOK_USD": "ai_price_out_per_mtok_usd",
}
FLAG_OF = {name: env for env, name in ENV.items()}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def add_flags(parser: argparse.ArgumentParser, only: tuple[str, ...] | None = None) -> None:
    for f in fields(Config):
        if only is not None and f.name not in only:
            continue
        parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=None, metavar=FLAG_OF[f.name],
                            help=f"(env {FLAG_OF[f.name]}, default {f.default!s})")


def _convert(name: str, raw: str) -> Any:
    kind = {f.name: f.type for f in fields(Config)}[name]
    try:
        if kind in (int, "int"):
            return int(raw)
        if kind in (float, "float"):
            return float(raw)
    except ValueError:
        raise ConfigError(f"{FLAG_OF[name]}={raw!r} is not a number") from None
    if kind in (bool, "bool"):
        if raw.lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off", ""):
            raise ConfigError(f"{FLAG_OF[name]}={raw!r} is not one of true, false (1, 0, yes, no, on, off)")
        return raw.lower() in ("1", "true", "yes", "on")
    if kind in (Path, "Path"):
        return Path(raw)
    if name == "key_dir":
        return Path(raw) if raw else None
    optional = ("database_url", "redis_url", "redis_sentinels", "secret", "kek", "embedded_listen",
                "fcm_credentials", "public_url", "map_tiles_url", "stripe_api_key", "stripe_webhook_secret",
                "openai_api_key", "openai_base_url")
    return raw or None if name in optional else raw


def load(env: Mapping[str, str] = os.environ, flags: argparse.Namespace | None = None) -> Config:
    """Defaults, overridden by environment, overridden by flags; then validated."""
    values: dict[str, Any] = {}
    for var, name in ENV.items():
        if var in env:
            values[name] = _convert(name, env[var])
    for name, raw in vars(flags or argparse.Namespace()).items():
        if name in FLAG_OF and raw is not None:
            values[name] = _convert(name, str(raw))
    config = Config(**values)
    validate(config)
    return config


def sentinels(raw: str) -> list[tuple[str, int]]:
    """REDIS_SENTINELS as (host, port) pairs."""
    found = []
    for item in raw.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) <= 65535:
            raise ConfigError(f"REDIS_SENTINELS={raw!r} is not a list of host:port separated by commas")
        found.append((host.strip("[]"), int(port)))
    return found


def validate(c: Config) -> None:
    if not 0 <= c.port <= 65535:
        raise ConfigError(f"GATEWAY_PORT={c.port} is out of range 0-65535")
    if c.workers < 1:
        raise ConfigError(f"GATEWAY_WORKERS={c.workers} must be at least 1")
    if c.database_url is not None and urlparse(c.database_url).scheme not in ("postgres", "postgresql"):
        raise ConfigError(f"DATABASE_URL must start with postgresql://, got {c.database_url.split(':')[0]!r}")
    if c.redis_url is not None and urlparse(c.redis_url).scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(f"REDIS_URL must start with redis://, rediss:// or unix://, got {c.redis_url!r}")
    if c.redis_sentinels is not None:
        sentinels(c.redis_sentinels)  # raises ConfigError naming the setting
    if c.log_level.upper() not in LOG_LEVELS:
        raise ConfigError(f"LOG_LEVEL={c.log_level!r} is not one of {', '.join(LOG_LEVELS)}")
    if c.delivery_routing not in ("nodes", "multicast"):
        raise ConfigError(f"DELIVERY_ROUTING={c.delivery_routing!r} is not one of nodes, multicast")
    if c.log_format not in ("text", "json"):
        raise ConfigError(f"LOG_FORMAT={c.log_format!r} is not one of text, json")
    if c.fcm_credentials is not None and not Path(c.fcm_credentials).is_file():
        raise ConfigError(f"FCM_CREDENTIALS={c.fcm_credentials!r} is not a readable file")
    if not 0 <= c.http_port <= 65535:
        raise ConfigError(f"HTTP_PORT={c.http_port} is out of range 0-65535")
    for name in ("embedded_postgres_port", "embedded_redis_port"):
        if not 1 <= getattr(c, name) <= 65535:
            raise ConfigError(f"{FLAG_OF[name]}={getattr(c, name)} is out of range 1-65535")
    if c.embedded_postgres_port == c.embedded_redis_port:
        raise ConfigError("EMBEDDED_POSTGRES_PORT and EMBEDDED_REDIS_PORT must differ")
    if c.payment_policy not in ("capture_at_completion", "pay_at_creation"):
        raise ConfigError(f"PAYMENT_POLICY={c.payment_policy!r} is not one of capture_at_completion, pay_at_creation")
    if c.stripe_api_key is not None and not c.stripe_api_key.startswith(("sk_", "rk_")):
        raise ConfigError("STRIPE_API_KEY must be a secret or restricted key (sk_... or rk_...)")
    if urlparse(c.stripe_api_base).scheme not in ("http", "https"):
        raise ConfigError(f"STRIPE_API_BASE={c.stripe_api_base!r} is not an http(s) URL")
    if not 0 <= c.cancellation_fee_bp <= 10_000:
        raise ConfigError(f"CANCELLATION_FEE_BP={c.cancellation_fee_bp} must be between 0 and 10000 (basis points)")
    if not 0 <= c.platform_fee_bp <= 10_000:
        raise ConfigError(f"PLATFORM_FEE_BP={c.platform_fee_bp} must be between 0 and 10000 (basis points)")
    if c.key_dir is not None and key_dir(c).is_relative_to(c.data_dir.absolute()):
        raise ConfigError(f"KEY_DIR={c.key_dir} is inside DATA_DIR: keep the keys apart from the data they protect")
    if c.map_tiles_url is not None and (urlparse(c.map_tiles_url).scheme not in ("http", "https")
                                        or not all(part in c.map_tiles_url for part in ("{z}", "{x}", "{y}"))):
        raise ConfigError(f"MAP_TILES_URL={c.map_tiles_url!r} is not an http(s) URL with {{z}}, {{x}} and {{y}}")
    if c.openai_base_url is not None and urlparse(c.openai_base_url).scheme not in ("http", "https"):
        raise ConfigError(f"OPENAI_BASE_URL={c.openai_base_url!r} is not an http(s) URL")
    if c.ai_timeout_s <= 0 or c.ai_max_retries < 0 or c.ai_max_in_flight < 1 or c.ai_max_answering < 1 \
            or c.ai_quota_per_hour < 0 \
            or c.ai_stream_pause_s < 0 or c.ai_max_output_tokens < 200 \
            or min(c.ai_price_in_per_mtok_usd, c.ai_price_out_per_mtok_usd) < 0:
        raise ConfigError("AI_TIMEOUT_S must be positive, AI_MAX_RETRIES, AI_QUOTA_PER_HOUR, AI_STREAM_PAUSE_S and the "
                          "AI_PRICE_*_PER_MTOK_USD not negative, AI_MAX_IN_FLIGHT and AI_MAX_ANSWERING at least 1 "
                          "and AI_MAX_OUTPUT_TOKENS at least 200")
    if c.secret is not None and len(c.secret) < 32:
        raise ConfigError("GATEWAY_SECRET must be at least 32 characters")
    for name in ("token_ttl_s", "refresh_ttl_s", "invite_ttl_s", "auth_timeout_s", "idle_timeout_s", "max_frame_bytes",
                 "rate_per_s", "rate_burst", "outbox_limit", "db_pool_size", "dispatch_radius_mi",
                 "max_radius_mi", "position_stale_s", "sweep_interval_s", "presence_ttl_s", "push_max_attempts",
                 "push_retry_base_s", "push_poll_s", "push_log_after_s", "stripe_webhook_tolerance_s",
                 "money_max_attempts", "money_retry_base_s", "money_poll_s", "money_lease_s", "reconcile_interval_s",
                 "reconcile_lookback_s", "metrics_db_interval_s"):
        if getattr(c, name) <= 0:
            raise ConfigError(f"{FLAG_OF[name]} must be positive")
    if c.payout_delay_s < 0:
        raise ConfigError("PAYOUT_DELAY_S must not be negative")
    if c.audit_interval_s < 0:
        raise ConfigError("AUDIT_INTERVAL_S must not be negative (0 turns scheduled audits off)")


def key_dir(c: Config) -> Path:
    """Where the key-encryption keys are kept (unless KEK gives the key itself)."""
    return (c.key_dir or Path(str(c.data_dir.absolute()) + "-keys")).absolute()
