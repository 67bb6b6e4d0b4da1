"""`make vendor`: the back office's third-party browser libraries, fetched from the npm registry at
pinned versions, checked against the registry's sha512 integrity, and unpacked (only the files the
page loads, plus the license) into gateway/webui/vendor/ with a manifest. The result is committed:
the page runs offline and no test downloads anything."""

import base64
import hashlib
import io
import json
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import httpx

REGISTRY = "https://registry.npmjs.org"
VENDOR = Path(__file__).resolve().parent / "webui" / "vendor"


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    files: dict[str, str]  # path inside the tarball (under package/) -> name under vendor/<name>/


PACKAGES = (
    Package("leaflet", "1.9.4", {"dist/leaflet-src.esm.js": "leaflet-src.esm.js", "dist/leaflet.css": "leaflet.css",
                                 "dist/images/marker-icon.png": "images/marker-icon.png",
                                 "dist/images/marker-icon-2x.png": "images/marker-icon-2x.png",
                                 "dist/images/marker-shadow.png": "images/marker-shadow.png",
                                 "dist/images/layers.png": "images/layers.png",
                                 "LICENSE": "LICENSE"}),
    Package("uplot", "1.6.32", {"dist/uPlot.esm.js": "uPlot.esm.js", "dist/uPlot.min.css": "uPlot.min.css",
                                "LICENSE": "LICENSE"}),
)


def check_integrity(data: bytes, integrity: str) -> None:
    algorithm, _, expected = integrity.partition("-")
    if algorithm != "sha512":
        raise ValueError(f"unexpected integrity algorithm {algorithm!r}")
    found = base64.b64encode(hashlib.sha512(data).digest()).decode()
    if found != expected:
        raise ValueError(f"integrity mismatch: registry says {integrity}, tarball is sha512-{found}")


def file_digest(path: Path) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(path.read_bytes()).digest()).decode()


def fetch(client: httpx.Client, package: Package) -> dict[str, object]:
    meta = client.get(f"{REGISTRY}/{package.name}/{package.version}").raise_for_status().json()
    tarball = client.get(meta["dist"]["tarball"]).raise_for_status().content
    check_integrity(tarball, meta["dist"]["integrity"])
    target = VENDOR / f"{package.name}-{package.version}"
    files: dict[str, str] = {}
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        for inside, name in package.files.items():
            member = archive.extractfile(f"package/{inside}")
            if member is None:
                raise ValueError(f"{package.name}: {inside} is not a file")
            out = target / name
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(member.read())
            files[name] = file_digest(out)
    return {"name": package.name, "version": package.version, "integrity": meta["dist"]["integrity"],
            "tarball": meta["dist"]["tarball"], "license": meta.get("license"), "files": files}


def main() -> int:
    VENDOR.mkdir(parents=True, exist_ok=True)
    with httpx.Client(timeout=60, follow_redirects=True) as client:
        manifest = [fetch(client, package) for package in PACKAGES]
    (VENDOR / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    for entry in manifest:
        print(f"{entry['name']} {entry['version']} ({entry['license']}): {len(entry['files'])} files")  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    sys.exit(main())
