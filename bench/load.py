"""The load generator: client processes, each holding a share of the sessions on one server.

Clients speak through websockets' Sans-I/O protocol on uvloop (`bench.session`), so the client
side adds as little as it can; the same code drives the gateway and the baseline server. Every
session opens with its hello frame (`auth` with a token) and must get a `result` back before it
counts. The parent steers its children over pipes: open the sessions, then send each session a
request, ping, stream positions or loop on a request for a time window, listen for events; close.
Session i of the whole group is session i // processes of child i % processes. The process group
(`Children`) and the child's plumbing serve the other benches' clients too.
"""

import asyncio
import contextlib
import gc
import multiprocessing
import os
import signal
import threading
import time
from array import array
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, NamedTuple, Self, TypeVar

import uvloop
from hdrh.histogram import HdrHistogram
from websockets.uri import WebSocketURI, parse_uri

from bench.procfs import busy_seconds, cpu_seconds
from bench.session import HIGHEST_US, RESULT, Counts, Session, Stream, Walk, device_time, histogram

CLOSE_TIMEOUT_S = 30.0
CONNECT_CONCURRENCY = 32  # handshakes in flight per process (the listen backlog is 100)
DRAIN_TIMEOUT_S = 30.0  # replies still due when a window closes must come within this
S = TypeVar("S", bound=Session)
Hooks = tuple[Callable[[], None], Callable[[], None]]  # called as the measured window opens and closes


class Heard(NamedTuple):
    """One order's `order.available` as the sessions of a group received it."""

    sessions: int  # that received it
    first: float  # time.monotonic, which every process of the machine shares
    last: float
    size: int  # bytes of the frame's payload


@dataclass(frozen=True)
class Share:
    """What one client process does."""

    url: str
    hellos: Sequence[bytes]  # the first frame of each session
    window: int  # pings in flight per session
    then: Sequence[bytes] = ()  # frames each session sends after its hello, one by one, each answered by a result
    starts: Sequence[float] = ()  # when each session connects (time.monotonic); empty: all at once


@dataclass
class Tally:
    """What the sessions counted inside the measurement window, over all client processes."""

    replies: int = 0  # ping, loop: replies; stream: location updates confirmed (see Session.start_stream)
    errors: int = 0  # frames other than `result` (e.g. rate_limited), lost sessions: the run is not valid
    sent: int = 0  # stream: updates sent, in and after the window
    seconds: float = 0.0
    client_cpu: float = 0.0  # CPU seconds of all client processes during the window
    server_cpu: float = 0.0  # CPU seconds of the server during the window
    other_cpu: float = 0.0  # CPU seconds the rest of the machine used meanwhile (noise)
    watched_cpu: dict[str, float] = field(default_factory=dict)  # the `watch` processes' (Redis...)
    latencies: list[float] = field(default_factory=list)  # loop: seconds per request
    finished: float = 0.0  # stream: when the last marker's reply came (time.monotonic)
    closed_at: float = 0.0  # when the window closed (time.monotonic)

    def add(self, counts: Counts) -> None:
        self.replies += counts.replies
        self.errors += counts.errors
        self.sent += counts.sent
        self.latencies.extend(counts.latencies)
        self.finished = max(self.finished, counts.finished)


