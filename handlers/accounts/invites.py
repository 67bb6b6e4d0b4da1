"""Consumers invited by a merchant's order, and `auth.claim`, with which they take their account.

The merchant hands the customer a one-time claim code (there is no mail sender). The code, not
"register with the same e-mail", proves the customer is the person the merchant ordered for:
whoever registered first with an e-mail would otherwise get the account and see its orders."""

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from handlers.accounts.auth import issue
from handlers.context import Context
from handlers.errors import N_, Conflict, NotFound
from handlers.routing import Router
from protocol.auth import Claim, SessionTokens
from protocol.orders import Customer
from storage import orders, users

router = Router()
# Crockford-like: no 0/O, 1/I/L, U. 16 symbols of 30: about 78 bits, typed from a phone or paper.
ALPHABET = "ABCDEFGHJKMNPQRSTVWXYZ23456789"
CODE_LENGTH = 16


@dataclass(frozen=True, slots=True)
class Account:
    """The consumer a merchant's order is for; a claim code when one was issued just now."""

    user_id: str
    claim_code: str | None = None
    claim_expires_at: datetime | None = None


def new_code() -> str:
    raw = "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))
    return "-".join(raw[i:i + 4] for i in range(0, CODE_LENGTH, 4))


def code_hash(code: str) -> bytes:
    """The stored form of a code, typed with or without dashes, spaces or lower case."""
    normalized = "".join(c for c in code.upper() if c not in "- ")
    return hashlib.sha256(normalized.encode()).digest()


async def customer_account(ctx: Context, conn: asyncpg.Connection, customer: Customer,
                           brands: list[str]) -> Account:
    """The consumer with the customer's e-mail (matched case-insensitively by its blind index),
    or a new invited one, in the caller's transaction (`conn`) so it exists only with the order.

    An account still unclaimed gets a fresh code (the previous one stops working) when all its
    orders are of the merchant's `brands`: a code for an account holding another brand's order
    would show that order to this merchant. Two invites of one e-mail at once: the unique blind
    index lets one insert win; the other finds the winner and links to it."""
    cipher = ctx.services.cipher
    expires_at = datetime.now(UTC) + timedelta(seconds=ctx.services.order_rules.invite_ttl_s)
    for _ in range(3):
        user = await users.lock_by_email(conn, cipher, customer.email)
        if user is not None:
            if user.role != "consumer":
                raise Conflict(N_("This e-mail belongs to an account that cannot be ordered for."))
            if user.password_hash is not None or not await orders.only_brands(conn, user.id, brands):
                return Account(user.id)
            code = new_code()
            await users.renew_claim(conn, user.id, code_hash(code), expires_at)
            return Account(user.id, code, expires_at)
        code = new_code()
        assert ctx.identity is not None
        invited = await users.invite(conn, cipher, uuid.uuid4(), customer.email.strip(), customer.name.strip(),
                                     customer.phone, ctx.identity.locale, code_hash(code), expires_at)
        if invited is not None:
            return Account(invited.id, code, expires_at)
    raise Conflict(N_("This e-mail belongs to an account that cannot be ordered for."))


@router.route(Claim, roles=None)
async def claim(ctx: Context, req: Claim) -> SessionTokens:
    locale = ctx.negotiate_locale(req.locale) if req.locale else None
    password_hash = await ctx.services.passwords.hash(req.password)
    user = await users.claim(ctx.services.db, code_hash(req.code), password_hash, locale)
    if user is None:  # unknown, spent and expired codes alike
        raise NotFound(N_("This claim code is not valid. Ask the merchant for a new one."))
    return await issue(ctx, user)
