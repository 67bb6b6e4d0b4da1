"""Changing the catalog: brands, SKUs, prices, guides and retirement. Each change, its history
entry and the version bump that makes every process reload commit together or not at all."""

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import msgspec

from handlers.admin import feed
from handlers.catalog.scope import check_brand, scope
from handlers.context import Context, Role
from handlers.errors import N_, BadRequest, Conflict, Forbidden, NotFound
from handlers.routing import Router
from protocol.catalog import BrandSave, CategorySave, GuideSave, Names, PriceSave, Retire, Saved, SkuSave
from storage import catalog

router = Router()
EDITORS: tuple[Role, ...] = ("merchant", "admin")


class Change:
    """One change in progress: its connection, the version it makes, and its history entry."""

    def __init__(self, ctx: Context, conn: asyncpg.Connection, brands: list[str] | None, version: int) -> None:
        self.ctx, self.conn, self.brands, self.version = ctx, conn, brands, version
        self.recorded: list[tuple[str, str, str | None]] = []  # told to the live feed once committed

    async def record(self, kind: str, key: str, brand: str | None, before: str | None, after: str) -> Saved:
        who = self.ctx.identity
        assert who is not None
        await catalog.record(self.conn, actor_id=who.user_id, actor_role=who.role, kind=kind, key=key, brand=brand,
                             before=before, after=after)
        self.recorded.append((kind, key, brand))
        return Saved(version=self.version, after=msgspec.json.decode(after))

    async def brand(self, brand_id: str) -> str:
        """The brand's current row (locked), or `not_found` when it does not exist or is not the
        caller's."""
        check_brand(self.brands, brand_id)
        before = await catalog.brand(self.conn, brand_id)
        if before is None:
            raise NotFound(N_("No such brand."))
        return before

    async def sku(self, sku_id: str) -> asyncpg.Record:
        """The SKU's brand and row (locked), or `not_found` alike for another brand's SKU."""
        found = await catalog.sku(self.conn, sku_id)
        if found is None or (self.brands is not None and found["brand_id"] not in self.brands):
            raise NotFound(N_("No such SKU."))
        return found


@asynccontextmanager
async def change(ctx: Context) -> AsyncIterator[Change]:
    async with ctx.services.db.acquire() as conn:
        async with conn.transaction():
            version = await catalog.bump(conn)
            done = Change(ctx, conn, await scope(ctx, conn), version)
            yield done
        for kind, key, brand in done.recorded:
            await feed.publish(ctx, "catalog.changed", brand=brand, detail=f"{kind} {key}")


def translations(names: Names | None) -> dict[str, str]:
    if names is None:
        return {}
    return {k: v for k, v in (("es", names.es), ("zh-Hans", names.zh_hans)) if v is not None}


@router.route(BrandSave, roles=EDITORS)
async def save_brand(ctx: Context, req: BrandSave) -> Saved:
    """Admins create and rename brands; merchants rename their own (a new brand is not theirs)."""
    async with change(ctx) as c:
        check_brand(c.brands, req.brand)
        before = await catalog.brand(c.conn, req.brand)
        if before is None and c.brands is not None:
            raise NotFound(N_("No such brand."))
        after = await catalog.save_brand(c.conn, req.brand, req.name, translations(req.names))
        return await c.record("brand", req.brand, req.brand, before, after)


@router.route(CategorySave, roles=["admin"])
async def save_category(ctx: Context, req: CategorySave) -> Saved:
    """Categories belong to no brand: their history is shown to admins only."""
    async with change(ctx) as c:
        before = await catalog.category(c.conn, req.category)
        after = await catalog.save_category(c.conn, req.category, req.name, translations(req.names))
        return await c.record("category", req.category, None, before, after)


