"""The conversation flow with the OpenAI engine against the local OpenAI-compatible server: what the
model answers reaches the consumer through the safety gate, and a provider's fault is answered by
the offline engine without the consumer seeing it."""

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator

import msgspec
import pytest

from gateway.app import Gateway
from handlers.ai.engine import render
from protocol.ai import AiAnswer, AiGet, AiReply, AiStart, AiStep
from protocol.auth import Auth, Register
from tests.openai_server import API_KEY, MODELS, OpenAIServer, openai_server  # noqa: F401
from tests.test_ai import FRIDGE, answer_of
from tests.test_uploads import JPEG, PNG, upload
from tests.world import order_at, spot

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


async def test_no_contact_detail_of_the_consumer_reaches_the_model(gw, server, connect):
    """A consumer with an e-mail, a phone and an order at their address asks for help: none of those reaches
    the model, only the product and what they say of the problem."""
    email, phone, address = f"ana-{uuid.uuid4().hex[:8]}@example.com", "+14155550123", "742 Evergreen Terrace"
    app = await connect(gw)
    made = await app.request(Register(email=email, password="long enough secret", role="consumer", name="Ana Ruiz",
                                      phone=phone))
    await app.request(Auth(token=made.token))
    await app.request(order_at(spot(), address=address))
    started = await app.request(AiStart(**FRIDGE, description="The fridge is warm and not cooling"))
    await answer_of(app, started.conversation_id, 1)
    again = await app.request(AiReply(conversation_id=started.conversation_id, text="Still warm after an hour"))
    await answer_of(app, started.conversation_id, again.turn)
    prompt = "\n".join(server.prompts())
    assert "not cooling" in prompt and "Still warm after an hour" in prompt and len(server.requests()) == 2
    for detail in (email, email.split("@")[0], phone, phone[2:], address, "Evergreen", "Ana Ruiz", made.user_id):
        assert detail not in prompt


async def test_a_rate_limited_provider_is_waited_for_and_then_answers(make_gateway, server, signed_in):
    server.reply_with(msgspec.json.encode(HAZARDOUS).decode())
    server.fail(429, times=1, retry_after=0.2)
    async with make_gateway(openai_api_key=API_KEY, openai_base_url=server.url + "/v1", openai_model=MODELS[0],
                            ai_max_retries=1) as running:
        consumer, _ = await signed_in("consumer", gw=running)
        started = await consumer.request(AiStart(**FRIDGE, description="Fridge warm, compressor clicks"))
        _, answered = await answer_of(consumer, started.conversation_id, 1)
        stored = (await consumer.request(AiGet(conversation_id=started.conversation_id))).conversation
    assert [entry["status"] for entry in server.requests()] == [429, 200]
    assert stored.engine == "openai" and answered.answer.steps[0] == HAZARDOUS.steps[0]  # the model's, not offline


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


async def test_a_model_that_writes_too_much_is_cut_to_the_answers_limits(gw, server, signed_in):
    long = msgspec.structs.replace(HAZARDOUS, diagnosis="The compressor may be failing. " * 60,
                                   steps=[HAZARDOUS.steps[0]] * 12)
    server.reply_with(msgspec.json.encode(long).decode())
    consumer, _ = await signed_in("consumer", gw=gw)
    started = await consumer.request(AiStart(**FRIDGE, description="Fridge warm, compressor clicks"))
    _, answered = await answer_of(consumer, started.conversation_id, 1)
    answer = answered.answer
    assert len(answer.diagnosis) == 800 and answer.diagnosis.endswith("…")
    assert answer.diagnosis.startswith("The compressor may be failing.") and len(answer.steps) == 8
    stored = (await consumer.request(AiGet(conversation_id=started.conversation_id))).conversation
    assert stored.turns[0].engine == "openai" and stored.turns[0].answer == answer
    assert server.requests()[0]["body"]["max_completion_tokens"] == 1500


