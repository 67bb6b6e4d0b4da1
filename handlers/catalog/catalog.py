"""Reading the catalog: the cached list, troubleshooting guides, the history of changes."""

import base64
import uuid
from typing import Annotated

import msgspec

from handlers.catalog.scope import check_brand, scope
from handlers.context import Context
from handlers.errors import N_, BadRequest
from handlers.routing import ANY_ROLE, Router
from protocol.bounds import LINE
from protocol.catalog import (
    Catalog,
    CatalogList,
    Change,
    Guide,
    GuideCheck,
    GuideList,
    Guides,
    History,
    HistoryList,
)
from storage import catalog

router = Router()


@router.route(CatalogList, roles=ANY_ROLE, logged=False)
async def list_catalog(ctx: Context, req: CatalogList) -> Catalog:
    assert ctx.identity is not None
    return await ctx.services.catalog_cache.get(ctx.services.db, ctx.identity.locale)


@router.route(GuideList, roles=ANY_ROLE, logged=False)
async def guides(ctx: Context, req: GuideList) -> Guides:
    """Every signed-in role reads guides (the assistant, technicians); merchants their brands'."""
    assert ctx.identity is not None
    if ctx.identity.role == "merchant" and req.brand is not None:
        check_brand(await scope(ctx), req.brand)
    rows = await catalog.guides(ctx.services.db, req.brand, req.sku, req.locale, guide_cursor(req.after),
                                req.limit + 1, category=req.category)
    page = rows[:req.limit]
    more = len(rows) > req.limit
    return Guides(guides=[Guide(id=str(r["id"]), brand=r["brand_id"], sku=r["sku_id"], locale=r["locale"],
                                title=r["title"], body=r["body"], updated_at=r["updated_at"],
                                category=r["category"], symptoms=r["symptoms"], checks=CHECKS.decode(r["checks"]),
                                call_when=r["call_when"], likely_parts=list(r["likely_parts"]),
                                urgency=r["urgency"]) for r in page],
                  next_after=encode_cursor([page[-1]["sku_id"] or "", page[-1]["locale"], page[-1]["title"],
                                            str(page[-1]["id"])]) if more else None)


Part = Annotated[str, LINE, msgspec.Meta(max_length=200)]  # what a guide's SKU, locale and title may hold
CURSOR = msgspec.json.Decoder(tuple[Part, Part, Part, uuid.UUID])
CHECKS = msgspec.json.Decoder(list[GuideCheck])


def encode_cursor(key: list[str]) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(key)).decode()


def guide_cursor(after: str | None) -> tuple[str, str, str, uuid.UUID] | None:
    if after is None:
        return None
    try:
        return CURSOR.decode(base64.urlsafe_b64decode(after))
    except (ValueError, msgspec.DecodeError):
        raise BadRequest(N_("The cursor is not valid.")) from None


@router.route(HistoryList, roles=["merchant", "admin"])
async def history(ctx: Context, req: HistoryList) -> History:
    brands = await scope(ctx)
    if req.brand is not None:
        check_brand(brands, req.brand)
        brands = [req.brand]
    rows = await catalog.history(ctx.services.db, brands=brands, kind=req.kind, key=req.key, before=req.before,
                                 limit=req.limit + 1)
    more = len(rows) > req.limit
    rows = rows[:req.limit]
    changes = [Change(id=r["id"], at=r["at"], actor_id=r["actor_id"], actor_role=r["actor_role"], kind=r["kind"],
                      key=r["key"], brand=r["brand_id"], before=catalog.unjson(r["before"]),
                      after=msgspec.json.decode(r["after"])) for r in rows]
    return History(changes=changes, next_cursor=rows[-1]["id"] if more else None)