@router.route(SkuSave, roles=EDITORS)
async def save_sku(ctx: Context, req: SkuSave) -> Saved:
    async with change(ctx) as c:
        await c.brand(req.brand)
        if not await catalog.category_exists(c.conn, req.category):
            raise BadRequest(N_("Unknown category."))
        existing = await catalog.sku(c.conn, req.sku)
        if existing is not None and existing["brand_id"] != req.brand:
            # SKU ids are public (catalog.list): saying so tells a merchant nothing new.
            raise Conflict(N_("This SKU belongs to another brand."))
        before = existing["doc"] if existing is not None else None
        after = await catalog.save_sku(c.conn, req.sku, req.brand, req.category, req.name, translations(req.names))
        return await c.record("sku", req.sku, req.brand, before, after)


@router.route(PriceSave, roles=EDITORS)
async def save_price(ctx: Context, req: PriceSave) -> Saved:
    async with change(ctx) as c:
        sku = await c.sku(req.sku)
        if not await catalog.service_type_exists(c.conn, req.service_type):
            raise BadRequest(N_("Unknown service type."))
        before = await catalog.price(c.conn, req.sku, req.service_type)
        after = await catalog.save_price(c.conn, req.sku, req.service_type, req.price_cents, req.currency)
        return await c.record("price", f"{req.sku}/{req.service_type}", sku["brand_id"], before, after)


@router.route(GuideSave, roles=EDITORS)
async def save_guide(ctx: Context, req: GuideSave) -> Saved:
    """A guide keeps its brand (or its having none); a SKU named must be one of that brand's. A guide
    of no brand is a category's for every brand: admins only, since it speaks for every merchant."""
    async with change(ctx) as c:
        if req.brand is None:
            if c.brands is not None:
                raise Forbidden(N_("Only staff edit the guides of a whole category."))
            if req.category is None or req.sku is not None:
                raise BadRequest(N_("A guide without a brand is a category's: give category, and no sku."))
        else:
            await c.brand(req.brand)
        if req.sku is not None and (await c.sku(req.sku))["brand_id"] != req.brand:
            raise NotFound(N_("No such SKU."))
        before = None
        if req.guide_id is None:
            guide_id = uuid.uuid4()
        else:
            try:
                guide_id = uuid.UUID(req.guide_id)
            except ValueError:
                raise NotFound(N_("No such guide.")) from None
            existing = await catalog.guide(c.conn, guide_id)
            if existing is None or existing["brand_id"] != req.brand:
                raise NotFound(N_("No such guide."))
            before = existing["doc"]
        if req.category is not None and not await catalog.category_exists(c.conn, req.category):
            raise BadRequest(N_("Unknown category."))
        after = await catalog.save_guide(
            c.conn, guide_id, req.brand, req.sku, req.locale, req.title, req.body, category=req.category,
            symptoms=req.symptoms, checks=catalog.jsonb(req.checks), call_when=req.call_when,
            likely_parts=req.likely_parts, urgency=req.urgency)
        return await c.record("guide", str(guide_id), req.brand, before, after)


@router.route(Retire, roles=EDITORS)
async def retire(ctx: Context, req: Retire) -> Saved:
    async with change(ctx) as c:
        if req.kind == "brand":
            if req.brand is None:
                raise BadRequest(N_("Retiring a brand needs brand."))
            before = await c.brand(req.brand)
            after = await catalog.retire_brand(c.conn, req.brand, req.retired)
            return await c.record("brand", req.brand, req.brand, before, after)
        if req.sku is None:
            raise BadRequest(N_("Retiring a SKU or a price needs sku."))
        sku = await c.sku(req.sku)
        if req.kind == "sku":
            after = await catalog.retire_sku(c.conn, req.sku, req.retired)
            return await c.record("sku", req.sku, sku["brand_id"], sku["doc"], after)
        if req.service_type is None:
            raise BadRequest(N_("Retiring a price needs service_type."))
        price = await catalog.price(c.conn, req.sku, req.service_type)
        if price is None:
            raise NotFound(N_("No such price."))
        after = await catalog.retire_price(c.conn, req.sku, req.service_type, req.retired)
        return await c.record("price", f"{req.sku}/{req.service_type}", sku["brand_id"], price, after)