async def test_an_answer_cut_off_at_the_output_cap_is_answered_offline(make_gateway, server, signed_in):
    wordy = msgspec.structs.replace(HAZARDOUS, diagnosis="The compressor may be failing. " * 20,
                                    steps=[HAZARDOUS.steps[0]] * 8)  # some 400 tokens
    server.reply_with(msgspec.json.encode(wordy).decode(), times=2)
    async with make_gateway(openai_api_key=API_KEY, openai_base_url=server.url + "/v1", openai_model=MODELS[0],
                            ai_max_retries=0, ai_max_output_tokens=200) as capped:
        consumer, _ = await signed_in("consumer", gw=capped)
        started = await consumer.request(AiStart(**FRIDGE, description="The fridge is warm and not cooling"))
        _, answered = await answer_of(consumer, started.conversation_id, 1)
    assert [r["body"]["max_completion_tokens"] for r in server.requests()] == [200, 200]
    assert "breaker" in answered.answer.steps[0].instruction  # the offline engine's first check


async def test_a_gateway_stopping_mid_answer_frees_the_conversation(make_gateway, server, signed_in):
    server.stall(seconds=60)
    config = {"openai_api_key": API_KEY, "openai_base_url": server.url + "/v1", "openai_model": MODELS[0],
              "ai_max_retries": 0}
    async with make_gateway(**config) as first:
        consumer, consumer_id = await signed_in("consumer", gw=first)
        started = await consumer.request(AiStart(**FRIDGE, description="The fridge is warm and not cooling"))
        while not server.requests():  # the model is being asked when the gateway stops
            await asyncio.sleep(0.01)
    async with make_gateway(**config) as second:
        consumer, _ = await signed_in("consumer", gw=second, user_id=consumer_id)
        stored = (await consumer.request(AiGet(conversation_id=started.conversation_id))).conversation
        assert (stored.answering, stored.turns[0].answer) == (False, None)
        again = await consumer.request(AiReply(conversation_id=started.conversation_id, text="Still warm, any ideas?"))
        assert again.turn == 2
        _, answered = await answer_of(consumer, started.conversation_id, 2)
        stored = (await consumer.request(AiGet(conversation_id=started.conversation_id))).conversation
        assert [t.answer for t in stored.turns] == [None, answered.answer]


async def test_a_hazardous_step_broken_over_lines_is_gated_while_it_streams(gw, server, signed_in):
    split = msgspec.structs.replace(HAZARDOUS, steps=[
        HAZARDOUS.steps[0], AiStep(instruction="Tighten the gas\nvalve behind the fridge's ice maker",
                                   look_for="A hissing\nsound", technician_only=False)])
    server.reply_with(msgspec.json.encode(split).decode())
    consumer, _ = await signed_in("consumer", gw=gw)
    started = await consumer.request(AiStart(**FRIDGE, description="Fridge warm, the ice maker hisses"))
    text, answered = await answer_of(consumer, started.conversation_id, 1)
    assert "valve" not in text and "hissing" not in text
    assert [line for line in text.splitlines() if line.startswith("2. ")] == [
        "2. A technician must do this step. — Do not try this yourself: leave it to the technician."]
    assert answered.safety == "output_gated" and answered.answer.steps[1].technician_only


async def test_a_hazard_is_answered_while_every_answering_slot_waits_on_a_stalled_model(
        make_gateway, server, signed_in):
    server.stall(seconds=20, times=2)  # both slots held by a provider that hangs
    async with make_gateway(openai_api_key=API_KEY, openai_base_url=server.url + "/v1", openai_model=MODELS[0],
                            ai_max_retries=0, ai_max_answering=2) as gw:
        waiting = [(await signed_in("consumer", gw=gw))[0] for _ in range(2)]
        for consumer in waiting:
            await consumer.request(AiStart(**FRIDGE, description="The fridge is warm"))
        async with asyncio.timeout(10):
            while len(server.requests()) < 2:
                await asyncio.sleep(0.01)
        endangered, _ = await signed_in("consumer", gw=gw)
        started = await endangered.request(AiStart(**FRIDGE, description="I smell gas behind the fridge"))
        _, answered = await answer_of(endangered, started.conversation_id, 1, timeout=5)  # not after the stall
        assert answered.safety == "input_hazard" and answered.answer.draft is not None
        assert answered.answer.draft.urgency == "emergency" and len(server.requests()) == 2


