"""The catalog as each gateway process keeps it: reloaded when the version row (bumped in the
transaction of every change, from any process) differs from the one it was built from, so a list
costs one read of one row."""

import asyncio
from typing import Any

import asyncpg
import msgspec

from protocol.catalog import Brand, Catalog, Category, Price, ServiceType, Sku
from storage import catalog


def localized(english: str, names: str, locale: str) -> tuple[str, dict[str, str]]:
    """(the name in `locale`, falling back to English; every stored name keyed by language)."""
    stored: dict[str, str] = {"en": english, **msgspec.json.decode(names)}
    return stored.get(locale, english), stored


class CatalogCache:
    def __init__(self) -> None:
        self._version: int | None = None
        self._rows: dict[str, Any] = {}
        self._built: dict[str, Catalog] = {}  # per locale, for the current version
        self._lock = asyncio.Lock()

    async def get(self, db: asyncpg.Pool, locale: str) -> Catalog:
        current = await catalog.version(db)
        if current != self._version:
            async with self._lock:
                if current != self._version:  # another request may have reloaded meanwhile
                    await self._reload(db)
        built = self._built.get(locale)
        if built is None:
            built = self._built[locale] = self._build(locale)
        # A shallow copy: the gateway sets the reply's `id`, the lists are shared and never changed.
        return msgspec.structs.replace(built)

    async def _reload(self, db: asyncpg.Pool) -> None:
        async with db.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            rows = await catalog.snapshot(conn)
        # The snapshot may be newer than the version read before it: the next call sees that
        # version equal and keeps it, or reloads once more.
        self._rows, self._version, self._built = rows, rows["version"], {}

    def _build(self, locale: str) -> Catalog:
        rows = self._rows
        prices: dict[str, list[Price]] = {}
        for p in rows["prices"]:
            prices.setdefault(p["sku_id"], []).append(Price(
                service_type=p["service_type"], price_cents=p["price_cents"], currency=p["currency"],
                retired=p["retired"]))
        brands, categories, services, skus = [], [], [], []
        for r in rows["brands"]:
            name, names = localized(r["name"], r["names"], locale)
            brands.append(Brand(id=r["id"], name=name, names=names, retired=r["retired"]))
        for r in rows["categories"]:
            name, names = localized(r["name"], r["names"], locale)
            categories.append(Category(id=r["id"], name=name, names=names))
        for r in rows["service_types"]:
            name, names = localized(r["name"], r["names"], locale)
            services.append(ServiceType(id=r["id"], name=name, names=names))
        for r in rows["skus"]:
            name, names = localized(r["name"], r["names"], locale)
            skus.append(Sku(id=r["id"], brand=r["brand_id"], category=r["category"], name=name, names=names,
                            retired=r["retired"], prices=prices.get(r["id"], [])))
        assert self._version is not None
        return Catalog(version=self._version, brands=brands, categories=categories, service_types=services,
                       skus=skus)
