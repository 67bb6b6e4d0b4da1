"""The load generator: client processes, each holding a share of the sessions on one server.

Clients speak through websockets' Sans-I/O protocol on uvloop, so the client side adds as
little as it can; the same code drives the gateway and the baseline server. Every session
opens with its hello frame (`auth` with a token) and must get a `result` back before it counts.
The parent steers its children over pipes: open the sessions, then either hold them idle or
ping for a time window, then close.
"""

import asyncio
import contextlib
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, cast

import uvloop
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import WebSocketURI, parse_uri

from bench.procfs import busy_seconds, cpu_seconds

RESULT = b'{"type":"result"'  # both servers put the tag first, as msgspec encodes it
CLOSE_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Share:
    """What one client process does."""

    url: str
    hellos: Sequence[bytes]  # the first frame of each session
    window: int  # pings in flight per session
    connect_concurrency: int  # handshakes in flight per process (the listen backlog is 100)


@dataclass
class Tally:
    """Replies counted inside the measurement window, over all client processes."""

    replies: int = 0
    errors: int = 0  # frames other than `result` (e.g. rate_limited), lost sessions: the run is not valid
    seconds: float = 0.0
    client_cpu: float = 0.0  # CPU seconds of all client processes during the window
    server_cpu: float = 0.0  # CPU seconds of the server during the window
    other_cpu: float = 0.0  # CPU seconds the rest of the machine used meanwhile (noise)


class Clients:
    """`with Clients(url, hellos, processes=2) as clients: clients.open(); clients.ping(...)`."""

    def __init__(self, url: str, hellos: Sequence[bytes], *, processes: int, window: int = 4,
                 connect_concurrency: int = 32, cpus: set[int] | None = None) -> None:
        # fork: the children inherit their share instead of unpickling it, and start at once.
        ctx = multiprocessing.get_context("fork")
        self.pipes: list[Connection] = []
        self.processes: list[BaseProcess] = []
        self._child_ends: list[Connection] = []
        for i in range(processes):
            share = Share(url, hellos[i::processes], window, connect_concurrency)
            parent, child = ctx.Pipe()
            process = ctx.Process(target=_child, args=(child, share), name=f"bench-client-{i}", daemon=True)
            self.pipes.append(parent)
            self.processes.append(process)
            self._child_ends.append(child)
        self.cpus = cpus

    def __enter__(self) -> "Clients":
        try:
            for process, child_end in zip(self.processes, self._child_ends, strict=True):
                process.start()
                child_end.close()  # so a child that dies shows as a broken pipe, not silence
                if self.cpus and process.pid is not None:
                    os.sched_setaffinity(process.pid, self.cpus)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def open(self, timeout: float) -> tuple[int, int, str]:
        """Open every session and wait for its hello's reply: (opened, failed, first error)."""
        opened = failed = 0
        first_error = ""
        for reply in self._gather(timeout, "ready"):
            opened += reply[1]
            failed += reply[2]
            first_error = first_error or reply[3]
        return opened, failed, first_error

    def ping(self, warmup: float, seconds: float, server_pid: int,
             hooks: tuple[Callable[[], None], Callable[[], None]] | None = None) -> Tally:
        """Every session pings (`window` in flight) for warmup + seconds; replies are counted in the
        last `seconds` only, and the CPU time of clients and server over the same window. `hooks`
        are called as the window opens and closes."""
        start = time.monotonic() + 0.2
        t_from, t_until = start + warmup, start + warmup + seconds
        for pipe in self.pipes:
            pipe.send(("ping", start, t_from, t_until))
        _sleep_until(t_from)
        if hooks:
            hooks[0]()
        clients_from, server_from, machine_from = self._cpu(), cpu_seconds(server_pid), busy_seconds()
        _sleep_until(t_until)
        tally = Tally(seconds=seconds, client_cpu=self._cpu() - clients_from,
                      server_cpu=cpu_seconds(server_pid) - server_from)
        tally.other_cpu = max(0.0, busy_seconds() - machine_from - tally.client_cpu - tally.server_cpu)
        if hooks:
            hooks[1]()
        for reply in self._gather(seconds + 60, "pinged"):
            tally.replies += reply[1]
            tally.errors += reply[2]
        return tally

    def stop(self) -> None:
        """Close the sessions and end the processes (killing those that do not end in time)."""
        started = [p for p in self.processes if p.pid is not None]
        if len(started) == len(self.processes):
            with contextlib.suppress(OSError, EOFError, TimeoutError, RuntimeError):
                self._gather(CLOSE_TIMEOUT_S, "closed", ("close",))
        for process in started:
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join(5)
        for pipe in self.pipes:
            pipe.close()
        self.pipes, self.processes = [], []

    def _cpu(self) -> float:
        return sum(cpu_seconds(p.pid) for p in self.processes if p.pid is not None)

    def _gather(self, timeout: float, expect: str, command: tuple[Any, ...] | None = None) -> list[Any]:
        if command is not None:
            for pipe in self.pipes:
                pipe.send(command)
        deadline = time.monotonic() + timeout
        replies = []
        for pipe, process in zip(self.pipes, self.processes, strict=True):
            while True:  # skip what a child said before the command (when stopping early)
                while not pipe.poll(0.2):
                    if not process.is_alive():
                        raise RuntimeError(f"{process.name} exited with {process.exitcode}")
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{process.name}: no `{expect}` within {timeout:.0f} s")
                try:
                    reply = pipe.recv()
                except EOFError:
                    process.join(1)
                    raise RuntimeError(f"{process.name} exited with {process.exitcode}") from None
                if reply[0] == "failed":
                    raise RuntimeError(f"{process.name} failed: {reply[1]}")
                if reply[0] == expect:
                    replies.append(reply)
                    break
        return replies


