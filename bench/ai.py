"""Help with AI under load: N consumers start a conversation at once against `run.py serve` (one
worker), answered by the offline engine and then by OpenAI's engine against the local stand-in
server (tests/openai_server.py), while other sessions ping the gateway. Measured: the time from
`ai.start` to its first `ai.delta` and to its `ai.answer`, and the other sessions' ping round trip
meanwhile (the gateway's event-loop lag as a session feels it). Goal: ping p99 under 20 ms.

    .venv/bin/python -m bench.ai [--conversations 200] [--quick] [--markdown docs/benchmarks.md]
"""

import argparse
import asyncio
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from bench import report
from bench.report import MARK, Figures, markdown_table, ms, percentile
from bench.servers import backends, gateway_server, stopped_by_signals
from gateway.app import token_issuer
from gateway.config import Config
from protocol.ai import AiAnswer, AiAnswered, AiDelta, AiStart, AiStep
from protocol.auth import Auth, Ping
from protocol.client import Client
from tests.openai_server import API_KEY, MODELS, OpenAIServer

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
          "ping p50", "ping p99", "ping max", "ping p99 < 20 ms")


@dataclass
class Run:
    engine: str
    first: list[float] = field(default_factory=list)
    done: list[float] = field(default_factory=list)
    pings: list[float] = field(default_factory=list)
    failed: int = 0

    def row(self) -> list[str]:
        p = percentile
        return [self.engine, f"{len(self.done)}{f' ({self.failed} failed)' if self.failed else ''}",
                ms(p(self.first, .5)), ms(p(self.first, .95)), ms(p(self.first, .99)), ms(p(self.done, .5)),
                ms(p(self.done, .95)), ms(p(self.done, .99)), ms(p(self.pings, .5)), ms(p(self.pings, .99)),
                ms(max(self.pings, default=float("nan"))), MARK[p(self.pings, .99) < PING_GOAL_S]]


async def signed(url: str, token: str) -> Client:
    client = await Client.connect(url)
    await client.request(Auth(token=token))
    return client


async def converse(client: Client, run: Run, timeout: float) -> None:
    began = time.perf_counter()
    first = 0.0
    try:
        started = await client.request(AiStart(brand="whirlpool", sku="WRF535SWHZ",
                                               description="The fridge is warm and not cooling"), timeout=timeout)
        async with asyncio.timeout(timeout):
            while True:
                event = await client.next_event(timeout=timeout)
                if isinstance(event, AiDelta) and event.conversation_id == started.conversation_id:
                    first = first or time.perf_counter()
                elif isinstance(event, AiAnswered) and event.conversation_id == started.conversation_id:
                    break
    except (TimeoutError, OSError):
        run.failed += 1
        return
    end = time.perf_counter()
    run.first.append((first or end) - began)
    run.done.append(end - began)


async def ping(client: Client, run: Run, stop: asyncio.Event) -> None:
    while not stop.is_set():
        began = time.perf_counter()
        await client.request(Ping())
        run.pings.append(time.perf_counter() - began)
        await asyncio.sleep(PING_EVERY_S)


async def measure_one(url: str, config: Config, engine: str, conversations: int, pingers: int) -> Run:
    issuer = token_issuer(config)
    run = Run(engine)
    consumers = [await signed(url, issuer.mint(str(uuid.uuid4()), "consumer")[0]) for _ in range(conversations)]
    others = [await signed(url, issuer.mint(str(uuid.uuid4()), "technician")[0]) for _ in range(pingers)]
    stop = asyncio.Event()
    try:
        pinging = [asyncio.create_task(ping(c, run, stop)) for c in others]
        await asyncio.sleep(0.5)  # a baseline of pings before the burst
        await asyncio.gather(*(converse(c, run, 120.0) for c in consumers))
        stop.set()
        await asyncio.gather(*pinging)
    finally:
        for client in consumers + others:
            await client.close()
    return run


def measure(conversations: int, pingers: int) -> list[Run]:
    runs: list[Run] = []
    secret = "bench-" + uuid.uuid4().hex * 2
    config = Config(secret=secret)
    with backends("ai-bench-") as b, OpenAIServer() as stand_in:
        stand_in.reply_with(msgspec.json.encode(STAND_IN_ANSWER).decode(), times=None)
        common = ("--ai-quota-per-hour", "1000000", "--ai-stream-pause-s", "0.05")
        for engine, flags in (("offline", common),
                              ("openai (local stand-in)", (*common, "--openai-api-key", API_KEY,
                                                            "--openai-base-url", stand_in.url + "/v1",
                                                            "--openai-model", MODELS[0]))):
            log = b.root / f"gateway-{len(runs)}.log"
            with gateway_server(log, None, database_url=b.database_url, redis_url=b.redis_url,
                                data_dir=b.root / "data", secret=secret, flags=flags) as server:
                runs.append(asyncio.run(measure_one(server.url, config, engine, conversations, pingers)))
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--conversations", type=int, default=200)
    p.add_argument("--pingers", type=int, default=5, help="other sessions pinging every 20 ms meanwhile")
    p.add_argument("--quick", action="store_true", help="20 conversations: a smoke run")
    p.add_argument("--markdown", type=Path, help="write the results into this file's `ai` section")
    args = p.parse_args(argv)
    conversations = 20 if args.quick else args.conversations
    f = Figures(command="python -m bench.ai " + " ".join(argv if argv is not None else sys.argv[1:]),
                settings={"rounds": 1}, started=time.time())
    with stopped_by_signals(900):
        runs = measure(conversations, args.pingers)
    f.seconds = time.time() - f.started
    print(markdown_table(HEADER, [r.row() for r in runs]))
    if args.markdown:
        report.write_markdown(args.markdown, "ai", f, profile="has no profiler.", about=f"""\
{conversations} consumer sessions each send `ai.start` for the same fridge at the same moment and wait for
its `ai.answer`; {args.pingers} other sessions send `ping` every 20 ms throughout. Time to the first
`ai.delta` and to the `ai.answer` are from the `ai.start` frame being sent. The offline engine streams
its answer in about four pieces with `AI_STREAM_PAUSE_S` (0.05 s) between them, so its answer takes
at least 0.15 s by design. The OpenAI engine talks through the `openai` SDK to tests/openai_server.py
in the bench's process (streaming 16-character chunks 5 ms apart, strict JSON schema), with at most
`AI_MAX_IN_FLIGHT` (16) model calls at once: the others wait their turn, which is most of their time
to the answer. The gateway is `run.py serve`, one worker, on embedded PostgreSQL and Redis; nothing
is pinned: the bench's clients, the stand-in and the servers share the machine's cores, so the
figures are upper bounds of what the gateway alone costs.""", tables=f"""### Summary

{markdown_table(HEADER, [r.row() for r in runs])}""", notes=[
            "the gateway makes its engine at start: importing the `openai` SDK on the first answer instead held "
            "the event loop about 0.35 s (every session's ping p99 went to 360 ms in the first run of this bench).",
            "the ping p99 is close to the goal and varies from run to run on a shared 2-core machine: of five full "
            "runs on 2026-12-02, one had the offline engine's at 24 ms (FAIL), the others 8-17 ms. The 200 "
            "ai.start frames arrive in one burst; each is a transaction, a seal and a task, and the pings "
            "queue behind them."])
    return 0


if __name__ == "__main__":
    sys.exit(main())
