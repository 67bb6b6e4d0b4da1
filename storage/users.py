"""Accounts and refresh tokens. Names, e-mails and phones are sealed (storage.crypto), each bound
to its user; an e-mail is found by its blind index. Rows from before encryption keep plaintext
`email`/`name` (and a NULL index) until storage.backfill seals them: lookups also match those."""

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from storage.crypto import FieldCipher


@dataclass(frozen=True, slots=True)
class User:
    id: str
    password_hash: str | None  # None: invited by a merchant's order, not claimed yet
    role: str
    locale: str


def _user(row: asyncpg.Record) -> User:
    return User(str(row["id"]), row["password_hash"], row["role"], row["locale"])


def sealed_fields(cipher: FieldCipher, user_id: uuid.UUID | str, email: str | None,
                  name: str | None) -> tuple[bytes | None, bytes | None, bytes | None]:
    """(email index, sealed e-mail, sealed name) of a user."""
    if email is None:
        return None, None, None if name is None else cipher.encrypt(name, f"users.name:{user_id}")
    return (cipher.email_index(email), cipher.encrypt(email, f"users.email:{user_id}"),
            None if name is None else cipher.encrypt(name, f"users.name:{user_id}"))


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def create_user(db: asyncpg.Pool | asyncpg.Connection, cipher: FieldCipher, user_id: uuid.UUID, email: str,
                      password_hash: str, role: str, name: str, phone: str | None, locale: str) -> User | None:
    """Insert a user; None when the e-mail is taken (case-insensitively, by its blind index, or
    as the plaintext of a row not yet sealed: the e-mail is compared, never stored)."""
    email_idx, email_enc, name_enc = sealed_fields(cipher, user_id, email, name)
    phone_enc = None if phone is None else cipher.encrypt(phone, f"users.phone:{user_id}")
    row = await db.fetchrow(
        "INSERT INTO users (id, email_idx, email_enc, password_hash, role, name_enc, phone_enc, locale)"
        " SELECT $1, $2, $3, $4, $5, $6, $7, $8 WHERE NOT EXISTS"
        " (SELECT 1 FROM users WHERE email_idx IS NULL AND lower(email) = lower($9))"
        " ON CONFLICT (email_idx) DO NOTHING RETURNING *",
        user_id, email_idx, email_enc, password_hash, role, name_enc, phone_enc, locale, email.strip())
    return None if row is None else _user(row)


async def invite(conn: asyncpg.Connection, cipher: FieldCipher, user_id: uuid.UUID, email: str, name: str,
                 phone: str, locale: str, claim_hash: bytes, expires_at: datetime) -> User | None:
    """Insert an invited consumer (no password, a claim code's hash); None when the e-mail is
    taken, as in `create_user` (a concurrent invite of the same e-mail committed first)."""
    email_idx, email_enc, name_enc = sealed_fields(cipher, user_id, email, name)
    row = await conn.fetchrow(
        "INSERT INTO users (id, email_idx, email_enc, password_hash, role, name_enc, phone_enc, locale, claim_hash,"
        " claim_expires_at) SELECT $1, $2, $3, NULL, 'consumer', $4, $5, $6, $7, $8 WHERE NOT EXISTS"
        " (SELECT 1 FROM users WHERE email_idx IS NULL AND lower(email) = lower($9))"
        " ON CONFLICT (email_idx) DO NOTHING RETURNING *",
        user_id, email_idx, email_enc, name_enc, cipher.encrypt(phone, f"users.phone:{user_id}"), locale,
        claim_hash, expires_at, email.strip())
    return None if row is None else _user(row)


async def lock_by_email(conn: asyncpg.Connection, cipher: FieldCipher, email: str) -> User | None:
    """The account with this e-mail, locked until the transaction ends (orders for it serialize)."""
    row = await conn.fetchrow("SELECT * FROM users WHERE email_idx = $1"
                              " OR (email_idx IS NULL AND lower(email) = lower($2)) LIMIT 1 FOR UPDATE",
                              cipher.email_index(email), email.strip())
    return None if row is None else _user(row)


