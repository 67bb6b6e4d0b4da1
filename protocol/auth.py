"""Sign-up, log-in, token refresh, session authentication and liveness."""

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from protocol.bounds import END, LINE
from protocol.frames import Reply, Request

Role = Literal["consumer", "technician", "merchant", "admin"]
Email = Annotated[
    str, msgspec.Meta(max_length=254, pattern=r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+" + END,
                      description="E-mail address")
]
Password = Annotated[str, LINE, msgspec.Meta(min_length=8, max_length=256)]
Locale = Annotated[str, LINE, msgspec.Meta(max_length=35, description="BCP 47 tag, e.g. `es-MX` or `zh-Hans`")]
Token = Annotated[str, LINE, msgspec.Meta(max_length=4096)]
Phone = Annotated[str, msgspec.Meta(pattern=r"^\+?[0-9 ()-]{6,24}" + END)]


class AuthResult(Reply):
    user_id: str
    role: Role
    locale: str
    server_time: datetime
    expires_at: datetime


class Auth(Request, tag="auth"):
    """First frame of a session: present a session token. `locale` overrides the token's. A
    suspended user is answered `suspended` and the connection closes (4003)."""

    token: Token
    locale: Locale | None = None
    reply = AuthResult


class Pong(Reply):
    server_time: datetime


class Ping(Request, tag="ping"):
    """Liveness and clock check; allowed before `auth`."""

    reply = Pong


class SessionTokens(Reply):
    """A short-lived session token for `auth` and a long-lived refresh token for `auth.refresh`."""

    user_id: str
    role: Role
    token: str
    expires_at: datetime
    refresh_token: str
    refresh_expires_at: datetime


class Register(Request, tag="auth.register"):
    """Create a consumer or technician account; `phone` is stored encrypted."""

    email: Email
    password: Password
    role: Literal["consumer", "technician"]
    name: Annotated[str, LINE, msgspec.Meta(min_length=1, max_length=120)]
    phone: Phone | None = None
    locale: Locale | None = None
    reply = SessionTokens


class Login(Request, tag="auth.login"):
    email: Email
    password: Annotated[str, LINE, msgspec.Meta(max_length=256)]
    reply = SessionTokens


class Refresh(Request, tag="auth.refresh"):
    """Trade a refresh token for new tokens. The old refresh token is spent; presenting a spent
    one again revokes every refresh token of that user (theft detection)."""

    refresh_token: Token
    reply = SessionTokens


class Logout(Request, tag="auth.logout"):
    """Revoke a refresh token (the app signs out)."""

    refresh_token: Token


class Claim(Request, tag="auth.claim"):
    """Claim an account a merchant's order invited: the one-time code the merchant handed over
    and a new password. Signs in like `auth.login`; the code is spent."""

    code: Annotated[str, LINE, msgspec.Meta(min_length=1, max_length=64)]
    password: Password
    locale: Locale | None = None
    reply = SessionTokens
