"""Firebase Cloud Messaging HTTP v1: OAuth2 with a service account, one send per device token.

The endpoint and the token URI come from configuration and the credentials file, so tests point
the real client at a local server that speaks the same API."""

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import msgspec

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"


@dataclass(frozen=True)
class Outcome:
    """What became of one send: delivered, the token is gone for good, or try again later."""

    kind: str  # "sent" | "unregistered" | "retry" | "failed"
    detail: str = ""
    retry_after_s: float | None = None


class ServiceAccount(msgspec.Struct):
    project_id: str
    client_email: str
    private_key: str
    token_uri: str = "https://oauth2.googleapis.com/token"


class FcmClient:
    def __init__(self, credentials: Path, endpoint: str = "https://fcm.googleapis.com",
                 timeout_s: float = 10.0) -> None:
        self.account = msgspec.json.decode(credentials.read_bytes(), type=ServiceAccount)
        self.url = f"{endpoint.rstrip('/')}/v1/projects/{self.account.project_id}/messages:send"
        self._http = httpx.AsyncClient(timeout=timeout_s)
        self._token: tuple[str, float] | None = None  # access token, expiry (monotonic)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _access_token(self) -> str:
        if self._token is not None and time.monotonic() < self._token[1] - 60:
            return self._token[0]
        now = int(time.time())
        assertion = jwt.encode({"iss": self.account.client_email, "scope": SCOPE, "aud": self.account.token_uri,
                                "iat": now, "exp": now + 3600}, self.account.private_key, algorithm="RS256")
        response = await self._http.post(self.account.token_uri, data={
            "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion})
        response.raise_for_status()
        body = response.json()
        self._token = (body["access_token"], time.monotonic() + float(body.get("expires_in", 3600)))
        return self._token[0]

    async def send(self, token: str, title: str, body: str, data: dict[str, str]) -> Outcome:
        message = {"message": {"token": token, "notification": {"title": title, "body": body}, "data": data,
                               "android": {"priority": "high"}}}
        try:
            response = await self._http.post(self.url, json=message,
                                              headers={"Authorization": f"Bearer {await self._access_token()}"})
        except (httpx.HTTPError, OSError) as exc:
            return Outcome("retry", f"transport: {exc!r}")
        if response.status_code == 200:
            return Outcome("sent", response.json().get("name", ""))
        return self._failure(response)

    def _failure(self, response: httpx.Response) -> Outcome:
        try:
            error: dict[str, Any] = response.json().get("error", {})
        except ValueError:
            error = {}
        codes = {d.get("errorCode") for d in error.get("details", []) if isinstance(d, dict)}
        detail = f"{response.status_code} {error.get('status', '')} {','.join(sorted(c for c in codes if c))}"
        if response.status_code == 404 or "UNREGISTERED" in codes:
            return Outcome("unregistered", detail)
        if response.status_code == 401:
            self._token = None  # expired or revoked: a fresh one next time
            return Outcome("retry", detail)
        if response.status_code == 429 or response.status_code >= 500:
            after = response.headers.get("Retry-After")
            return Outcome("retry", detail, float(after) if after and after.isdigit() else None)
        if response.status_code == 400 and "INVALID_ARGUMENT" in (error.get("status"), *codes):
            return Outcome("unregistered", detail)  # a malformed token never becomes valid
        return Outcome("failed", detail)
