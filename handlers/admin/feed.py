"""The back office's live activity feed: `admin.watch` joins the session to the feed's groups,
and domains call `publish` when something staff watch happens. Admins' group gets every event;
each brand has a group of its own that its merchants join."""

import logging
from datetime import UTC, datetime
from typing import Any

from handlers.catalog.scope import scope
from handlers.context import Context
from handlers.routing import Router
from protocol.admin import Activity, ActivityKind, Unwatch, Watch, Watching

log = logging.getLogger(__name__)
router = Router()
EVERYTHING = "feed:all"
MEMO = "admin.watching"


def brand_group(brand: str) -> str:
    return "feed:brand:" + brand


async def publish(ctx: Context, kind: ActivityKind, *, brand: str | None = None, **fields: Any) -> None:
    """Tell every watching admin, and the brand's watching merchants, on any gateway process. The
    feed is at most once and called after a commit: a failure to publish is logged, never raised
    (the write stands, and a money job that moved money must not be retried for it)."""
    event = Activity(kind=kind, at=datetime.now(UTC), brand=brand, **fields)
    try:
        await ctx.deliver_to_group(EVERYTHING, event)
        if brand is not None:
            await ctx.deliver_to_group(brand_group(brand), event)
    except Exception as exc:
        log.warning("the feed missed %s of order %s: %r", kind, fields.get("order_id"), exc)


@router.route(Watch, roles=["merchant", "admin"], logged=False)
async def watch(ctx: Context, req: Watch) -> Watching:
    brands = await scope(ctx)
    groups = [EVERYTHING] if brands is None else [brand_group(b) for b in brands]
    ctx.leave(ctx.memo.pop(MEMO, ()))
    await ctx.join(groups)
    ctx.memo[MEMO] = groups
    return Watching(brands=brands)


@router.route(Unwatch, roles=["merchant", "admin"], logged=False)
async def unwatch(ctx: Context, req: Unwatch) -> Watching:
    ctx.leave(ctx.memo.pop(MEMO, ()))
    return Watching(brands=[])
