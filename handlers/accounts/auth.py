"""Accounts and sessions: register, log in, refresh, log out, authenticate a session, ping.

A suspended user (handlers.admin.suspension) is refused everywhere here with `suspended`. Each
check comes after the step it guards (the session in its user's channel, the refresh token
stored), and a suspension commits before it ends sessions and revokes tokens: whichever of the
two happens first, the other one catches the user."""

import uuid
from datetime import UTC, datetime

from handlers.accounts.metrics import AUTH_FAILURES
from handlers.context import Context, Identity
from handlers.errors import N_, Conflict, Forbidden, Suspended, SuspendedSession, Unauthorized
from handlers.routing import Router
from protocol.auth import Auth, AuthResult, Login, Logout, Ping, Pong, Refresh, Register, SessionTokens
from protocol.frames import Empty
from storage import suspensions, users

router = Router()


async def issue(ctx: Context, user: users.User, family: uuid.UUID | None = None) -> SessionTokens:
    tokens = ctx.services.tokens
    token, expires_at = tokens.mint(user.id, user.role, user.locale)  # type: ignore[arg-type]
    refresh, refresh_expires_at = tokens.new_refresh_token()
    db = ctx.services.db
    await users.add_refresh_token(db, user.id, refresh, family or uuid.uuid4(), refresh_expires_at)
    if await suspensions.in_force(db, user.id):
        await users.revoke_refresh_token(db, refresh)
        AUTH_FAILURES.labels("suspended").inc()
        raise Suspended()
    return SessionTokens(user_id=user.id, role=user.role, token=token,  # type: ignore[arg-type]
                         expires_at=expires_at, refresh_token=refresh, refresh_expires_at=refresh_expires_at)


async def suspended(ctx: Context, user_id: str) -> bool:
    """Whether the user is suspended: for the ways in that are not a session (the HTTP side)."""
    return await suspensions.in_force(ctx.services.db, user_id)


@router.route(Auth, roles=None)
async def auth(ctx: Context, req: Auth) -> AuthResult:
    identity = ctx.services.tokens.verify(req.token)
    current = ctx.identity
    if current is not None and current.user_id != identity.user_id:
        raise Forbidden(N_("This connection is signed in as another user."))
    locale = ctx.negotiate_locale(req.locale or identity.locale)
    identity = Identity(identity.user_id, identity.role, locale, identity.expires_at)
    await ctx.sign_in(identity)
    # In the user's channel from here on: a suspension committed later ends this session, one
    # committed earlier is found now (and ends it: the reply, then the close). The probe is made
    # with the other sign-ins of the moment (one query for a reconnect storm's thousands).
    if await ctx.services.sign_in_reads.suspended.get(identity.user_id):
        AUTH_FAILURES.labels("suspended").inc()
        raise SuspendedSession()
    assert identity.role != "system"  # tokens carry client roles only
    return AuthResult(user_id=identity.user_id, role=identity.role, locale=locale,
                      server_time=datetime.now(UTC), expires_at=identity.expires_at)


@router.route(Ping, roles=None, logged=False)
async def ping(ctx: Context, req: Ping) -> Pong:
    return Pong(server_time=datetime.now(UTC))


@router.route(Register, roles=None)
async def register(ctx: Context, req: Register) -> SessionTokens:
    user_id = uuid.uuid4()
    locale = ctx.negotiate_locale(req.locale or (ctx.identity.locale if ctx.identity else None))
    password_hash = await ctx.services.passwords.hash(req.password)
    user = await users.create_user(ctx.services.db, ctx.services.cipher, user_id, req.email.strip(), password_hash,
                                   req.role, req.name.strip(), req.phone, locale)
    if user is None:
        existing = await users.user_by_email(ctx.services.db, ctx.services.cipher, req.email)
        if existing is not None and existing.password_hash is None:
            raise Conflict(N_("A merchant created this account for you: use the claim code they gave you to set "
                              "your password."))
        raise Conflict(N_("An account with this e-mail already exists."))
    return await issue(ctx, user)


@router.route(Login, roles=None)
async def login(ctx: Context, req: Login) -> SessionTokens:
    user = await users.user_by_email(ctx.services.db, ctx.services.cipher, req.email)
    passwords = ctx.services.passwords
    # An invited account nobody claimed has no password: it fails like a wrong one (same work, same answer).
    if not await passwords.verify(user.password_hash if user else None, req.password) or user is None \
            or user.password_hash is None:
        AUTH_FAILURES.labels("wrong_password").inc()
        raise Unauthorized(N_("Wrong e-mail or password."))
    if passwords.needs_rehash(user.password_hash):
        await users.update_password_hash(ctx.services.db, user.id, await passwords.hash(req.password))
    return await issue(ctx, user)


@router.route(Refresh, roles=None)
async def refresh(ctx: Context, req: Refresh) -> SessionTokens:
    spent = await users.spend_refresh_token(ctx.services.db, req.refresh_token)
    if spent is None and await suspensions.of_refresh_token(ctx.services.db, req.refresh_token):
        AUTH_FAILURES.labels("suspended").inc()
        raise Suspended()
    if spent is None:
        AUTH_FAILURES.labels("refresh_invalid").inc()
        raise Unauthorized(N_("The refresh token is not valid. Please log in again."))
    user, family = spent
    return await issue(ctx, user, family)


@router.route(Logout, roles=None)
async def logout(ctx: Context, req: Logout) -> Empty:
    await users.revoke_refresh_token(ctx.services.db, req.refresh_token)
    return Empty()