async def renew_claim(conn: asyncpg.Connection, user_id: str, claim_hash: bytes, expires_at: datetime) -> bool:
    """A new claim code for an unclaimed account (the previous one stops working)."""
    status: str = await conn.execute(
        "UPDATE users SET claim_hash = $2, claim_expires_at = $3 WHERE id = $1::uuid AND password_hash IS NULL",
        user_id, claim_hash, expires_at)
    return status == "UPDATE 1"


async def claim(db: asyncpg.Pool, claim_hash: bytes, password_hash: str, locale: str | None) -> User | None:
    """Spend a live claim code: the account gets its password, in one conditional statement (two
    racing claims: one wins). None for a code unknown, spent or expired alike."""
    row = await db.fetchrow(
        "UPDATE users SET password_hash = $2, locale = coalesce($3, locale), claim_hash = NULL,"
        " claim_expires_at = NULL, claimed_at = now() WHERE claim_hash = $1 AND claim_expires_at > now()"
        " AND password_hash IS NULL RETURNING *", claim_hash, password_hash, locale)
    return None if row is None else _user(row)


async def user_by_email(db: asyncpg.Pool, cipher: FieldCipher, email: str) -> User | None:
    row = await db.fetchrow("SELECT * FROM users WHERE email_idx = $1"
                            " OR (email_idx IS NULL AND lower(email) = lower($2)) LIMIT 1",
                            cipher.email_index(email), email.strip())
    return None if row is None else _user(row)


async def update_password_hash(db: asyncpg.Pool, user_id: str, password_hash: str) -> None:
    await db.execute("UPDATE users SET password_hash = $2 WHERE id = $1::uuid", user_id, password_hash)


async def add_refresh_token(db: asyncpg.Pool, user_id: str, token: str, family: uuid.UUID,
                            expires_at: datetime) -> None:
    await db.execute(
        "INSERT INTO refresh_tokens (token_hash, user_id, family, expires_at) VALUES ($1, $2::uuid, $3, $4)",
        token_hash(token), user_id, family, expires_at)


async def spend_refresh_token(db: asyncpg.Pool, token: str) -> tuple[User, uuid.UUID] | None:
    """Mark a live refresh token used, in one conditional statement (two racing uses: one wins).

    A token presented again after it was spent revokes its whole family; returns None then."""
    h = token_hash(token)
    row = await db.fetchrow(
        "WITH spent AS (UPDATE refresh_tokens SET used_at = now() WHERE token_hash = $1 AND used_at IS NULL"
        " AND revoked_at IS NULL AND expires_at > now() RETURNING user_id, family)"
        " SELECT u.*, spent.family FROM spent JOIN users u ON u.id = spent.user_id", h)
    if row is not None:
        return _user(row), row["family"]
    await db.execute(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE revoked_at IS NULL AND family ="
        " (SELECT family FROM refresh_tokens WHERE token_hash = $1 AND used_at IS NOT NULL)", h)
    return None


async def revoke_refresh_token(db: asyncpg.Pool, token: str) -> bool:
    status: str = await db.execute(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE family ="
        " (SELECT family FROM refresh_tokens WHERE token_hash = $1) AND revoked_at IS NULL", token_hash(token))
    return status != "UPDATE 0"


async def locales(db: asyncpg.Pool | asyncpg.Connection, user_ids: list[str]) -> dict[str, str]:
    """The preferred language of those of these users who have an account."""
    rows = await db.fetch("SELECT id::text AS id, locale FROM users WHERE id::text = ANY($1::text[])", user_ids)
    return {r["id"]: r["locale"] for r in rows}


async def email_of(db: asyncpg.Pool, cipher: FieldCipher, user_id: str) -> str | None:
    """The user's e-mail; None for an id with no account (a minted token's subject)."""
    row = await db.fetchrow("SELECT id, email, email_enc FROM users WHERE id::text = $1", user_id)
    return None if row is None else await cipher.reveal(row["email_enc"], row["email"], f"users.email:{row['id']}")


async def account(db: asyncpg.Pool, user_id: str) -> asyncpg.Record | None:
    """The user's row (sealed fields sealed) with whether a suspension is in force."""
    row: asyncpg.Record | None = await db.fetchrow(
        "SELECT u.*, EXISTS (SELECT 1 FROM suspensions s WHERE s.user_id = u.id::text AND s.lifted_at IS NULL)"
        " AS suspended FROM users u WHERE u.id::text = $1", user_id)
    return row
