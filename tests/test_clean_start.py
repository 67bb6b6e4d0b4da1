"""Clean starts as a newcomer meets them: an install without warnings, a first start that names
every address it listens on and warns about nothing, and `run.py reset` back to a fresh start."""

import asyncio
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pexpect

from tests.conftest import ROOT
from tests.processes import GatewayProcess, run_command

TIMEOUT_S = 120.0


def tracked_files() -> list[str]:
    return subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()


async def test_the_package_builds_without_a_warning_and_carries_its_data(tmp_path: Path) -> None:
    source = tmp_path / "source"
    for name in tracked_files():
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    out = tmp_path / "dist"
    build = "from setuptools import build_meta as b; import sys; b.build_wheel(sys.argv[1])"  # what `make` builds
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-W", "default", "-c", build, str(out), cwd=source,
                                                env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    log = (await asyncio.wait_for(proc.communicate(), TIMEOUT_S))[0].decode()
    assert proc.returncode == 0, log
    assert "warning" not in log.lower() and "!!" not in log, log
    [wheel] = out.glob("dispatch_gateway-*-py3-none-any.whl")
    packaged = set(zipfile.ZipFile(wheel).namelist())
    data = [n for n in tracked_files() if n.startswith(("storage/migrations/", "handlers/locales/")) and n.endswith(
        (".sql", ".po"))]
    assert data and set(data) <= packaged  # every migration and catalog is in the package


async def test_a_start_names_its_addresses_warns_nothing_and_reset_starts_afresh(tmp_path: Path) -> None:
    data, keys = tmp_path / "var", tmp_path / "keys"
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_RUNTIME_DIR", "GATEWAY_SECRET", "DATABASE_URL",
                                                             "REDIS_URL")}
    env |= {"LOG_LEVEL": "INFO", "KEY_DIR": str(keys)}
    first = await GatewayProcess("--data-dir", str(data), env=env).start(timeout=TIMEOUT_S)
    assert await first.terminate() == 0
    log = first.output.decode(errors="replace")
    assert f"gateway listening: websocket  ws://127.0.0.1:{first.port}/ws" in log, log
    assert f"gateway listening: HTTP       http://127.0.0.1:{first.http_port} (/livez" in log, log
    assert "warning" not in log.lower(), log  # platformdirs' XDG_RUNTIME_DIR warning among others
    assert (data / "secret").exists() and list(keys.glob("kek-*.pem"))

    code, out = await run_command("reset", "--data-dir", str(data), env=env)  # no terminal to confirm on
    assert code == 2 and "confirm with --yes" in out, out
    assert (data / "postgres").exists()

    code, out = await run_command("reset", "--yes", "--data-dir", str(data), env=env)
    assert code == 0 and f"deleted {data}" in out, out
    assert not data.exists() and list(keys.glob("kek-*.pem"))  # the key folder stays

    # An empty database with the old key folder: a new data key under that KEK, and it serves.
    again = await GatewayProcess("--data-dir", str(data), env=env).start(timeout=TIMEOUT_S)
    try:
        script = tmp_path / "ping.txt"
        script.write_text("ping\n")
        code, out = await run_command("console", "--url", again.url, "--data-dir", str(data), "--role", "admin",
                                      "--sub", "after-reset", "--script", str(script), env=env)
        assert code == 0 and '"role": "admin"' in out and '"server_time"' in out, out
    finally:
        assert await again.terminate() == 0

    code, out = await run_command("reset", "--yes", "--keys", "--data-dir", str(data), env=env)
    assert code == 0 and not data.exists() and not keys.exists(), out


async def test_reset_asks_first_on_a_terminal(tmp_path: Path) -> None:
    data = tmp_path / "var"
    (data / "postgres").mkdir(parents=True)
    child = pexpect.spawn(sys.executable, ["run.py", "reset", "--data-dir", str(data)], cwd=str(ROOT),
                          env={**os.environ, "KEY_DIR": str(tmp_path / "keys")}, encoding="utf-8")
    try:
        await child.expect("Type yes to go on: ", timeout=30, async_=True)
        assert str(data.absolute()) in (child.before or "")
        child.sendline("no")
        await child.expect("nothing deleted", timeout=30, async_=True)
        await child.expect(pexpect.EOF, timeout=30, async_=True)
    finally:
        child.close(force=True)
    assert child.exitstatus == 1 and (data / "postgres").exists()
