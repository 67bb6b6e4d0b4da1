"""Help with AI under load: N consumers start a conversation at once against `run.py serve` (one
worker), answered by the offline engine and then by OpenAI's engine against the local stand-in
server (tests/openai_server.py), while other sessions ping the gateway. Measured: the time from
`ai.start` to its first `ai.delta` and to its `ai.answer`, then of an `ai.reply` (the second turn,
which reads the sealed dialogue back) to its answer, the gateway's CPU time per turn, and the other
sessions' ping round trip meanwhile (the gateway's event-loop lag as a session feels it) against the
same pings to the same gateway with no conversation (the idle baseline). Goal: ping p99 under 20 ms.

    .venv/bin/python -m bench.ai [--conversations 200] [--quick] [--markdown docs/benchmarks.md]
"""

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

import msgspec
import uvloop

from bench import report
from bench.profiled import print_stats, switches
from bench.report import MARK, Figures, markdown_table, ms, percentile
from bench.servers import ROOT, backends, cores, gateway_server, stopped_by_signals
from gateway.app import token_issuer
from gateway.config import Config
from protocol.ai import AiAnswer, AiAnswered, AiDelta, AiReply, AiStart, AiStep
from protocol.auth import Auth, Ping
from protocol.client import Client
from tests.openai_server import API_KEY, MODELS

PING_GOAL_S = 0.020
PING_EVERY_S = 0.02
STAND_IN_ANSWER = AiAnswer(
    diagnosis="The fridge is probably not getting power, or its thermostat is set too warm.",
    steps=[AiStep(instruction="Check the fridge is plugged in and the interior light comes on",
                  look_for="The light is on and you hear the fans", technician_only=False),
           AiStep(instruction="Reset the tripped breaker in the electrical panel", look_for="The fridge starts",
                  technician_only=False),
           AiStep(instruction="Set the thermostat to 37 F (3 C)", look_for="It is not at the warmest setting",
                  technician_only=False)],
    report_back="Tell me whether it cools again after an hour.", verdict="continue",
    draft=None)
HEADER = ("engine", "conversations", "first ai.delta p50", "p95", "p99", "ai.answer p50", "p95", "p99",
          "ai.reply's answer p50", "p99", "gateway CPU per turn")
PING_HEADER = ("engine", "pings", "ping p50", "ping p99", "ping max", "p99 vs idle", "ping p99 < 20 ms")


@dataclass
class Run:
    engine: str
    first: list[float] = field(default_factory=list)
    done: list[float] = field(default_factory=list)
    replied: list[float] = field(default_factory=list)  # ai.reply to its ai.answer
    pings: list[float] = field(default_factory=list)
    idle_pings: list[float] = field(default_factory=list)  # the same pings before any conversation
    cpu_s: float = 0.0  # the gateway's CPU time over the conversations
    failed: int = 0

    def row(self) -> list[str]:
        p = percentile
        turns = len(self.done) + len(self.replied)
        return [self.engine, f"{len(self.done)}{f' ({self.failed} failed)' if self.failed else ''}",
                ms(p(self.first, .5)), ms(p(self.first, .95)), ms(p(self.first, .99)), ms(p(self.done, .5)),
                ms(p(self.done, .95)), ms(p(self.done, .99)), ms(p(self.replied, .5)), ms(p(self.replied, .99)),
                ms(self.cpu_s / turns) if turns else "-"]

    def ping_rows(self) -> list[list[str]]:
        p = percentile
        idle = p(self.idle_pings, .99)
        return [[f"{self.engine}: idle (baseline)", str(len(self.idle_pings)), ms(p(self.idle_pings, .5)), ms(idle),
                 ms(max(self.idle_pings, default=float("nan"))), "1.00x", MARK[idle < PING_GOAL_S]],
                [f"{self.engine}: conversations", str(len(self.pings)), ms(p(self.pings, .5)),
                 ms(p(self.pings, .99)), ms(max(self.pings, default=float("nan"))),
                 f"{p(self.pings, .99) / idle:.2f}x", MARK[p(self.pings, .99) < PING_GOAL_S]]]


async def signed(url: str, token: str) -> Client:
    client = await Client.connect(url)
    await client.request(Auth(token=token))
    return client


async def answered(client: Client, conversation_id: str, turn: int, timeout: float) -> float:
    """When the turn's first `ai.delta` came (0: none), once its `ai.answer` has."""
    first = 0.0
    async with asyncio.timeout(timeout):
        while True:
            event = await client.next_event(timeout=timeout)
            if isinstance(event, AiDelta) and (event.conversation_id, event.turn) == (conversation_id, turn):
                first = first or time.perf_counter()
            elif isinstance(event, AiAnswered) and (event.conversation_id, event.turn) == (conversation_id, turn):
                return first


