"""`run.py user create`: staff accounts (admins, merchants with their brands). They sign in with
`auth.login` like everyone else, but are never created through the protocol."""

import asyncio
import uuid

import asyncpg
import msgspec

from gateway.app import start_cipher
from gateway.config import Config
from handlers.accounts.passwords import Passwords
from protocol.auth import Email, Password
from protocol.orders import PersonName
from storage import catalog, users
from storage.db import connect_postgres
from storage.migrate import migrate

ACTOR = "run.py"  # who the catalog history says set a new merchant's brands


class UserError(ValueError):
    """A refused account, with a one-line reason."""


def checked(value: str, kind: object, what: str) -> str:
    try:
        result: str = msgspec.convert(value, type=kind)
    except msgspec.ValidationError as exc:
        raise UserError(f"{what} is not valid: {str(exc).split(' - ')[0].lower()}") from None
    return result


async def create(config: Config, url: str, *, role: str, email: str, name: str, password: str,
                 brands: list[str], passwords: Passwords | None = None) -> str:
    """Create the account (and a merchant's memberships) in one transaction; the line to print."""
    email = checked(email.strip(), Email, "the e-mail")
    name = checked(name.strip(), PersonName, "the name")
    checked(password, Password, "the password (8 to 256 characters)")
    if brands and role != "merchant":
        raise UserError("--brand is for merchants only")
    db = await asyncio.wait_for(connect_postgres(url, 2), 15)
    try:
        async with db.acquire() as conn:
            await migrate(conn)
        cipher = await start_cipher(config, db)
        wanted = sorted(set(brands))
        unknown = set(wanted) - await catalog.known_brands(db, wanted)
        if unknown:
            raise UserError(f"unknown brand: {', '.join(sorted(unknown))}")
        user_id = uuid.uuid4()
        password_hash = await (passwords or Passwords()).hash(password)
        async with db.acquire() as conn, conn.transaction():
            user = await users.create_user(conn, cipher, user_id, email, password_hash, role, name, None, "en")
            if user is None:
                raise UserError("an account with this e-mail already exists")
            if wanted:
                await _set_brands(conn, str(user_id), wanted)
    finally:
        await db.close()
    return f"{role} {user_id} created ({email}" + (f", brands {', '.join(wanted)})" if wanted else ")")


async def _set_brands(conn: asyncpg.Connection, merchant_id: str, brands: list[str]) -> None:
    old = await catalog.set_merchant_brands(conn, merchant_id, brands)
    await catalog.record(conn, actor_id=ACTOR, actor_role="admin", kind="merchant_brands", key=merchant_id,
                         brand=None, before=catalog.jsonb({"brands": old}), after=catalog.jsonb({"brands": brands}))