class Children:
    """`with` client processes, child i running `drive(pipe, *shares[i])` on uvloop and saying
    ("ready", opened, failed, first error) once its sessions are open: the parent sends commands
    over the pipes and gathers one reply from each child; leaving closes them all. The base of
    `Clients`, `bench.chat_clients.ChatClients` and `bench.rawredis.RedisLoop`."""

    def __init__(self, name: str, drive: Callable[..., Coroutine[Any, Any, None]],
                 shares: Sequence[tuple[Any, ...]], cpus: set[int] | None) -> None:
        # fork: the children inherit their share instead of unpickling it, and start at once.
        ctx = multiprocessing.get_context("fork")
        self.cpus = cpus
        self.pipes: list[Connection] = []
        self.processes: list[BaseProcess] = []
        self._child_ends: list[Connection] = []
        for i, share in enumerate(shares):
            parent, child = ctx.Pipe()
            self.processes.append(ctx.Process(target=run_child, args=(child, drive, *share), name=f"{name}-{i}",
                                              daemon=True))
            self.pipes.append(parent)
            self._child_ends.append(child)

    def __enter__(self) -> Self:
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
        """Wait until every session is open and signed in: (opened, failed, first error)."""
        opened = failed = 0
        first = ""
        for reply in self._gather(timeout, "ready"):
            opened, failed, first = opened + reply[1], failed + reply[2], first or reply[3]
        return opened, failed, first

    def cpu(self) -> float:
        """CPU seconds the client processes have used so far."""
        return sum(cpu_seconds(p.pid) for p in self.processes if p.pid is not None)

    def stop(self) -> None:
        """Close the sessions and end the processes (killing those that do not end in time)."""
        started = [p for p in self.processes if p.pid is not None]
        if started and len(started) == len(self.processes):
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

    def _send(self, command: tuple[Any, ...] | list[tuple[Any, ...]]) -> None:
        """One command for all, or one per child."""
        for i, pipe in enumerate(self.pipes):
            pipe.send(command[i] if isinstance(command, list) else command)

    def _gather(self, timeout: float, expect: str, command: tuple[Any, ...] | list[tuple[Any, ...]] | None = None
                ) -> list[Any]:
        """Send the command, if any, then a reply from every child."""
        if command is not None:
            self._send(command)
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


