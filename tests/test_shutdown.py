"""Graceful shutdown, and the embedded default: a gateway with no URLs runs its own servers."""

import asyncio
import contextlib
import os
import signal
import socket
import uuid
from pathlib import Path

import msgspec
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from protocol.auth import Auth, Login, Ping, Register
from protocol.client import Backoff, Client, Reconnecting
from tests.conftest import SECRET, mint, ws_url
from tests.processes import GatewayProcess, gone, workers_of


async def test_sigterm_closes_sessions_with_1012_and_exits_0(gateway, servers, tmp_path):
    args = ("--database-url", servers[0], "--redis-url", servers[1], "--secret", SECRET, "--data-dir", str(tmp_path),
            "--log-format", "json")
    async with GatewayProcess(*args, env={"LOG_LEVEL": "INFO"}) as served:
        clients = [await Client.connect(served.url) for _ in range(5)]
        for client in clients:
            await client.request(Auth(token=mint(gateway, "technician")[1]))
        assert await served.terminate() == 0
        for client in clients:
            await asyncio.wait_for(client.ws.wait_closed(), 5)
            assert client.ws.close_code == 1012 and client.ws.close_reason == "service restart"
    # structured logs: one JSON object per line
    logs = [msgspec.json.decode(line) for line in served.output.decode().splitlines() if line.strip()]
    assert any(entry["msg"].startswith("shutting down: closing 5 sessions") for entry in logs)
    assert all({"ts", "level", "logger", "msg"} <= set(entry) for entry in logs)


async def test_a_supervisor_killed_outright_takes_its_workers_with_it(servers, tmp_path):
    args = ("--database-url", servers[0], "--redis-url", servers[1], "--secret", SECRET, "--data-dir", str(tmp_path),
            "--workers", "2")
    async with GatewayProcess(*args) as served:
        assert served.process is not None
        workers = workers_of(served.process.pid)
        assert len(workers) == 2
        served.kill()  # SIGKILL: it forwards no signal to them
        assert await gone(workers) == []  # before, they went on serving the port with no supervisor


