"""A local server speaking the FCM HTTP v1 API and Google's OAuth2 token endpoint, so the real
push client runs unchanged against it. Tests script its answers per device token."""

import json
import threading
import urllib.parse
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"


def error(status: int, code: str, fcm_code: str | None = None) -> tuple[int, dict[str, Any]]:
    details = [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": fcm_code}] \
        if fcm_code else []
    return status, {"error": {"code": status, "message": code.lower(), "status": code, "details": details}}


class FakeFcm:
    def __init__(self, project: str = "demo-project") -> None:
        self.project = project
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.scripts: dict[str, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
        self.delivered: list[dict[str, Any]] = []  # messages answered with 200
        self.attempts: dict[str, int] = defaultdict(int)
        self.tokens_issued = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def credentials(self, folder: Path) -> Path:
        pem = self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()).decode()
        path = folder / "service-account.json"
        path.write_text(json.dumps({"type": "service_account", "project_id": self.project,
                                    "client_email": "push@demo-project.iam.gserviceaccount.com",
                                    "private_key": pem, "token_uri": self.url + "/token"}))
        return path

    def __enter__(self) -> "FakeFcm":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path == "/token":
                    form = urllib.parse.parse_qs(raw.decode())
                    claims = jwt.decode(form["assertion"][0], fake.key.public_key(), algorithms=["RS256"],
                                        audience=fake.url + "/token")
                    assert claims["scope"] == SCOPE
                    with fake._lock:
                        fake.tokens_issued += 1
                    self._reply(200, {"access_token": f"token-{fake.tokens_issued}", "expires_in": 3600,
                                      "token_type": "Bearer"})
                    return
                if self.path != f"/v1/projects/{fake.project}/messages:send":
                    self._reply(*error(404, "NOT_FOUND"))
                    return
                if not self.headers.get("Authorization", "").startswith("Bearer token-"):
                    self._reply(*error(401, "UNAUTHENTICATED"))
                    return
                message = json.loads(raw)["message"]
                with fake._lock:
                    fake.attempts[message["token"]] += 1
                    script = fake.scripts.get(message["token"])
                    answer = script.pop(0) if script else (200, {"name": f"projects/{fake.project}/messages/1"})
                    if answer[0] == 200:
                        fake.delivered.append(message)
                self._reply(*answer)

        return Handler