async def converse(client: Client, run: Run, timeout: float) -> None:
    """ai.start and its answer, then an ai.reply and its answer."""
    began = time.perf_counter()
    try:
        started = await client.request(AiStart(brand="whirlpool", sku="WRF535SWHZ",
                                               description="The fridge is warm and not cooling"), timeout=timeout)
        first = await answered(client, started.conversation_id, 1, timeout)
        end = time.perf_counter()
        again = await client.request(AiReply(conversation_id=started.conversation_id,
                                             text="Did all of that, it is still warm inside"), timeout=timeout)
        await answered(client, started.conversation_id, again.turn, timeout)
    except (TimeoutError, OSError):
        run.failed += 1
        return
    run.first.append((first or end) - began)
    run.done.append(end - began)
    run.replied.append(time.perf_counter() - end)


async def pings(url: str, tokens: list[str], stop: Connection) -> list[tuple[float, float]]:
    """(when sent, round trip) of every ping, each session pinging every PING_EVERY_S until `stop` is readable."""
    clients = [await signed(url, token) for token in tokens]
    samples: list[tuple[float, float]] = []
    done = asyncio.Event()
    asyncio.get_running_loop().add_reader(stop.fileno(), done.set)

    async def ping(client: Client) -> None:
        while not done.is_set():
            began = time.monotonic()
            await client.request(Ping())
            samples.append((began, time.monotonic() - began))
            await asyncio.sleep(PING_EVERY_S)

    await asyncio.gather(*(ping(c) for c in clients))
    for client in clients:
        await client.close()
    return samples


def pinger(url: str, tokens: list[str], pipe: Connection) -> None:
    """The other sessions, in a process of their own: what they measure is the gateway's lag, not that of the
    bench's loop busy with the 200 conversations. They stand for apps on other machines, so the process runs
    ahead of the bench's other work on its cores where it may (nice -10, as root)."""
    with contextlib.suppress(PermissionError):
        os.nice(-10)
    pipe.send("ready")
    pipe.send(uvloop.run(pings(url, tokens, pipe)))


@contextlib.contextmanager
def pinging(url: str, tokens: list[str]) -> Iterator[Callable[[], list[tuple[float, float]]]]:
    """Start the pinger process; the function given ends it and returns its samples (time.monotonic() is
    the same clock in every process)."""
    ours, theirs = multiprocessing.get_context("spawn").Pipe()
    process = multiprocessing.get_context("spawn").Process(target=pinger, args=(url, tokens, theirs), daemon=True)
    process.start()
    if not ours.poll(60) or ours.recv() != "ready":
        raise RuntimeError("the pinger process did not start")
    samples: list[tuple[float, float]] = []

    def end() -> list[tuple[float, float]]:
        if not samples:
            ours.send("stop")
            samples.extend(ours.recv())
        return samples

    try:
        yield end
    finally:
        if not samples:
            process.terminate()
        process.join(10)


async def measure_one(url: str, config: Config, engine: str, conversations: int, pingers: int,
                      cpu: Callable[[], float], hooks: tuple[Callable[[], None], Callable[[], None]] | None) -> Run:
    issuer = token_issuer(config)
    run = Run(engine)
    consumers = [await signed(url, issuer.mint(str(uuid.uuid4()), "consumer")[0]) for _ in range(conversations)]
    tokens = [issuer.mint(str(uuid.uuid4()), "technician")[0] for _ in range(pingers)]
    try:
        began = time.perf_counter()
        await asyncio.gather(*(converse(c, run, 120.0) for c in consumers[:2]))  # warm up: the engine, the guides
        warm = time.perf_counter() - began
        for warm_up in (run.first, run.done, run.replied):
            warm_up.clear()
        with pinging(url, tokens) as end_pings:
            await asyncio.sleep(1.0)  # the pingers signed in and going
            idle = time.monotonic()
            await asyncio.sleep(max(3.0, warm * 2))  # the baseline: the same pings, nothing else going on
            busy = time.monotonic()
            cpu_before = cpu()
            if hooks:
                hooks[0]()
            await asyncio.gather(*(converse(c, run, 120.0) for c in consumers[2:]))
            run.cpu_s = cpu() - cpu_before
            if hooks:
                hooks[1]()
            over = time.monotonic()
            samples = end_pings()
        run.idle_pings = [rtt for sent, rtt in samples if idle <= sent < busy]
        run.pings = [rtt for sent, rtt in samples if busy <= sent < over]
    finally:
        for client in consumers:
            await client.close()
    return run


