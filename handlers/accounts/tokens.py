"""Session tokens: HS256 JWTs carrying subject, role, locale and expiry."""

import base64
import secrets
from datetime import UTC, datetime, timedelta

import jwt

from handlers.accounts.metrics import AUTH_FAILURES
from handlers.context import ROLES, Identity, Role
from handlers.errors import N_, Unauthorized

ISSUER = "dispatch-gateway"


class TokenIssuer:
    def __init__(self, secret: str, ttl: timedelta, refresh_ttl: timedelta) -> None:
        self._secret = secret
        # The key prepared once: given the bare secret, PyJWT checks it again on every verify
        # (is it PEM, SSH, a DER certificate?), a third of a verify's time, paid per sign-in.
        self._key = jwt.PyJWK({"kty": "oct", "k": base64.urlsafe_b64encode(secret.encode()).rstrip(b"=").decode()},
                              algorithm="HS256")
        self.ttl = ttl
        self.refresh_ttl = refresh_ttl

    def mint(self, user_id: str, role: Role, locale: str = "en", ttl: timedelta | None = None) -> tuple[str, datetime]:
        now = datetime.now(UTC).replace(microsecond=0)
        expires_at = now + (ttl or self.ttl)
        claims = {"sub": user_id, "role": role, "locale": locale, "iss": ISSUER, "typ": "session",
                  "iat": now, "exp": expires_at}
        return jwt.encode(claims, self._secret, algorithm="HS256"), expires_at

    def verify(self, token: str) -> Identity:
        try:
            claims = jwt.decode(token, self._key, algorithms=["HS256"], issuer=ISSUER,
                                options={"require": ["sub", "role", "exp", "iss"]})
        except jwt.ExpiredSignatureError:
            AUTH_FAILURES.labels("token_expired").inc()
            raise Unauthorized(N_("The session token has expired.")) from None
        except jwt.PyJWTError:
            AUTH_FAILURES.labels("token_invalid").inc()
            raise Unauthorized(N_("The session token is not valid.")) from None
        role, sub = claims.get("role"), claims.get("sub")
        if claims.get("typ") != "session" or role not in ROLES or not isinstance(sub, str) or not sub:
            AUTH_FAILURES.labels("token_invalid").inc()
            raise Unauthorized(N_("The session token is not valid."))
        locale = claims.get("locale")
        return Identity(sub, role, locale if isinstance(locale, str) else "en",
                        datetime.fromtimestamp(claims["exp"], UTC))

    def new_refresh_token(self) -> tuple[str, datetime]:
        return secrets.token_urlsafe(32), datetime.now(UTC) + self.refresh_ttl
