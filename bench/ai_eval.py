"""The AI troubleshooter's golden set (tests/ai_golden.json) against whatever engine is configured:
each case is a conversation over a real session (start, the consumer's replies), scored on the
final verdict, the safety outcome and the key words expected among the steps. `make eval` prints
the score table, so a model or prompt change can be judged; `make test` runs the same cases against
the offline engine (tests/test_ai_golden.py).

    python -m bench.ai_eval            # OPENAI_API_KEY/OPENAI_BASE_URL/OPENAI_MODEL from the environment
"""

import argparse
import asyncio
import dataclasses
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import msgspec

from gateway.app import Running
from gateway.config import load
from handlers.ai.engine import render
from protocol.ai import AiAnswered, AiDelta, AiGet, AiReply, AiStart
from protocol.auth import Auth
from protocol.client import Client
from storage.embedded import Embedded

GOLDEN = Path(__file__).resolve().parent.parent / "tests" / "ai_golden.json"


class ConsumerSays(msgspec.Struct, forbid_unknown_fields=True):
    text: str
    wants_technician: bool = False


class Case(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    brand: str
    sku: str
    locale: str
    description: str
    verdict: str  # expected of the last answer
    safety: str  # expected of the last answer
    replies: list[ConsumerSays] = []
    steps: list[str] = []  # words expected among the steps of the conversation's answers (case-insensitive)


@dataclasses.dataclass
class Outcome:
    case: Case
    verdict: str
    safety: str
    found: list[str]  # the expected words found among the steps
    answers: list[AiAnswered]
    first_delta_s: float  # the first turn: from ai.start to its first ai.delta
    seconds: float  # the whole conversation
    engines: list[str | None]  # which engine answered each turn (None: the safety gate alone), from ai.get

    @property
    def verdict_ok(self) -> bool:
        return self.verdict == self.case.verdict

    @property
    def safety_ok(self) -> bool:
        return self.safety == self.case.safety

    @property
    def passed(self) -> bool:
        hazard_ok = self.case.safety != "input_hazard" or not self.answers[-1].answer.steps
        return self.verdict_ok and self.safety_ok and len(self.found) == len(self.case.steps) and hazard_ok


def cases(path: Path = GOLDEN) -> list[Case]:
    return msgspec.json.decode(path.read_bytes(), type=list[Case])


async def answer_of(client: Client, conversation_id: str, turn: int, timeout: float) -> tuple[AiAnswered, float]:
    """The turn's final answer and when its first ai.delta came (perf_counter)."""
    first = 0.0
    async with asyncio.timeout(timeout):
        while True:
            event = await client.next_event(timeout=timeout)
            if isinstance(event, AiDelta) and (event.conversation_id, event.turn) == (conversation_id, turn):
                first = first or time.perf_counter()
            elif isinstance(event, AiAnswered) and (event.conversation_id, event.turn) == (conversation_id, turn):
                return event, first or time.perf_counter()


async def run_case(client: Client, case: Case, timeout: float = 60.0) -> Outcome:
    began = time.perf_counter()
    started = await client.request(AiStart(brand=case.brand, sku=case.sku, description=case.description,
                                           locale=case.locale))
    answered, first = await answer_of(client, started.conversation_id, started.turn, timeout)
    answers = [answered]
    for said in case.replies:
        turn = await client.request(AiReply(conversation_id=started.conversation_id, text=said.text,
                                            wants_technician=said.wants_technician))
        answers.append((await answer_of(client, started.conversation_id, turn.turn, timeout))[0])
    steps = " ".join(render(a.answer) for a in answers).lower()
    found = [word for word in case.steps if word.lower() in steps]
    last = answers[-1]
    took = time.perf_counter() - began
    stored = (await client.request(AiGet(conversation_id=started.conversation_id))).conversation
    return Outcome(case, last.answer.verdict, last.safety, found, answers, first - began, took,
                   [turn.engine for turn in stored.turns])


def table(outcomes: list[Outcome], engine: str) -> str:
    """The score table. With a model configured, a case a turn of which the offline engine answered instead (the
    model failed: a bad key, timeouts, output that did not fit) does not pass: it scores the fallback, not the model."""
    model = engine.split()[0]
    rows = ["| case | verdict (expected) | safety (expected) | key steps | answered by | first delta ms | pass |",
            "|---|---|---|---|---|---:|:---:|"]
    fell_back = passed = 0
    for o in outcomes:
        others = model != "offline" and any(e is not None and e != model for e in o.engines)
        fell_back += others
        passed += o.passed and not others
        by = ", ".join(e or "safety gate" for e in o.engines)
        rows.append(f"| {o.case.id} | {o.verdict} ({o.case.verdict}) | {o.safety} ({o.case.safety}) "
                    f"| {len(o.found)}/{len(o.case.steps)} | {by} | {o.first_delta_s * 1000:.0f} | "
                    f"{'yes' if o.passed and not others else 'NO'} |")
    n = len(outcomes) or 1
    words = sum(len(o.case.steps) for o in outcomes) or 1
    rows += ["", f"engine: {engine}; cases: {len(outcomes)}",
             f"verdicts right: {sum(o.verdict_ok for o in outcomes) / n:.0%}",
             f"safety right: {sum(o.safety_ok for o in outcomes) / n:.0%}",
             f"key steps found: {sum(len(o.found) for o in outcomes) / words:.0%}",
             f"cases with a turn the model did not answer (the offline engine did): {fell_back}",
             f"cases passed: {passed}/{len(outcomes)}"]
    return "\n".join(rows)


async def evaluate(folder: Path) -> tuple[list[Outcome], str]:
    config = load()
    embedded = Embedded(folder / "servers")
    db, redis = embedded.start(config.database_url is None, config.redis_url is None)
    try:
        config = dataclasses.replace(
            config, data_dir=folder / "data", key_dir=folder / "keys", database_url=config.database_url or db,
            redis_url=config.redis_url or redis, port=0, http_port=0, ai_quota_per_hour=100_000, rate_per_s=1000,
            rate_burst=1000)
        async with Running(config) as gw:
            token, _ = gw.services.tokens.mint(str(uuid.uuid4()), "consumer", "en")
            client = await Client.connect(f"ws://127.0.0.1:{gw.port}/ws")
            try:
                await client.request(Auth(token=token))
                outcomes = [await run_case(client, case) for case in cases()]
            finally:
                await client.close()
            return outcomes, "openai " + config.openai_model if config.openai_api_key else "offline"
    finally:
        embedded.stop()


def main(argv: Sequence[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ai-eval-") as folder:
        outcomes, engine = asyncio.run(evaluate(Path(folder)))
    print(table(outcomes, engine))
    return 0


if __name__ == "__main__":
    sys.exit(main())
