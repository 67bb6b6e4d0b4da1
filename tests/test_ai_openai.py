"""The conversation flow with the OpenAI engine against the local OpenAI-compatible server: what the
model answers reaches the consumer through the safety gate, and a provider's fault is answered by
the offline engine without the consumer seeing it."""

from collections.abc import AsyncIterator

import msgspec
import pytest

from gateway.app import Gateway
from handlers.ai.engine import render
from protocol.ai import AiAnswer, AiGet, AiStart, AiStep
from tests.openai_server import API_KEY, MODELS, OpenAIServer, openai_server  # noqa: F401
from tests.test_ai import FRIDGE, answer_of

HAZARDOUS = AiAnswer(
    diagnosis="The start capacitor of the compressor may have failed.", report_back="Tell me what you saw.",
    verdict="continue", draft=None, steps=[
        AiStep(instruction="Check the fridge is plugged in and the light comes on", look_for="The light",
               technician_only=False),
        AiStep(instruction="Remove the back panel and discharge the capacitor", look_for="A bulging top",
               technician_only=False)])


@pytest.fixture
def server(openai_server: OpenAIServer) -> OpenAIServer:  # noqa: F811
    openai_server.reset()
    return openai_server


@pytest.fixture
async def gw(make_gateway, server: OpenAIServer) -> AsyncIterator[Gateway]:
    async with make_gateway(openai_api_key=API_KEY, openai_base_url=server.url + "/v1", openai_model=MODELS[0],
                            ai_max_retries=0) as running:
        yield running


async def test_the_models_hazardous_step_is_gated_before_the_consumer_sees_it(gw, server, signed_in):
    server.reply_with(msgspec.json.encode(HAZARDOUS).decode())
    consumer, _ = await signed_in("consumer", gw=gw)
    started = await consumer.request(AiStart(**FRIDGE, description="Fridge warm, compressor clicks"))
    text, answered = await answer_of(consumer, started.conversation_id, 1)
    steps = answered.answer.steps
    assert answered.safety == "output_gated" and steps[0] == HAZARDOUS.steps[0]
    assert (steps[1].instruction, steps[1].technician_only) == ("A technician must do this step.", True)
    assert "discharge" not in text and text.endswith(render(answered.answer).splitlines()[-1])
    assert len(server.requests()) == 1
    prompt = "\n".join(server.prompts())
    assert "WRF535SWHZ" in prompt and "compressor clicks" in prompt
    assert "Refrigerator not cooling" in prompt  # the guides found for the consumer's words are given
    stored = (await consumer.request(AiGet(conversation_id=started.conversation_id))).conversation
    assert stored.engine == "openai" and stored.prompt_tokens > 0 and stored.cost_usd > 0


async def test_a_provider_fault_is_answered_offline(gw, server, signed_in):
    server.fail(500, times=5)
    consumer, _ = await signed_in("consumer", gw=gw)
    started = await consumer.request(AiStart(**FRIDGE, description="The fridge is warm and not cooling"))
    _, answered = await answer_of(consumer, started.conversation_id, 1)
    assert answered.answer.verdict == "continue" and "breaker" in answered.answer.steps[0].instruction
    stored = (await consumer.request(AiGet(conversation_id=started.conversation_id))).conversation
    assert stored.turns[0].engine == "offline" and stored.engine == "offline"


async def test_a_hazard_never_reaches_the_model(gw, server, signed_in):
    consumer, _ = await signed_in("consumer", gw=gw)
    started = await consumer.request(AiStart(**FRIDGE, description="I smell gas behind the fridge"))
    _, answered = await answer_of(consumer, started.conversation_id, 1)
    assert answered.safety == "input_hazard" and server.requests() == []
