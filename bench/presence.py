"""Presence flushes: how long one node's burst of sign-ins holds Redis from everyone else.

    .venv/bin/python -m bench.presence [--users 15000] [--rounds 5] [--quick] [--markdown docs/benchmarks.md]

A node that takes over thousands of sessions at once (a reconnect storm) writes their presence in
one flush (storage.push.Presence). Redis runs a script to its end before any other client's
command, so while the flush runs, every other node's commands wait. Measured on the embedded
Redis: a second client sends PING after PING (one in flight) while a Presence flushes `--users`
sign-ins and then the same users' sign-outs; reported per chunk size: the flush's wall time and
the longest PING round trip during it (what another node's command waited at worst). The
baseline is the whole flush in one script (chunk = users), as before the chunks, in the same
run, the same Redis and the same users; sizes alternate round after round.
"""

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid

import redis.asyncio as aioredis

from bench import report
from storage import push
from storage.db import connect_redis
from storage.embedded import EmbeddedRedis


async def _pinger(redis: aioredis.Redis, stop: asyncio.Event, worst: list[float]) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        await redis.ping()
        worst[0] = max(worst[0], time.perf_counter() - started)


async def flush(redis: aioredis.Redis, other: aioredis.Redis, users: int, chunk: int) -> tuple[float, float]:
    """(seconds the sign-ins' and sign-outs' flushes took, the longest PING meanwhile)."""
    node = push.Presence(redis, f"bench-{uuid.uuid4().hex[:8]}", chunk=chunk)
    await node.start()
    names = [f"user-{uuid.uuid4().hex}" for _ in range(users)]
    stop, worst = asyncio.Event(), [0.0]
    pinging = asyncio.create_task(_pinger(other, stop, worst))
    await asyncio.sleep(0.05)
    started = time.perf_counter()
    for online in (True, False):
        for name in names:
            node.set(name, online)
        await node.settled()
    took = time.perf_counter() - started
    stop.set()
    await pinging
    await node.stop()
    return took, worst[0]


async def run(users: int, rounds: int, chunks: list[int]) -> dict[int, list[tuple[float, float]]]:
    with tempfile.TemporaryDirectory(prefix="bench-presence-") as tmp:
        server = EmbeddedRedis(Path(tmp))
        url = server.start()
        redis, other = connect_redis(url), connect_redis(url)
        try:
            results: dict[int, list[tuple[float, float]]] = {c: [] for c in chunks}
            for r in range(rounds):
                for chunk in chunks if r % 2 == 0 else chunks[::-1]:
                    results[chunk].append(await flush(redis, other, users, chunk))
        finally:
            await redis.aclose()
            await other.aclose()
            server.stop()
    return results


def table(users: int, rounds: int, results: dict[int, list[tuple[float, float]]]) -> str:
    baseline = statistics.median(w for _, w in results[users])
    lines = [f"{users:,} sign-ins, then the same users' sign-outs, one flush each; {rounds} rounds, medians.", "",
             "| Users per script | Both flushes' wall time | Longest PING meanwhile | vs one script |",
             "|---|--:|--:|--:|"]
    for chunk, runs in results.items():
        took = statistics.median(t for t, _ in runs)
        worst = statistics.median(w for _, w in runs)
        label = f"{chunk:,} (one script, the baseline)" if chunk == users else f"{chunk:,} (FLUSH_CHUNK)"
        lines.append(f"| {label} | {took * 1000:.0f} ms | {worst * 1000:.1f} ms | {worst / baseline:.2f}x |")
    return "\n".join(lines)


NOTES = ["One Presence and one pinging client on one embedded Redis (other sessions' niced work may have run): "
         "the wait a node's command sees is the longest PING, which includes a round trip (about 0.1 ms). Not covered: "
         "other nodes' own commands queueing behind each other, and the sign-ins' other Redis work "
         "(subscriptions, the suspension and duty reads)."]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=15_000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="3,000 users, one round")
    p.add_argument("--markdown", type=Path, help="write the section of this file (docs/benchmarks.md)")
    args = p.parse_args()
    if args.quick:
        args.users, args.rounds = 3000, 1
    started = time.time()
    results = asyncio.run(run(args.users, args.rounds, [args.users, push.FLUSH_CHUNK]))
    text = table(args.users, args.rounds, results)
    print(text)
    for note in NOTES:
        print(f"Note: {note}")
    if args.markdown:
        command = "python -m bench.presence " + " ".join(sys.argv[1:])
        figures = report.Figures(command=command.strip(), settings={"users": args.users, "rounds": args.rounds},
                                 started=started, seconds=time.time() - started)
        report.write_markdown(args.markdown, "presence", figures, profile="it has no profiler.",
                              about=__doc__.split("\n\n", 2)[2].strip(), tables=f"### Summary\n\n{text}",
                              notes=NOTES)
        print(f"wrote {args.markdown}")


if __name__ == "__main__":
    main()
