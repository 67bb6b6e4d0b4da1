"""The load generator as load testers run it: `run.py load` against a real gateway, then what its
technicians and consumers left in Redis and PostgreSQL."""

import asyncio
import json
import os
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from gateway.server import Gateway
from storage import geo
from storage.embedded import free_port
from tests.conftest import SECRET, ws_url
from tests.processes import ROOT, gone, run_command, workers_of

TIMEOUT_S = 120.0
NEW_YORK = (40.7128, -74.0060)


async def run_load(url: str, tmp_path: Path, *args: str) -> tuple[int, str, dict[str, Any] | None]:
    """Exit status, output (stdout and stderr) and the JSON summary (None if none was written).
    A subprocess: this event loop keeps serving the gateway meanwhile."""
    summary = tmp_path / f"summary-{uuid.uuid4().hex[:8]}.json"
    status, out = await run_command(
        "load", "--url", url, "--data-dir", str(tmp_path), "--json", str(summary), "--quiet", *args,
        env={k: v for k, v in os.environ.items() if k != "GATEWAY_SECRET"}, timeout=TIMEOUT_S)
    return status, out, json.loads(summary.read_text()) if summary.exists() else None


def prefix() -> str:
    return f"loadtest-{uuid.uuid4().hex[:8]}"


async def test_technicians_stream_positions_and_consumers_order(gateway: Gateway, tmp_path: Path) -> None:
    run = prefix()
    code, out, summary = await run_load(ws_url(gateway), tmp_path, "--secret", SECRET, "--id-prefix", run,
                                        "--technicians", "20", "--duration", "3", "--interval", "0.2",
                                        "--consumers", "2", "--order-interval", "1")
    assert code == 0, out
    assert summary is not None
    assert summary["sessions"] == {"target": 22, "connected": 22, "signed_in": 22}
    assert summary["updates"]["acked"] > 0
    assert summary["errors"] == {} and summary["connection_failures"] == {}
    assert summary["latency_ms"]["p50"] > 0
    assert f"load {run}:" in out and "acknowledged" in out  # the printed summary

    redis = gateway.services.redis
    technicians = {member.decode() async for member, _ in redis.zscan_iter(geo.TECHS, match=f"{run}-*")}
    assert technicians == {f"{run}-tech-{i}" for i in range(20)}
    within: Any = await redis.geosearch(geo.TECHS, longitude=NEW_YORK[1], latitude=NEW_YORK[0], radius=20,
                                        unit="km")
    assert technicians <= {member.decode() for member in within}

    assert summary["orders"]["created"] > 0
    stored = await gateway.services.db.fetchval("SELECT count(*) FROM orders WHERE consumer_id LIKE $1", run + "-%")
    assert stored >= summary["orders"]["created"]


async def test_max_mode_streams(gateway: Gateway, tmp_path: Path) -> None:
    code, out, summary = await run_load(ws_url(gateway), tmp_path, "--secret", SECRET, "--id-prefix", prefix(),
                                        "--technicians", "10", "--duration", "2", "--max")
    assert code == 0, out
    assert summary is not None
    assert summary["mode"] == "max, window 8"
    assert summary["updates"]["acked"] > 10 * 2  # more than one update per technician and second
    assert summary["updates"]["sent"] >= summary["updates"]["acked"]


async def test_a_wrong_secret_is_one_clear_line(gateway: Gateway, tmp_path: Path) -> None:
    code, out, summary = await run_load(ws_url(gateway), tmp_path, "--secret", "not-the-gateway-secret-0123456789",
                                        "--technicians", "5", "--duration", "10")
    assert code == 2, out
    assert out.strip().splitlines()[-1] == ("load: no session could sign in: unauthorized (The session token is "
                                            "not valid.): is the secret the gateway's (--secret, GATEWAY_SECRET, "
                                            "--data-dir)?")
    assert summary is not None
    assert summary["errors"] == {"unauthorized": 5}
    assert summary["updates"]["sent"] == 0


async def test_no_gateway_is_one_clear_line(tmp_path: Path) -> None:
    url = f"ws://127.0.0.1:{free_port()}/ws"
    code, out, _ = await run_load(url, tmp_path, "--secret", SECRET, "--technicians", "3", "--duration", "10")
    assert code == 2, out
    assert out.strip().splitlines()[-1].startswith(f"load: cannot connect to {url}: ")


async def test_no_secret_is_one_clear_line(tmp_path: Path) -> None:
    code, out, summary = await run_load("ws://127.0.0.1:9/ws", tmp_path / "empty")
    assert code == 2, out
    assert out.strip().startswith("load: no secret: set GATEWAY_SECRET")
    assert summary is None


async def test_rate_limited_replies_are_waited_out_and_reported_apart(make_gateway: Any, tmp_path: Path) -> None:
    async with make_gateway(rate_per_s=4.0, rate_burst=4) as gw:
        run = prefix()
        code, out, summary = await run_load(ws_url(gw), tmp_path, "--secret", SECRET, "--id-prefix", run,
                                            "--technicians", "3", "--max", "--duration", "3",
                                            "--consumers", "1", "--order-interval", "0.1")
        assert code == 0, out
        assert summary is not None
        limited = summary["rate_limited"]
        assert limited["replies"] > 0 and limited["waited_s"] > 0
        assert "rate_limited" not in summary["errors"]  # counted apart, not as an error
        gw.metrics.flush()
        refused = gw.metrics.registry.get_sample_value("gateway_frames_in_total", {"type": "rate_limited"})
        assert refused == limited["replies"]  # every refusal the gateway sent was seen and counted
        # Resending at once would be refused thousands of times a second (a round trip is about a
        # millisecond, 8 updates in flight per technician); waiting for retry_after, then keeping
        # to that pace, leaves refusals of the order of the frames the bucket let through.
        admitted = summary["updates"]["acked"] + summary["orders"]["created"]
        assert limited["replies"] < 2 * admitted
        assert summary["updates"]["acked"] <= 3 * (4 + 4 * (3 + 2))  # never above the bucket's rate
        assert summary["orders"]["created"] > 0 and limited["retried"] > 0  # refused orders went again
        assert f"rate-limited  {limited['replies']:,} replies, waited their retry_after" in out


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
async def test_the_workers_end_with_the_load_generator(gateway: Gateway, tmp_path: Path, how: signal.Signals) -> None:
    """Killed outright or stopped with `kill`, the load generator takes its worker processes with
    it: before, they went on reconnecting forever with no parent to stop them."""
    run = prefix()
    load = await asyncio.create_subprocess_exec(
        sys.executable, "run.py", "load", "--url", ws_url(gateway), "--data-dir", str(tmp_path), "--secret", SECRET,
        "--id-prefix", run, "--technicians", "4", "--processes", "2", "--interval", "0.2", "--duration", "600",
        "--quiet", cwd=ROOT, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    try:
        technicians = [f"{run}-tech-{i}" for i in range(4)]
        async with asyncio.timeout(TIMEOUT_S):
            while any(score is None for score in await gateway.services.redis.zmscore(geo.SEEN, technicians)):
                await asyncio.sleep(0.1)  # every worker's sessions stream
        workers = workers_of(load.pid)
        assert len(workers) == 2
        load.send_signal(how)
        assert await gone(workers) == []
        out, _ = await asyncio.wait_for(load.communicate(), TIMEOUT_S)
        if how == signal.SIGTERM:  # like Ctrl-C: the workers stopped, the summary printed
            assert load.returncode == 130 and f"load {run}:" in out.decode(), out.decode()
    finally:
        if load.returncode is None:
            load.kill()
            await load.wait()
