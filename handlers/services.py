"""What every handler may use: connections, the shared machinery, and each domain's settings.
Built once at start (gateway.app) and handed to handlers through their context."""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import asyncpg
import redis.asyncio as aioredis

from handlers.ai.runtime import AiRuntime
from handlers.ai.settings import AiRules
from handlers.catalog.cache import CatalogCache
from handlers.chat.settings import ChatRules
from handlers.money.settings import MoneyRules
from handlers.orders.settings import OrderRules

if TYPE_CHECKING:
    from handlers.accounts.passwords import Passwords
    from handlers.accounts.tokens import TokenIssuer
    from handlers.ai.engine import Engine
    from handlers.chat.writer import ChatWriter
    from handlers.i18n import Catalogs
    from handlers.money.stripe_api import StripeAccess
    from storage.blobs import BlobStore
    from storage.coalesce import SignInReads
    from storage.crypto import FieldCipher
    from storage.geo import NearbySearch, PositionWriter


@dataclass(slots=True)
class PublicUrl:
    """How apps and browsers reach the gateway's plain-HTTP port (PUBLIC_URL, else
    http://HOST:HTTP_PORT): known once that port is bound, which is before sessions are served."""

    base: str = ""

    def to(self, path: str) -> str:
        return self.base.rstrip("/") + path


@dataclass(frozen=True, slots=True)
class Services:
    db: asyncpg.Pool
    redis: aioredis.Redis
    tokens: "TokenIssuer"
    passwords: "Passwords"
    cipher: "FieldCipher"
    positions: "PositionWriter"
    nearby: "NearbySearch"
    blobs: "BlobStore"
    catalogs: "Catalogs"
    chat: "ChatWriter"
    order_rules: OrderRules
    chat_rules: ChatRules
    money_rules: MoneyRules
    sign_in_reads: "SignInReads"  # a sign-in's suspension probe and duty read, coalesced across sessions
    stripe: "StripeAccess | None" = None  # None: payments are off (no STRIPE_API_KEY)
    public_url: PublicUrl = field(default_factory=PublicUrl)
    catalog_cache: CatalogCache = field(default_factory=CatalogCache)  # this process's copy of the catalog
    ai_rules: AiRules = field(default_factory=AiRules)
    ai_runtime: AiRuntime = field(default_factory=AiRuntime)  # this process's answers in progress and engine
    # Makes the engine (once per process); None: handlers.ai.flow.engine_for picks OpenAI or the offline one.
    ai_engine: "Callable[[Services], Engine] | None" = None
