"""The back office's live map (`admin.map`): on-duty technicians' last positions from the GEO
index and the orders in progress from PostgreSQL. Merchants get their brands' orders and only the
technicians working on them: other technicians' whereabouts are not theirs to see."""

from datetime import UTC, datetime

from handlers.catalog.scope import check_brand, scope
from handlers.context import Context
from handlers.routing import Router
from protocol.oversight import AdminMap, MapOrder, MapTechnician, OpsMap
from storage import geo, oversight

router = Router()


@router.route(AdminMap, roles=["merchant", "admin"], logged=False)
async def live_map(ctx: Context, req: AdminMap) -> OpsMap:
    brands = await scope(ctx)
    if req.brand is not None:
        check_brand(brands, req.brand)
        brands = [req.brand]
    rows = await oversight.in_progress(ctx.services.db, brands, req.limit)
    more = len(rows) > req.limit
    orders = [MapOrder(id=str(r["id"]), state=r["state"], brand=r["brand_id"], sku=r["sku_id"],
                       service_type=r["service_type"], technician_id=r["technician_id"], lat=r["lat"], lng=r["lng"],
                       created_at=r["created_at"]) for r in rows[:req.limit]]
    positions, more_technicians = await geo.recent_positions(ctx.services.redis, req.limit)
    assert ctx.identity is not None
    if ctx.identity.role != "admin" or req.brand is not None:
        working = {o.technician_id for o in orders if o.technician_id}
        positions = [p for p in positions if p[0] in working]
        more_technicians = False
    technicians = [MapTechnician(id=t, lng=lng, lat=lat, seen_at=datetime.fromtimestamp(at, UTC))
                   for t, lng, lat, at in positions]
    rules = ctx.services.order_rules
    return OpsMap(technicians=technicians, orders=orders, radius_mi=rules.radius_mi,
                  stale_after_s=rules.stale_after_s, more=more or more_technicians)