@contextlib.contextmanager
def stand_in(log: Path) -> Iterator[str]:
    """tests/openai_server.py in a process of its own, answering STAND_IN_ANSWER to every request; its base URL."""
    argv = [sys.executable, "-m", "tests.openai_server", "--port", "0",
            "--reply", msgspec.json.encode(STAND_IN_ANSWER).decode()]
    with log.open("wb") as errors:
        process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=errors, text=True)
    try:
        assert process.stdout is not None
        ready = process.stdout.readline()  # "listening on http://127.0.0.1:PORT"
        if not ready.startswith("listening on "):
            raise RuntimeError(f"the OpenAI stand-in did not start: {log.read_text()}")
        yield ready.split()[-1].strip() + "/v1"
    finally:
        process.terminate()
        process.wait(10)


def measure(conversations: int, pingers: int, profile: Path | None = None,
            max_answering: int | None = None, pin: bool = True) -> list[Run]:
    """Both engines' runs; with `profile`, each gateway runs under cProfile over its conversations, its stats
    written to `profile` + `.offline` or `.openai` (the figures are then the profiler's, not the gateway's).
    With `pin`, the gateway has a core to itself and everything else (PostgreSQL, Redis, the stand-in, the
    clients, the pingers) runs on the others, as a node would beside the servers and apps it talks to."""
    server_cpus, client_cpus = cores(pin)
    everywhere = os.sched_getaffinity(0)
    if client_cpus:  # inherited by every process started from here on, but the gateway
        os.sched_setaffinity(0, client_cpus)
    try:
        return measure_engines(conversations, pingers, profile, max_answering, server_cpus)
    finally:
        os.sched_setaffinity(0, everywhere)


