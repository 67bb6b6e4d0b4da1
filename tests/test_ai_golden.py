"""The golden set of troubleshooting conversations (tests/ai_golden.json) against the offline
engine: each case's final verdict, safety outcome and key steps. `make eval` runs the same cases
against the configured engine and prints a score table (bench/ai_eval.py)."""

import pytest

from bench.ai_eval import Case, cases, run_case, table
from tests.openai_server import MODELS, openai_server  # noqa: F401

GOLDEN = cases()


def test_the_golden_set_covers_every_category_language_and_outcome():
    assert len(GOLDEN) >= 30
    assert {c.locale for c in GOLDEN} == {"en", "es", "zh-Hans"}
    assert {c.verdict for c in GOLDEN} == {"continue", "resolved", "technician_needed"}
    assert {c.safety for c in GOLDEN} >= {"none", "input_hazard"}
    assert len({c.id for c in GOLDEN}) == len(GOLDEN)


@pytest.mark.parametrize("case", GOLDEN, ids=[c.id for c in GOLDEN])
async def test_golden_case(signed_in, case: Case):
    client, _ = await signed_in("consumer")
    outcome = await run_case(client, case, timeout=20)
    assert (outcome.verdict, outcome.safety) == (case.verdict, case.safety)
    assert outcome.found == case.steps
    if case.safety == "input_hazard":
        assert outcome.answers[-1].answer.steps == []
    if case.verdict == "technician_needed":
        assert outcome.answers[-1].draft_id is not None


async def test_the_score_table_does_not_credit_the_model_with_the_offline_engines_answers(
        make_gateway, signed_in, openai_server):  # noqa: F811
    case = next(c for c in GOLDEN if c.safety == "none" and not c.replies)
    openai_server.reset()
    async with make_gateway(openai_api_key="sk-wrong-key-123456", openai_base_url=openai_server.url + "/v1",
                            openai_model=MODELS[0], ai_max_retries=0) as gw:  # every call refused: offline answers
        client, _ = await signed_in("consumer", gw=gw)
        outcome = await run_case(client, case, timeout=20)
    assert outcome.passed and outcome.engines == ["offline"]  # the fallback's answer is right...
    scored = table([outcome], f"openai {MODELS[0]}")
    assert "cases passed: 0/1" in scored  # ...but it is not the model's
    assert "the offline engine did): 1" in scored
    assert "cases passed: 1/1" in table([outcome], "offline")