class Clients(Children):
    """`with Clients(url, hellos, processes=2) as clients: clients.open(); clients.ping(...)`.
    With `then`, each session sends those frames after its hello (e.g. `tech.duty`), each answered
    by a result, before it counts as open; with `ramp`, the sessions connect evenly spread over
    that many seconds from now (`open`'s timeout must allow for it)."""

    def __init__(self, url: str, hellos: Sequence[bytes], *, processes: int, window: int = 4,
                 cpus: set[int] | None = None, then: Sequence[bytes] = (), ramp: float = 0.0) -> None:
        self.size = len(hellos)
        begin = time.monotonic() + 1.0  # after the children have started
        starts = [begin + ramp * i / self.size for i in range(self.size)] if ramp > 0 else []
        super().__init__("bench-client", _drive, [(Share(url, hellos[i::processes], window, then,
                                                         starts[i::processes]),)
                                                  for i in range(processes)], cpus)

    def each(self, frames: Sequence[bytes], timeout: float) -> list[bytes]:
        """Every session sends its frame (frames[i] for session i) and waits for the reply; the
        replies, in the same order (b"" for a session that was lost)."""
        assert len(frames) == self.size
        n = len(self.pipes)
        replies = self._gather(timeout, "answered", [("each", frames[i::n]) for i in range(n)])
        out: list[bytes] = [b""] * self.size
        for i, reply in enumerate(replies):
            out[i::n] = reply[1]
        return out

    def sequence(self, frames: Sequence[bytes], spacing: float, timeout: float) -> list[tuple[float, float, bytes]]:
        """The first session sends the frames one after another, each when the previous one is
        answered and at least `spacing` seconds after the previous one left: (sent, answered, reply).
        For a group of one process."""
        assert len(self.pipes) == 1
        reply = self._gather(timeout, "sequenced", ("sequence", frames, spacing))
        return list(reply[0][1])

    def schedule(self, frames: Sequence[bytes], rate: float, timeout: float) -> list[tuple[float, float, bytes]]:
        """The first session sends frame k when it is due, k / rate seconds from now, whether or
        not the earlier ones are answered (an open loop): (due, answered, reply) per frame. For a
        group of one process."""
        assert len(self.pipes) == 1
        reply = self._gather(timeout, "scheduled", ("schedule", frames, rate))
        return list(reply[0][1])

    def listen(self, arrivals: bool = False) -> None:
        """From now on the sessions note when each `order.available` reaches them (with `arrivals`,
        every session's moment, for `arrivals()`)."""
        self._gather(30, "listening", ("listen", arrivals))

    def arrivals(self) -> dict[str, list[float]]:
        """Per order id since `listen(arrivals=True)`: when it reached each session (time.monotonic)."""
        merged: dict[str, list[float]] = {}
        for reply in self._gather(120, "arrived", ("arrivals",)):
            for key, moments in reply[1].items():
                merged.setdefault(key.decode(), []).extend(moments)
        return merged

    def heard(self) -> dict[str, Heard]:
        """Per order id since `listen()`: how many sessions received its `order.available`, the first
        and the last moment (time.monotonic, which every process of the machine shares), its size."""
        merged: dict[str, Heard] = {}
        for reply in self._gather(60, "heard", ("heard",)):
            for key, (count, first, last, size) in reply[1].items():
                order_id = key.decode()
                seen = merged.get(order_id)
                merged[order_id] = (Heard(int(count), first, last, int(size)) if seen is None else
                                    Heard(seen.sessions + int(count), min(seen.first, first), max(seen.last, last),
                                          seen.size))
        return merged

    def ping(self, warmup: float, seconds: float, server_pid: int, hooks: Hooks | None = None) -> Tally:
        """Every session pings (`window` in flight) for warmup + seconds; replies are counted in the
        last `seconds` only, and the CPU time of clients and server over the same window."""
        tally, _ = self._measure("ping", "pinged", None, warmup, seconds, server_pid, hooks, {})
        return tally

    def stream(self, streams: Sequence[Stream], warmup: float, seconds: float, server_pid: int,
               hooks: Hooks | None = None, watch: Mapping[str, int] | None = None) -> tuple[Tally, list[int]]:
        """Every session streams `location.update` (streams[i] for session i, see
        `Session.start_stream`) for warmup + seconds, then waits for its markers' replies; returns
        the tally and the number of the last update each session sent (a marker)."""
        assert len(streams) == self.size
        n = len(self.pipes)
        tally, replies = self._measure("stream", "streamed", [streams[i::n] for i in range(n)], warmup, seconds,
                                       server_pid, hooks, watch or {})
        last = [0] * self.size
        for i, reply in enumerate(replies):
            last[i::n] = reply[2]
        return tally, last

    def loop(self, frame: bytes, warmup: float, seconds: float, server_pid: int, hooks: Hooks | None = None,
             watch: Mapping[str, int] | None = None) -> Tally:
        """Every session sends `frame` and waits for the reply, again and again (a closed loop),
        for warmup + seconds; replies and latencies count in the last `seconds`."""
        tally, _ = self._measure("loop", "looped", [frame] * len(self.pipes), warmup, seconds, server_pid, hooks,
                                 watch or {})
        return tally

    def paced(self, frame: bytes, rate: float, warmup: float, seconds: float, server_pid: int,
              watch: Mapping[str, int] | None = None, walks: Sequence[Walk] | None = None,
              hooks: Hooks | None = None) -> tuple[Tally, HdrHistogram, HdrHistogram]:
        """The sessions send `frame` (with `walks`, walks[i]'s next update for session i) at `rate` a
        second in all, on a timetable, round robin, whether or not earlier requests are answered (an
        open loop), for warmup + seconds. Returns the tally (replies to, and `sent`: requests due
        in, the last `seconds`), the latencies from when each was due (Session.start_paced) and
        the clients' lag: from when each was due to when it left (their event loops' lateness)."""
        n = len(self.pipes)
        assert walks is None or len(walks) == self.size
        plans = [(frame, rate / n, i / rate, None if walks is None else walks[i::n]) for i in range(n)]
        tally, replies = self._measure("paced", "paced", plans, warmup, seconds, server_pid, hooks, watch or {})
        merged, lag = histogram(), histogram()
        for reply in replies:
            merged.decode_and_add(reply[2])
            lag.decode_and_add(reply[3])
        return tally, merged, lag

    def _measure(self, kind: str, expect: str, payloads: list[Any] | None, warmup: float, seconds: float,
                 server_pid: int, hooks: Hooks | None, watch: Mapping[str, int]) -> tuple[Tally, list[Any]]:
        def start(*moments: float) -> None:
            for i, pipe in enumerate(self.pipes):
                pipe.send((kind, *moments, None if payloads is None else payloads[i]))

        tally = measure_window(start, self.cpu, warmup, seconds, server_pid, hooks, watch)
        replies = self._gather(seconds + DRAIN_TIMEOUT_S + 30, expect)
        for reply in replies:
            tally.add(reply[1])
        return tally, replies