def _sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


# -- the child process ---------------------------------------------------------------------------
def _child(pipe: Connection, share: Share) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop, and cleans up
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    try:
        uvloop.run(_drive(pipe, share))
    except BaseException as exc:
        with contextlib.suppress(OSError):
            pipe.send(("failed", f"{type(exc).__name__}: {exc}"))
        raise


async def _drive(pipe: Connection, share: Share) -> None:
    commands: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    loop.add_reader(pipe.fileno(), lambda: commands.put_nowait(pipe.recv()))
    sessions = await _open_all(pipe, share)
    try:
        while True:
            command = await commands.get()
            if command[0] == "ping":
                replies, errors = await _ping_all(sessions, share.window, *command[1:])
                pipe.send(("pinged", replies, errors))
            elif command[0] == "close":
                break
    finally:
        for session in sessions:
            session.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT_S - 5):
                await asyncio.gather(*(s.closed for s in sessions), return_exceptions=True)
        for session in sessions:
            session.abort()
    pipe.send(("closed",))


async def _open_all(pipe: Connection, share: Share) -> list["Session"]:
    gate = asyncio.Semaphore(share.connect_concurrency)
    uri = parse_uri(share.url)
    loop = asyncio.get_running_loop()

    async def open_one(hello: bytes) -> Session:
        async with gate:
            session = Session(uri, hello)
            try:
                async with asyncio.timeout(30):
                    await loop.create_connection(lambda: session, uri.host, uri.port)
                    reply = await session.opened
            except BaseException:
                session.abort()
                raise
            if not reply.startswith(RESULT):
                session.close()
                raise RuntimeError(f"hello refused: {reply[:200]!r}")
            return session

    results = await asyncio.gather(*(open_one(h) for h in share.hellos), return_exceptions=True)
    sessions = [r for r in results if isinstance(r, Session)]
    errors = [r for r in results if not isinstance(r, Session)]
    first = f"{type(errors[0]).__name__}: {errors[0]}" if errors else ""
    pipe.send(("ready", len(sessions), len(errors), first))
    return sessions


async def _ping_all(sessions: list["Session"], window: int, start: float, t_from: float,
                    t_until: float) -> tuple[int, int]:
    await asyncio.sleep(max(0.0, start - time.monotonic()))
    counts = [0, 0]  # replies in the window, error frames and lost sessions
    for session in sessions:
        session.ping(window, t_from, t_until, counts)
    await asyncio.sleep(max(0.0, t_until - time.monotonic()) + 0.05)
    return counts[0], counts[1]


class Session(asyncio.Protocol):
    """One client session on websockets' Sans-I/O protocol: bytes in, frames out, and no task,
    future or lock per frame. (The asyncio client costs as much CPU per reply as the bare server
    does to answer it, so the clients, not the server, would set the pace.)"""

    def __init__(self, uri: WebSocketURI, hello: bytes) -> None:
        self.ws = ClientProtocol(uri, max_size=1 << 20)
        self.hello = hello
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[bytes] = loop.create_future()  # the hello's reply
        self.closed: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.counts: list[int] | None = None  # set while pinging
        self.sent = 0
        self.t_from = self.t_until = 0.0

    # -- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.ws.send_request(self.ws.connect())
        self._flush()

    def data_received(self, data: bytes) -> None:
        ws = self.ws
        ws.receive_data(data)
        for event in ws.events_received():
            if isinstance(event, Frame):
                if event.opcode is Opcode.TEXT:
                    self._message(cast(bytes, event.data))  # parsed frames hold bytes
            elif isinstance(event, Response):
                if ws.handshake_exc is not None:
                    self._fail(ws.handshake_exc)
                else:
                    ws.send_text(self.hello)
        self._flush()  # also pongs and the closing handshake, which the protocol answers itself

    def eof_received(self) -> bool | None:
        self.ws.receive_eof()
        self._flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionError("connection closed"))
        if self.counts is not None:
            self.counts[1] += 1
            self.counts = None
        if not self.closed.done():
            self.closed.set_result(None)

    # -- the session --------------------------------------------------------------------------
    def ping(self, window: int, t_from: float, t_until: float, counts: list[int]) -> None:
        """Keep `window` pings in flight until t_until; count `result` replies from t_from."""
        self.counts, self.t_from, self.t_until = counts, t_from, t_until
        for _ in range(window):
            self._send_ping()
        self._flush()

    def close(self) -> None:
        self.counts = None
        if self.transport is not None and not self.transport.is_closing() and self.ws.state is State.OPEN:
            self.ws.send_close()
            self._flush()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _message(self, data: bytes) -> None:
        if not self.opened.done():
            self.opened.set_result(data)
            return
        counts = self.counts
        if counts is None:
            return
        now = time.monotonic()
        if now >= self.t_until:
            self.counts = None
            return
        if not data.startswith(RESULT):
            counts[1] += 1
        elif now >= self.t_from:
            counts[0] += 1
        self._send_ping()

    def _send_ping(self) -> None:
        self.sent += 1
        self.ws.send_text(b'{"type":"ping","id":"%d"}' % self.sent)

    def _flush(self) -> None:
        transport = self.transport
        if transport is None:
            return
        for data in self.ws.data_to_send():
            if data:
                transport.write(data)
            elif transport.can_write_eof():  # the protocol is done: half-close, as websockets does
                transport.write_eof()

    def _fail(self, exc: BaseException) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc)
            self.opened.exception()  # retrieved: a session that fails to open is counted, not logged
