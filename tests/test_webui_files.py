"""The back office's files as the HTTP side serves them: a strict Content-Security-Policy, caching
(immutable vendor files, revalidated own files, 304 on a matching ETag), the config the page reads,
404 for unknown paths and for any way out of the folder, the vendored libraries matching their
manifest, and a wheel that carries every file."""

import asyncio
import base64
import hashlib
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest

from gateway.backoffice import WEBUI
from tests.conftest import ROOT


def base(gateway) -> str:
    return f"http://127.0.0.1:{gateway.http_port}"


async def get(gateway, path: str, **headers: str) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.get(base(gateway) + path, headers=headers)


async def test_the_page_has_a_strict_policy_and_is_revalidated(gateway):
    page = await get(gateway, "/admin/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = dict(part.strip().split(" ", 1) for part in page.headers["content-security-policy"].split(";"))
    assert policy["default-src"] == "'none'" and policy["script-src"] == "'self'" and policy["style-src"] == "'self'"
    assert policy["connect-src"] == f"'self' ws://127.0.0.1:{gateway.port}/ws"
    assert policy["frame-ancestors"] == "'none'" and "unsafe" not in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-cache" and page.headers["x-content-type-options"] == "nosniff"
    assert "<script" not in page.text.replace('<script type="module" src="js/app.js"></script>', "")
    again = await get(gateway, "/admin/", **{"If-None-Match": page.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    moved = await get(gateway, "/admin")
    assert moved.status_code == 308 and moved.headers["location"] == "/admin/"


async def test_vendor_files_are_immutable_and_own_files_revalidated(gateway):
    leaflet = await get(gateway, "/admin/vendor/leaflet-1.9.4/leaflet-src.esm.js")
    assert leaflet.status_code == 200 and leaflet.headers["content-type"].startswith("text/javascript")
    assert leaflet.headers["cache-control"] == "public, max-age=31536000, immutable" and leaflet.headers["etag"]
    client = await get(gateway, "/admin/js/client.js")
    assert client.headers["cache-control"] == "no-cache"
    assert (await get(gateway, "/admin/css/app.css")).headers["content-type"].startswith("text/css")


async def test_the_config_tells_the_page_where_the_websocket_is(gateway, make_gateway):
    config = await get(gateway, "/admin/config.json")
    assert config.headers["cache-control"] == "no-store"
    assert config.json()["ws_url"] == f"ws://127.0.0.1:{gateway.port}/ws"
    assert config.json()["map_tiles_url"] is None
    tiles = "https://tiles.example.org/{z}/{x}/{y}.png"
    async with make_gateway(map_tiles_url=tiles) as gw:
        assert (await get(gw, "/admin/config.json")).json()["map_tiles_url"] == tiles
        assert "img-src 'self' blob: data: https://tiles.example.org;" in (
            await get(gw, "/admin/")).headers["content-security-policy"]
    async with make_gateway(map_tiles_url="https://{s}.tile.example.org/{z}/{x}/{y}.png") as gw:
        assert "img-src 'self' blob: data: https://*.tile.example.org;" in (
            await get(gw, "/admin/")).headers["content-security-policy"]


@pytest.mark.parametrize("path", ["/admin/nothing.js", "/admin/../gateway/config.py", "/admin/%2e%2e/config.py",
                                  "/admin/..%2fbackoffice.py", "/admin/js/../../backoffice.py",
                                  "/admin/vendor/../../backoffice.py", "/admin//etc/passwd", "/admin/.hidden"])
async def test_unknown_paths_and_ways_out_of_the_folder_are_404(gateway, path):
    async with httpx.AsyncClient() as client:
        # sent as written: httpx would otherwise normalize the dots away before they reach the server
        request = client.build_request("GET", base(gateway) + "/")
        request.url = request.url.copy_with(raw_path=path.encode())
        response = await client.send(request)
    assert response.status_code == 404
    assert b"import" not in response.content and b"def " not in response.content


def test_the_vendored_files_match_their_manifest():
    manifest = json.loads((WEBUI / "vendor" / "manifest.json").read_text())
    assert {(p["name"], p["version"]) for p in manifest} == {("leaflet", "1.9.4"), ("uplot", "1.6.32")}
    for package in manifest:
        assert package["integrity"].startswith("sha512-") and package["license"] in ("BSD-2-Clause", "MIT")
        folder = WEBUI / "vendor" / f"{package['name']}-{package['version']}"
        assert "LICENSE" in package["files"]
        for name, digest in package["files"].items():
            found = base64.b64encode(hashlib.sha256((folder / name).read_bytes()).digest()).decode()
            assert digest == f"sha256-{found}", name
        on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
        assert on_disk == set(package["files"])


async def test_a_built_wheel_carries_every_file_of_the_page(tmp_path: Path):
    built = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "pip", "wheel", "--no-deps",
                                                     "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
                                    capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    [wheel] = tmp_path.glob("dispatch_gateway-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        inside = {name for name in archive.namelist() if name.startswith("gateway/webui/")}
    wanted = {"gateway/webui/" + p.relative_to(WEBUI).as_posix() for p in WEBUI.rglob("*")
              if p.is_file() and not p.name.startswith(".")}
    assert wanted and inside == wanted


def catalog(name: str) -> dict[str, str]:
    text = (WEBUI / "js" / "locales" / name).read_text(encoding="utf-8")
    found: dict[str, str] = json.loads(text[text.index("{"):text.rindex("}") + 1])
    return found


def test_every_text_of_the_page_is_translated():
    sources = "".join(p.read_text(encoding="utf-8") for p in (WEBUI / "js").rglob("*.js") if "locales" not in p.parts)
    texts = set(re.findall(r'\bt\("((?:[^"\\]|\\.)+)"', sources))
    states = (WEBUI / "js" / "i18n.js").read_text(encoding="utf-8")
    texts |= set(re.findall(r'\w+: "([a-z ]+)"', states[states.index("STATE_LABELS"):]))
    assert len(texts) > 150
    for name in ("es.js", "zh-Hans.js"):
        translated = catalog(name)
        assert sorted(texts - set(translated)) == [], name
        assert all(value.strip() for value in translated.values())
        for text in texts:  # the same {placeholders} in the translation
            assert set(re.findall(r"\{\w+\}", translated[text])) == set(re.findall(r"\{\w+\}", text)), text