def measure_engines(conversations: int, pingers: int, profile: Path | None, max_answering: int | None,
                    server_cpus: set[int] | None) -> list[Run]:
    runs: list[Run] = []
    secret = "bench-" + uuid.uuid4().hex * 2
    config = Config(secret=secret)
    with backends("ai-bench-") as b, stand_in(b.root / "openai-stand-in.log") as base_url:
        common: tuple[str, ...] = ("--ai-quota-per-hour", "1000000", "--ai-stream-pause-s", "0.05")
        if max_answering is not None:
            common += ("--ai-max-answering", str(max_answering))
        for engine, flags in (("offline", common),
                              ("openai (local stand-in)", (*common, "--openai-api-key", API_KEY,
                                                            "--openai-base-url", base_url,
                                                            "--openai-model", MODELS[0]))):
            log = b.root / f"gateway-{len(runs)}.log"
            stats = None if profile is None else profile.with_name(f"{profile.name}.{engine.split()[0]}")
            launcher = None if stats is None else [sys.executable, "-m", "bench.profiled", str(stats)]
            with gateway_server(log, server_cpus, database_url=b.database_url, redis_url=b.redis_url,
                                data_dir=b.root / "data", secret=secret, flags=flags, launcher=launcher) as server:
                hooks = None if stats is None else switches(server.pid)
                runs.append(asyncio.run(measure_one(server.url, config, engine, conversations + 2, pingers,
                                                    server.cpu, hooks)))
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--conversations", type=int, default=200)
    p.add_argument("--pingers", type=int, default=5, help="other sessions pinging every 20 ms meanwhile")
    p.add_argument("--quick", action="store_true", help="20 conversations: a smoke run")
    p.add_argument("--markdown", type=Path, help="write the results into this file's `ai` section")
    p.add_argument("--profile", type=Path, metavar="FILE",
                   help="profile each engine's gateway over its conversations into FILE.offline and FILE.openai "
                        "(figures not written)")
    p.add_argument("--max-answering", type=int, help="the gateway's AI_MAX_ANSWERING (default: its default)")
    p.add_argument("--no-pin", dest="pin", action="store_false",
                   help="do not pin the gateway to one core and everything else to the others")
    args = p.parse_args(argv)
    conversations = 20 if args.quick else args.conversations
    f = Figures(command="python -m bench.ai " + " ".join(argv if argv is not None else sys.argv[1:]),
                settings={"rounds": 1}, started=time.time())
    with stopped_by_signals(900):
        runs = measure(conversations, args.pingers, args.profile, args.max_answering, args.pin)
    f.seconds = time.time() - f.started
    print(markdown_table(HEADER, [r.row() for r in runs]))
    print(markdown_table(PING_HEADER, [row for r in runs for row in r.ping_rows()]))
    profile = "`--profile FILE` profiles each engine's gateway over its conversations."
    if args.profile is not None:
        for engine in ("offline", "openai"):
            print_stats(args.profile.with_name(f"{args.profile.name}.{engine}"), 40, "handlers|gateway|storage", 40)
    elif args.markdown:
        placement = (
            "The gateway is pinned to a core of its own; PostgreSQL, Redis, the stand-in, the clients and\n"
            "the pingers share the other (the pingers' process at nice -10: they stand for apps on other\n"
            "machines). That is a node beside the servers and apps it talks to; it does not cover a gateway\n"
            "sharing its core with them (`--no-pin` runs that)." if args.pin else
            "Nothing is pinned (`--no-pin`): the bench's clients, the stand-in and the servers share the\n"
            "machine's cores, so the figures are upper bounds of what the gateway alone costs.")
        report.write_markdown(args.markdown, "ai", f, about=f"""\
{conversations} consumer sessions each send `ai.start` for the same fridge at the same moment and wait
for its `ai.answer`, then sends an `ai.reply` ("still warm") and waits for that answer too (the second
turn reads the sealed dialogue back and decrypts it); two conversations before them warm the engine up
and are not counted. {args.pingers} other sessions, in a process of their own (so that what they measure
is the gateway's lag, not the bench's loop busy with the conversations), send `ping` every 20 ms: first
for a few seconds with nothing else going on (the idle baseline, same gateway, same pings), then
throughout the conversations. Time to the first `ai.delta` and to the `ai.answer` are from the
`ai.start` frame being sent; the reply's from the `ai.reply`. The gateway's CPU per turn is its
process's user+system time over the conversations divided by the turns answered (two per conversation;
the stand-in's and the clients' CPU are not in it). The offline engine streams its answer in about four
pieces with `AI_STREAM_PAUSE_S` (0.05 s) between them, so its answer takes at least 0.15 s by design.
The OpenAI engine talks through the `openai` SDK (its aiohttp transport) to tests/openai_server.py in a
process of its own (streaming 16-character chunks 5 ms apart, strict JSON schema), with at most
`AI_MAX_IN_FLIGHT` (16) model calls at once: the others wait their turn, which is most of their time to
the answer. The gateway is `run.py serve`, one worker, on embedded PostgreSQL and Redis.
{placement}""", profile=profile, tables=f"""### Summary

{markdown_table(HEADER, [r.row() for r in runs])}

### Other sessions' ping meanwhile, against the idle baseline

{markdown_table(PING_HEADER, [row for r in runs for row in r.ping_rows()])}""", notes=[
            "the gateway makes its engine at start: importing the `openai` SDK on the first answer instead held "
            "the event loop about 0.35 s (every session's ping p99 went to 360 ms in the first run of this bench).",
            "the ping p99 is close to the goal and varies from run to run on a shared 2-core machine: of five full "
            "runs on 2026-12-02, one had the offline engine's at 24 ms (FAIL), the others 8-17 ms. The 200 "
            "ai.start frames arrive in one burst; each is a transaction, a seal and a task, and the pings "
            "queue behind them.",
            "before 2026-12-03 the OpenAI engine read the stream through the SDK's typed chunks (a pydantic model "
            "each, about half a millisecond of CPU) over httpx, and made the partial JSON's value at every chunk: "
            "29.7 ms of gateway CPU per turn and the pings' p99 at 43.1 ms (FAIL). It now reads the server-sent "
            "events raw with msgspec over the SDK's aiohttp transport, and makes the partial value only where a "
            "line of the answer can end. The pingers and the stand-in then shared the bench's process.",
            "earlier on 2026-12-03 (unpinned, each ai.delta a Redis PUBLISH, the SDK's line reader) the OpenAI "
            "stand-in's ping p99 varied around the goal: 12.0, 11.6 and 24.4 ms in three runs with AI_MAX_ANSWERING "
            "16 (the default); with 32, 18.3, 11.4, 31.2 and 25.9 ms; with no bound 20.9 and 43.7 ms "
            "(`--max-answering N` runs it with another bound), at 15-18 ms of gateway CPU per turn.",
            "since then an answer's ai.delta stream costs no Redis command while the consumer is only on the "
            "answering node (the presence directory is read once a second, not a PUBLISH per delta and its echo), "
            "the engine reads the stream's bytes itself rather than through the SDK's text lines, and the safety "
            "gate lowers each line once instead of matching every pattern case-insensitively: 9-10 ms of gateway "
            "CPU per turn. Six runs before this one (2026-12-03, 14:30-14:55 UTC, other sessions' niced work "
            "running): the OpenAI stand-in's ping p99 7.0, 8.8, 7.3, 16.2 and 14.9 ms pinned, 15.0 ms with "
            "`--no-pin`; the offline engine's 6.1-15.0 ms pinned, 11.2 ms unpinned. Every one passed."])
    return 0


if __name__ == "__main__":
    sys.exit(main())