def measure_window(start: Callable[[float, float, float], None], client_cpu: Callable[[], float], warmup: float,
                   seconds: float, server_pid: int, hooks: Hooks | None, watch: Mapping[str, int]) -> Tally:
    """Tell the clients when to start, when the window opens and when it closes (`start(start,
    t_from, t_until)`), then note the CPU time of the clients, the server, the watched processes
    and the rest of the machine over the window. The clients' counts are for the caller to add."""
    begin = time.monotonic() + 0.2
    t_from, t_until = begin + warmup, begin + warmup + seconds
    start(begin, t_from, t_until)
    sleep_until(t_from)
    if hooks:
        hooks[0]()
    clients_from, server_from, machine_from = client_cpu(), cpu_seconds(server_pid), busy_seconds()
    watched_from = {name: cpu_seconds(pid) for name, pid in watch.items()}
    sleep_until(t_until)
    tally = Tally(seconds=seconds, closed_at=t_until, client_cpu=client_cpu() - clients_from,
                  server_cpu=cpu_seconds(server_pid) - server_from,
                  watched_cpu={name: cpu_seconds(pid) - watched_from[name] for name, pid in watch.items()})
    tally.other_cpu = max(0.0, busy_seconds() - machine_from - tally.client_cpu - tally.server_cpu
                          - sum(tally.watched_cpu.values()))
    if hooks:
        hooks[1]()
    return tally


def sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


