"""Merchants' brand memberships, set by staff: what lets a merchant order for and manage a brand."""

from handlers.context import Context
from handlers.errors import N_, BadRequest
from handlers.routing import Router
from protocol.catalog import MerchantBrands, MerchantBrandsSet
from storage import catalog

router = Router()


@router.route(MerchantBrandsSet, roles=["admin"])
async def set_brands(ctx: Context, req: MerchantBrandsSet) -> MerchantBrands:
    who = ctx.identity
    assert who is not None
    wanted = sorted(set(req.brands))
    if await catalog.known_brands(ctx.services.db, wanted) != set(wanted):
        raise BadRequest(N_("Unknown brand."))
    async with ctx.services.db.acquire() as conn, conn.transaction():
        old = await catalog.set_merchant_brands(conn, req.merchant_id, wanted)
        await catalog.record(conn, actor_id=who.user_id, actor_role=who.role, kind="merchant_brands",
                             key=req.merchant_id, brand=None, before=catalog.jsonb({"brands": old}),
                             after=catalog.jsonb({"brands": wanted}))
    if set(old) - set(wanted):  # a brand taken away: its feed must stop reaching them at once
        await ctx.unwatch_user(req.merchant_id)
    return MerchantBrands(merchant_id=req.merchant_id, brands=wanted)