async def test_the_stored_cost_is_at_the_configured_model_prices(make_gateway, server, signed_in):
    async with make_gateway(openai_api_key=API_KEY, openai_base_url=server.url + "/v1", openai_model=MODELS[0],
                            ai_price_in_per_mtok_usd=1000.0, ai_price_out_per_mtok_usd=0.0) as gw:
        consumer, _ = await signed_in("consumer", gw=gw)
        started = await consumer.request(AiStart(**FRIDGE, description="The fridge is warm"))
        await answer_of(consumer, started.conversation_id, 1)
        stored = (await consumer.request(AiGet(conversation_id=started.conversation_id))).conversation
    assert stored.prompt_tokens > 0 and stored.completion_tokens > 0
    assert stored.cost_usd == pytest.approx(stored.prompt_tokens * 1e-3)  # 1,000 USD per million in, nothing out


async def test_no_more_than_max_answering_answers_are_made_at_once(make_gateway, server, signed_in):
    server.stall(seconds=0.3, times=4)  # each answer waits at the model, so the answers overlap
    async with make_gateway(openai_api_key=API_KEY, openai_base_url=server.url + "/v1", openai_model=MODELS[0],
                            ai_max_retries=0, ai_max_answering=2) as gw:
        consumers = [(await signed_in("consumer", gw=gw))[0] for _ in range(4)]
        started = await asyncio.gather(*(c.request(AiStart(**FRIDGE, description="The fridge is warm"))
                                         for c in consumers))
        answers = asyncio.gather(*(answer_of(c, s.conversation_id, 1) for c, s in zip(consumers, started, strict=True)))
        most = 0
        while not answers.done():
            most = max(most, sum(entry["end"] is None for entry in server.requests()))
            await asyncio.sleep(0.01)
        assert [a.answer.verdict for _, a in await answers] == ["continue"] * 4  # every one answered, in turn
        assert most == 2 and len(server.requests()) == 4


@pytest.mark.parametrize("vision", [True, False])
async def test_the_consumers_photos_reach_a_vision_model_and_no_other(make_gateway, server, signed_in, vision):
    """Photos uploaded through the gateway and attached to the turns go to the model as image inputs, in
    the turns' order, only when OPENAI_VISION is on; the words go either way."""
    async with make_gateway(openai_api_key=API_KEY, openai_base_url=server.url + "/v1", openai_model=MODELS[0],
                            ai_max_retries=0, openai_vision=vision) as gw:
        consumer, _ = await signed_in("consumer", gw=gw)
        first = await upload(consumer, JPEG, "image/jpeg")
        started = await consumer.request(AiStart(**FRIDGE, description="Warm, the display shows this",
                                                 attachments=[first]))
        await answer_of(consumer, started.conversation_id, 1)
        second = await upload(consumer, PNG, "image/png")
        again = await consumer.request(AiReply(conversation_id=started.conversation_id, text="Here is the back",
                                               attachments=[second]))
        await answer_of(consumer, started.conversation_id, again.turn)
    last = server.requests()[-1]["body"]["messages"]
    images = [part["image_url"]["url"] for message in last if isinstance(message.get("content"), list)
              for part in message["content"] if part.get("type") == "image_url"]
    expected = [f"data:image/jpeg;base64,{base64.b64encode(JPEG).decode()}",
                f"data:image/png;base64,{base64.b64encode(PNG).decode()}"]
    assert images == (expected if vision else [])
    assert "Here is the back" in "\n".join(server.prompts())