# -- the child process ---------------------------------------------------------------------------
def run_child(pipe: Connection, drive: Callable[..., Coroutine[Any, Any, None]], *share: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop, and cleans up
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    try:
        uvloop.run(drive(pipe, *share))
    except BaseException as exc:
        with contextlib.suppress(OSError):
            pipe.send(("failed", f"{type(exc).__name__}: {exc}"))
        raise


def commands(pipe: Connection) -> asyncio.Queue[tuple[Any, ...]]:
    """The parent's commands as they come, ("close",) when the parent is gone."""
    queue: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    def read() -> None:  # a thread: commands may be larger than a pipe's buffer, and recv() blocks
        while True:
            try:
                command = pipe.recv()
            except (EOFError, OSError):
                command = ("close",)  # the parent is gone
            loop.call_soon_threadsafe(queue.put_nowait, command)
            if command[0] == "close":
                return

    threading.Thread(target=read, name="commands", daemon=True).start()
    return queue


async def open_sessions(uri: WebSocketURI, sessions: Sequence[S], then: Sequence[bytes] = (),
                        starts: Sequence[float] = ()) -> tuple[list[S], int, str]:
    """Connect the sessions (session i at starts[i] if given), each answered its hello and then
    each frame of `then` with a result: (those open, how many failed, the first error)."""
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    loop = asyncio.get_running_loop()

    async def open_one(session: S, start: float) -> S:
        await until(start)
        async with gate:
            try:
                async with asyncio.timeout(30):
                    await loop.create_connection(lambda: session, uri.host, uri.port)
                    reply = await session.opened
                    for frame in then:
                        if not reply.startswith(RESULT):
                            break
                        reply = await session.request(frame)
            except BaseException:
                session.abort()
                raise
            if not reply.startswith(RESULT):
                session.close()
                raise RuntimeError(f"refused: {reply[:200]!r}")  # the hello or a frame of `then`
            return session

    moments = starts or [0.0] * len(sessions)
    results = await asyncio.gather(*(open_one(s, t) for s, t in zip(sessions, moments, strict=True)),
                                   return_exceptions=True)
    opened = [r for r in results if not isinstance(r, BaseException)]
    errors = [r for r in results if isinstance(r, BaseException)]
    return opened, len(errors), f"{type(errors[0]).__name__}: {errors[0]}" if errors else ""


async def close_all(sessions: Sequence[Session]) -> None:
    for session in sessions:
        session.close()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(CLOSE_TIMEOUT_S - 5):
            await asyncio.gather(*(s.closed for s in sessions), return_exceptions=True)
    for session in sessions:
        session.abort()


async def until(moment: float) -> None:
    await asyncio.sleep(max(0.0, moment - time.monotonic()))


async def _drive(pipe: Connection, share: Share) -> None:
    queue = commands(pipe)
    uri = parse_uri(share.url)
    sessions, failed, first = await open_sessions(uri, [Session(uri, hello) for hello in share.hellos], share.then,
                                                  share.starts)
    pipe.send(("ready", len(sessions), failed, first))
    heard: dict[bytes, list[float]] = {}
    arrivals: dict[bytes, array[float]] = {}
    try:
        while True:
            command = await queue.get()
            kind, args = command[0], command[1:]
            if kind == "ping":
                pipe.send(("pinged", await _ping_all(sessions, share.window, *args[:3])))
            elif kind == "stream":
                pipe.send(("streamed", *await _stream_all(sessions, *args)))
            elif kind == "loop":
                pipe.send(("looped", await _loop_all(sessions, *args)))
            elif kind == "each":
                pipe.send(("answered", await _each(sessions, args[0])))
            elif kind == "sequence":
                pipe.send(("sequenced", await _sequence(sessions[0], *args)))
            elif kind == "paced":
                pipe.send(("paced", *await _paced_all(sessions, *args)))
            elif kind == "schedule":
                pipe.send(("scheduled", await _schedule(sessions[0], *args)))
            elif kind == "listen":
                heard.clear()
                arrivals.clear()
                for session in sessions:
                    session.heard = heard
                    session.arrivals = arrivals if args[0] else None
                pipe.send(("listening",))
            elif kind == "heard":
                pipe.send(("heard", heard))
            elif kind == "arrivals":
                pipe.send(("arrived", {key: list(moments) for key, moments in arrivals.items()}))
            elif kind == "close":
                break
    finally:
        await close_all(sessions)
    pipe.send(("closed",))


async def _drained(sessions: list[Session], counts: Counts) -> None:
    """Wait (boundedly) for the replies still due; a session that never gets them is an error."""
    for _ in range(int(DRAIN_TIMEOUT_S / 0.02)):
        if not any(s.busy for s in sessions):
            break
        await asyncio.sleep(0.02)
    counts.errors += sum(s.busy for s in sessions)


async def _ping_all(sessions: list[Session], window: int, start: float, t_from: float, t_until: float) -> Counts:
    await until(start)
    counts = Counts()
    for session in sessions:
        session.ping(window, t_from, t_until, counts)
    await until(t_until + 0.05)
    return counts


async def _stream_all(sessions: list[Session], start: float, t_from: float, t_until: float,
                      streams: list[Stream]) -> tuple[Counts, list[int]]:
    await until(start)
    counts = Counts()
    for session, stream in zip(sessions, streams, strict=True):
        session.start_stream(stream, t_from, t_until, counts)
    await until(t_until)
    await _drained(sessions, counts)
    return counts, [s.sent for s in sessions]


async def _loop_all(sessions: list[Session], start: float, t_from: float, t_until: float, frame: bytes) -> Counts:
    await until(start)
    counts = Counts()
    for session in sessions:
        session.start_loop(frame, t_from, t_until, counts)
    await until(t_until)
    await _drained(sessions, counts)
    return counts


async def _paced_all(sessions: list[Session], start: float, t_from: float, t_until: float,
                     plan: tuple[bytes, float, float, Sequence[Walk] | None]) -> tuple[Counts, bytes, bytes]:
    """This process's share of an open loop: request k due at start + phase + k / rate, sent by
    session k mod n as soon as it is due (every request that fell due meanwhile goes at once).
    Also how late each request due in the window left (`Counts.lag`)."""
    frame, rate, phase, walks = plan
    if not sessions:
        raise RuntimeError("no session of this process is open")
    # The sessions live as long as the run: out of the collector's way, so that no full collection
    # scans thousands of them while updates are due (the gateway does the same, gateway.app).
    gc.collect()
    gc.freeze()
    await until(start)
    lag = histogram()
    counts = Counts(histogram=histogram(), lag=lag)
    for i, session in enumerate(sessions):
        session.start_paced(frame, t_from, counts, None if walks is None else walks[i])
    k, n = 0, len(sessions)
    second, clock = -1, b""
    while (due := start + phase + k / rate) < t_until:
        now = time.monotonic()
        if due > now:
            await until(due)
            now = time.monotonic()
        if walks is not None and (wall := int(time.time())) != second:  # the devices' clocks, to the second
            second, clock = wall, device_time(wall)
        sessions[k % n].send_paced(due, clock)
        if due >= t_from:
            counts.sent += 1
            lag.record_value(max(1, min(HIGHEST_US, int((now - due) * 1e6))))
        k += 1
    await _drained(sessions, counts)
    assert counts.histogram is not None
    encoded, encoded_lag, counts.histogram, counts.lag = counts.histogram.encode(), lag.encode(), None, None
    return counts, encoded, encoded_lag


async def _schedule(session: Session, frames: Sequence[bytes], rate: float) -> list[tuple[float, float, bytes]]:
    start = time.monotonic()

    async def one(k: int, frame: bytes) -> tuple[float, float, bytes]:
        due = start + k / rate
        await until(due)
        async with asyncio.timeout(DRAIN_TIMEOUT_S + k / rate):
            reply = await session.request(frame)
        return due, time.monotonic(), reply

    return list(await asyncio.gather(*(one(k, f) for k, f in enumerate(frames))))


async def _each(sessions: list[Session], frames: Sequence[bytes]) -> list[bytes]:
    async def one(session: Session, frame: bytes) -> bytes:
        try:
            async with asyncio.timeout(DRAIN_TIMEOUT_S):
                return await session.request(frame)
        except (OSError, TimeoutError):
            return b""

    return list(await asyncio.gather(*(one(s, f) for s, f in zip(sessions, frames, strict=True))))


async def _sequence(session: Session, frames: Sequence[bytes], spacing: float) -> list[tuple[float, float, bytes]]:
    out = []
    due = time.monotonic()
    for frame in frames:
        await until(due)
        sent = time.monotonic()
        async with asyncio.timeout(DRAIN_TIMEOUT_S):
            reply = await session.request(frame)
        out.append((sent, time.monotonic(), reply))
        due = sent + spacing
    return out


def all_heard(groups: list["Clients"], ids: list[str], sessions: int, timeout: float = 15.0) -> dict[str, Heard]:
    """Every order heard by every session, over all the nodes' groups (the last may be on their way)."""
    deadline = time.monotonic() + timeout
    while True:
        merged: dict[str, Heard] = {}
        for group in groups:
            for order_id, h in group.heard().items():
                seen = merged.get(order_id)
                merged[order_id] = h if seen is None else Heard(seen.sessions + h.sessions, min(seen.first, h.first),
                                                                max(seen.last, h.last), seen.size)
        missing = [i for i in ids if i not in merged or merged[i].sessions < sessions]
        if not missing:
            return merged
        if time.monotonic() > deadline:
            fewest = min(merged[i].sessions if i in merged else 0 for i in missing)
            raise RuntimeError(f"{len(missing)} of {len(ids)} orders did not reach all {sessions:,} technicians "
                               f"within {timeout:.0f} s (fewest: {fewest:,})")
        time.sleep(0.2)