def _processes_under(path) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if proc.name.isdigit() and str(path) in (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                found.append(proc.name)
    return found


@pytest.mark.timeout(180)
async def test_embedded_servers_start_keep_data_and_stop(tmp_path):
    env = {"DATABASE_URL": "", "REDIS_URL": "", "GATEWAY_SECRET": ""}  # nothing configured
    email = f"embedded-{uuid.uuid4().hex[:8]}@example.com"
    served = await GatewayProcess("--data-dir", str(tmp_path), env=env).start(timeout=120)
    async with await Client.connect(served.url) as client:
        tokens = await client.request(Register(email=email, password="password1", role="consumer", name="E"))
        await client.request(Auth(token=tokens.token))
        await client.request(Ping())
    assert await served.terminate() == 0
    assert not _processes_under(tmp_path), "PostgreSQL or Redis left running"
    assert (tmp_path / "postgres" / "PG_VERSION").exists() and (tmp_path / "secret").exists()

    # Restarted on the same folder: the account is still there, the old session token still valid.
    served = await GatewayProcess("--data-dir", str(tmp_path), env=env).start(timeout=120)
    try:
        async with await Client.connect(served.url) as client:
            assert (await client.request(Login(email=email, password="password1"))).user_id == tokens.user_id
            assert (await client.request(Auth(token=tokens.token))).user_id == tokens.user_id
    finally:
        assert await served.terminate() == 0
    assert not _processes_under(tmp_path)


def _servers_under(path) -> list[int]:
    """PostgreSQL and Redis processes whose command line mentions `path`."""
    found = []
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            args = (proc / "cmdline").read_bytes().split(b"\0")
            if proc.name.isdigit() and any(name in Path(args[0].decode()).name for name in ("postgres", "redis")) \
                    and any(str(path).encode() in arg for arg in args):
                found.append(int(proc.name))
    return found


async def _stop_servers_under(path) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _servers_under(path):
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        for _ in range(100):
            if not _servers_under(path):
                return
            await asyncio.sleep(0.1)


@pytest.mark.timeout(300)
async def test_after_a_kill_9_every_clean_stop_still_stops_the_embedded_servers(tmp_path):
    env = {"DATABASE_URL": "", "REDIS_URL": "", "GATEWAY_SECRET": ""}
    try:
        killed = await GatewayProcess("--data-dir", str(tmp_path), env=env).start(timeout=120)
        assert killed.process is not None
        killed.process.kill()  # no chance to stop anything: its PostgreSQL and Redis live on
        await killed.process.wait()
        assert _servers_under(tmp_path)
        for start in (1, 2):
            served = await GatewayProcess("--data-dir", str(tmp_path), env=env).start(timeout=120)
            assert await served.terminate() == 0
            assert not _servers_under(tmp_path), f"PostgreSQL or Redis left running after clean stop {start}"
    finally:
        await _stop_servers_under(tmp_path)


async def test_a_gateway_that_cannot_reach_its_database_fails_with_one_line(tmp_path):
    env = {"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none", "REDIS_URL": "redis://127.0.0.1:1/0"}
    served = GatewayProcess("--data-dir", str(tmp_path), env=env)
    with pytest.raises(RuntimeError) as caught:
        await served.start(timeout=30)
    assert "Traceback" not in str(caught.value) and "cannot connect to PostgreSQL" in str(caught.value)


@pytest.mark.parametrize("busy", ["--port", "--http-port"])
async def test_a_port_in_use_fails_with_one_line(servers, tmp_path, busy):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        served = GatewayProcess("--database-url", servers[0], "--redis-url", servers[1], "--data-dir", str(tmp_path),
                                "--secret", SECRET, busy, str(port))
        with pytest.raises(RuntimeError) as caught:
            await served.start(timeout=30)
    assert "Traceback" not in str(caught.value)
    assert f"cannot listen on 127.0.0.1:{port}: address already in use" in str(caught.value).lower()


async def test_closed_sessions_raise_for_pending_requests(make_gateway):
    async with make_gateway() as gw:
        client = await Client.connect(f"ws://127.0.0.1:{gw.port}/ws")
    with pytest.raises((ConnectionError, ConnectionClosed)):
        await client.request(Ping(), timeout=5)


async def test_an_app_reconnects_when_the_close_frame_arrives_while_its_node_still_drains(make_gateway):
    """A draining node sends 1012 to thousands of sessions at once and completes their closing
    handshakes one by one; its apps must not wait for theirs (the TCP close) before reconnecting.
    Here the node never reads the app's answer to its close frame, like one too busy to."""
    async with make_gateway() as draining, make_gateway() as other:
        _, token = mint(draining, "technician")

        async def sign_in(client: Client) -> None:
            await client.request(Auth(token=token))

        app = await Reconnecting([ws_url(draining), ws_url(other)], sign_in, backoff=Backoff(0.01, 0.05)).start()
        assert app.url == ws_url(draining)
        (session,), first = draining.sessions, await app.session()
        session.ws.transport.pause_reading()  # the app's close frame is never read: no TCP close
        session.close(1012, "service restart")
        await asyncio.wait_for(first.closing(), 5)
        client = await app.session(timeout=5)
        assert app.url == ws_url(other) and app.connections == 2
        assert (await client.request(Ping())).server_time is not None
        assert session.ws.state is not State.CLOSED  # the old connection is still closing
        session.ws.transport.resume_reading()
        await app.close()


async def test_with_a_shutdown_spread_the_close_frames_go_out_in_waves_and_no_new_session_lands(make_gateway):
    """SHUTDOWN_SPREAD_S: a stopping node stops accepting, then closes its sessions a wave at a
    time over the spread (here 4 sessions over 2 s: one every half second) rather than all at
    once, so the other nodes get their apps as a stream; every app still gets 1012."""
    async with make_gateway(shutdown_spread_s=2.0) as gw:
        url = ws_url(gw)  # (the port is read from the listening socket, closed first)
        clients = [await Client.connect(url) for _ in range(4)]
        for client in clients:
            await client.request(Auth(token=mint(gw, "technician")[1]))
        stopping = asyncio.create_task(gw.shutdown())
        closings = [asyncio.create_task(client.closing()) for client in clients]
        done, _ = await asyncio.wait(closings, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        assert len(done) == 1  # the first wave: the others are still open, for a later wave
        assert sum(client.ws.state is State.OPEN for client in clients) == 3
        with pytest.raises(OSError):  # a draining node takes no new session meanwhile
            await Client.connect(url)
        await asyncio.wait_for(stopping, 30)
        for client in clients:
            await asyncio.wait_for(client.ws.wait_closed(), 5)
            assert client.ws.close_code == 1012 and client.ws.close_reason == "service restart"
