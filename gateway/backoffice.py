"""The back office in the browser: the static page under /admin/ on the HTTP side, with caching
headers and a strict Content-Security-Policy. The page is a client of the websocket protocol like
any app; /admin/config.json only tells it where the websocket is and which map tiles to draw."""

import hashlib
import mimetypes
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import msgspec
from aiohttp import web

from gateway.config import Config

WEBUI = Path(__file__).resolve().parent / "webui"
TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".json": "application/json",
         ".png": "image/png", ".svg": "image/svg+xml", ".txt": "text/plain"}
IMMUTABLE = "public, max-age=31536000, immutable"  # vendor/ folders are named after their version
REVALIDATE = "no-cache"  # the page's own files: always asked again, answered 304 while unchanged


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str
    cache: str


def load_assets(root: Path = WEBUI) -> dict[str, Asset]:
    """Every file of the page, read once at start: a request can only name one of these keys, so a
    path like `../config.py` or `%2e%2e/` finds nothing rather than a file outside the folder."""
    assets: dict[str, Asset] = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        name = path.relative_to(root).as_posix()
        body = path.read_bytes()
        kind = TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        assets[name] = Asset(body, kind, etag, IMMUTABLE if name.startswith("vendor/") else REVALIDATE)
    return assets


def origin(url: str) -> str:
    """A tile URL's origin as a CSP source: Leaflet's `{s}` subdomain placeholder becomes `*`."""
    parts = urlparse(url.replace("{s}", "subdomain"))
    return f"{parts.scheme}://{parts.netloc}".replace("subdomain", "*")


class BackOffice:
    def __init__(self, config: Config, ws_port: Callable[[], int]) -> None:
        self.config = config
        self.ws_port = ws_port
        self.assets = load_assets()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/admin", self.to_index)
        app.router.add_get("/admin/config.json", self.settings)
        app.router.add_get("/admin/{path:.*}", self.asset)

    def ws_url(self, request: web.Request) -> str:
        """The websocket as this browser reaches the gateway: the host it asked, the websocket's port."""
        host = request.url.host or self.config.host
        if ":" in host:
            host = f"[{host}]"
        scheme = "wss" if request.url.scheme == "https" else "ws"
        return f"{scheme}://{host}:{self.ws_port()}/ws"

    def policy(self, request: web.Request) -> str:
        tiles = f" {origin(self.config.map_tiles_url)}" if self.config.map_tiles_url else ""
        return ("default-src 'none'; script-src 'self'; style-src 'self'; font-src 'self'; "
                f"img-src 'self' blob: data:{tiles}; connect-src 'self' {self.ws_url(request)}; "
                "base-uri 'none'; form-action 'none'; frame-ancestors 'none'; object-src 'none'")

    def headers(self, request: web.Request, cache: str) -> dict[str, str]:
        return {"Cache-Control": cache, "Content-Security-Policy": self.policy(request),
                "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
                "Cross-Origin-Opener-Policy": "same-origin"}

    async def to_index(self, request: web.Request) -> web.Response:
        raise web.HTTPPermanentRedirect("/admin/")

    async def settings(self, request: web.Request) -> web.Response:
        body = msgspec.json.encode({"ws_url": self.ws_url(request), "map_tiles_url": self.config.map_tiles_url,
                                    "position_stale_s": self.config.position_stale_s,
                                    "dispatch_radius_mi": self.config.dispatch_radius_mi})
        return web.Response(body=body, content_type="application/json", headers=self.headers(request, "no-store"))

    async def asset(self, request: web.Request) -> web.Response:
        name = request.match_info["path"] or "index.html"
        found = self.assets.get(name)
        if found is None:
            return web.Response(status=404, text="not found\n", headers=self.headers(request, "no-store"))
        headers = self.headers(request, found.cache) | {"ETag": found.etag}
        if found.etag in request.headers.get("If-None-Match", ""):
            return web.Response(status=304, headers=headers)
        return web.Response(body=found.body, headers=headers | {"Content-Type": found.content_type})

