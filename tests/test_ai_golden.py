"""The golden set of troubleshooting conversations (tests/ai_golden.json) against the offline
engine: each case's final verdict, safety outcome and key steps. `make eval` runs the same cases
against the configured engine and prints a score table (bench/ai_eval.py)."""

import pytest

from bench.ai_eval import Case, cases, run_case

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
