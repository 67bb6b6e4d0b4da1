"""Which brands a caller may change or read the history of: admins every brand, merchants the
brands they are members of. Another brand is `not_found`, exactly like a brand that does not exist."""

import asyncpg

from handlers.context import Context
from handlers.errors import N_, NotFound
from storage import catalog


async def scope(ctx: Context, conn: asyncpg.Connection | None = None) -> list[str] | None:
    """The caller's brands (held for `conn`'s transaction when given); None: every brand (admins)."""
    assert ctx.identity is not None
    if ctx.identity.role == "admin":
        return None
    return await catalog.merchant_brands(conn or ctx.services.db, ctx.identity.user_id)


def check_brand(brands: list[str] | None, brand_id: str) -> None:
    """Refuse a brand outside the caller's scope with the answer an unknown brand gets."""
    if brands is not None and brand_id not in brands:
        raise NotFound(N_("No such brand."))
