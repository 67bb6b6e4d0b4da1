"""The OpenAI engine through the real SDK against the local OpenAI server: what it sends, what the consumer is
streamed and given, and what happens on every fault the server can inject. No gateway is needed."""

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import msgspec
import openai
import pytest

from gateway.metrics import Metrics
from handlers.ai import metrics
from handlers.ai.engine import Check, Dialogue, Guide, Photo, Result, Stream, Turn, render
from handlers.ai.openai_engine import SCHEMA, SCHEMA_NAME, OpenAIEngine, events, readable, retry_after, system_prompt
from handlers.ai.partial_json import PartialJSON, parse_partial
from handlers.ai.schema import SchemaError, drop_added_nulls, strict_schema
from handlers.ai.settings import AiRules
from protocol.ai import AiAnswer, AiDraft, AiStep, AiTried
from tests.openai_server import API_KEY, MODELS, OpenAIServer, check_strict, openai_server  # noqa: F401

ANSWER = AiAnswer(
    diagnosis="The drain filter is probably clogged: the washer cannot pump the water out.",
    steps=[AiStep(instruction="Unplug the washer and open the small door at the bottom right",
                  look_for="A round cap behind it", technician_only=False),
           AiStep(instruction="Put a towel down and unscrew the cap slowly",
                  look_for="Water and lint coming out; remove what blocks it", technician_only=False)],
    report_back="Tell me whether the washer drains now.", verdict="continue", draft=None)
ESCALATED = AiAnswer(
    diagnosis="The drain pump seems to have failed.", steps=[], report_back="", verdict="technician_needed",
    draft=AiDraft(service_type="appliance_repair", summary="Washer does not drain; the filter is clean.",
                  tried=[AiTried(step="Cleaned the drain filter", outcome="Still does not drain")],
                  likely_parts=["drain pump"], urgency="normal"))
FALLBACK = AiAnswer(diagnosis="From the offline guide: check the drain filter.", steps=[], report_back="Did it help?",
                    verdict="continue", draft=None)
GUIDE = Guide(title="Washer does not drain", symptoms="water stays in the drum; error E21",
              checks=(Check(text="Clean the drain filter", look_for="lint or a coin", safety="safe"),
                      Check(text="Replace the drain pump", look_for="it hums", safety="technician")),
              call_when="the filter is clean and it still does not drain", likely_parts=("drain pump", "filter"))


def encoded(answer: AiAnswer) -> str:
    return msgspec.json.encode(answer).decode()


def dialogue(**changes: Any) -> Dialogue:
    fields: dict[str, Any] = dict(
        conversation_id="c-1", locale="en", brand="Acme", sku="WM-1400", product="FrontLoad 1400",
        category="washer", service_types=("appliance_repair", "installation"),
        turns=(Turn("consumer", "My washer does not drain, the display shows E21"),), guides=(GUIDE,))
    return Dialogue(**{**fields, **changes})


class FixedEngine:
    """A stand-in for the offline engine (another module's work): always the same answer, streamed in two."""

    name = "fixed"

    def __init__(self) -> None:
        self.asked: list[Dialogue] = []

    async def answer(self, dialogue: Dialogue, stream: Stream) -> Result:
        self.asked.append(dialogue)
        text = render(FALLBACK)
        await stream(text[:10])
        await stream(text[10:])
        return Result(FALLBACK, self.name)


class Deltas:
    """What the consumer is streamed."""

    def __init__(self) -> None:
        self.pieces: list[str] = []

    async def __call__(self, piece: str) -> None:
        self.pieces.append(piece)

    @property
    def text(self) -> str:
        return "".join(self.pieces)


MakeEngine = Callable[..., OpenAIEngine]


@pytest.fixture
def server(openai_server: OpenAIServer) -> OpenAIServer:  # noqa: F811
    openai_server.reset()
    return openai_server


@pytest.fixture
async def engine(server: OpenAIServer) -> AsyncIterator[MakeEngine]:
    """`engine(**rules)`: an OpenAIEngine of the local server (FixedEngine as its fallback), closed after."""
    made: list[OpenAIEngine] = []

    def make(**rules: Any) -> OpenAIEngine:
        settings = AiRules(**{"openai_api_key": API_KEY, "openai_base_url": server.url + "/v1",
                              "openai_model": MODELS[0], "timeout_s": 5.0, **rules})
        made.append(OpenAIEngine(settings, FixedEngine(), backoff_s=0.001))
        return made[-1]

    yield make
    for one in made:
        await one.close()


def counted(metric: Any, **labels: str) -> float:
    """A counter's value for `labels`, 0 before its first increment."""
    for family in metric.collect():
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels == labels:
                return float(sample.value)
    return 0.0


class Tally:
    """How much a test moved some counters."""

    def __init__(self, **watched: tuple[Any, dict[str, str]]) -> None:
        self.watched = watched
        self.before = {name: counted(metric, **labels) for name, (metric, labels) in watched.items()}

    def moved(self) -> dict[str, float]:
        return {name: counted(metric, **labels) - self.before[name]
                for name, (metric, labels) in self.watched.items()}


def refs(node: Any) -> Iterator[Any]:
    if isinstance(node, dict):
        yield from (key for key in node if key in ("$ref", "$defs", "title", "default"))
        for child in node.values():
            yield from refs(child)
    elif isinstance(node, list):
        for child in node:
            yield from refs(child)


# --- The schema and the partial parser, on their own. ---

class Later(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A type with what strict mode has no words for: defaults, an optional field, length limits."""

    text: str
    tags: list[str] = []
    level: int = 0
    when: str | None = None
    code: Any = None


class Tree(msgspec.Struct):
    children: list["Tree"]


def test_the_strict_schema_of_an_answer_inlines_everything_and_requires_every_property() -> None:
    assert SCHEMA == strict_schema(AiAnswer)
    assert not list(refs(SCHEMA))  # inlined, no titles or defaults
    assert SCHEMA["required"] == ["diagnosis", "steps", "report_back", "verdict", "draft"]
    assert SCHEMA["additionalProperties"] is False
    draft = SCHEMA["properties"]["draft"]["anyOf"]
    assert draft[1] == {"type": "null"} and draft[0]["required"] == ["service_type", "summary", "tried",
                                                                     "likely_parts", "urgency"]
    assert draft[0]["properties"]["tried"]["items"]["additionalProperties"] is False
    assert SCHEMA["properties"]["verdict"] == {"enum": ["continue", "resolved", "technician_needed"],
                                               "type": "string"}
    check_strict(SCHEMA, SCHEMA_NAME)  # what the local server (and OpenAI) require


def test_optional_fields_become_nullable_and_their_nulls_give_the_defaults_back() -> None:
    class Limited(msgspec.Struct, kw_only=True):
        name: str = msgspec.field(default="x")
        size: int | None = None

    schema = strict_schema(Later)
    check_strict(schema, "later")
    assert schema["required"] == ["text", "tags", "level", "when", "code"]
    assert schema["properties"]["tags"] == {"anyOf": [{"type": "array", "items": {"type": "string"}},
                                                      {"type": "null"}]}
    assert schema["properties"]["when"] == {"anyOf": [{"type": "string"}, {"type": "null"}]}  # nullable already
    document = {"text": "hi", "tags": None, "level": None, "when": None, "code": None}
    assert msgspec.convert(drop_added_nulls(document, Later), Later) == Later(text="hi")
    assert strict_schema(Limited)["properties"]["name"] == {"anyOf": [{"type": "string"}, {"type": "null"}]}
    with pytest.raises(SchemaError, match="refers to itself"):
        strict_schema(Tree)
    with pytest.raises(SchemaError, match="object at the root"):
        strict_schema(list[int])


async def test_the_local_server_accepts_the_schema_and_its_answer_decodes(server: OpenAIServer) -> None:
    async with openai.AsyncOpenAI(api_key=API_KEY, base_url=server.url + "/v1", max_retries=0) as client:
        reply = await client.chat.completions.create(
            model=MODELS[0], messages=[{"role": "user", "content": "My washer does not drain"}],
            response_format={"type": "json_schema", "json_schema": {"name": SCHEMA_NAME, "strict": True,
                                                                    "schema": SCHEMA}})
        with pytest.raises(openai.BadRequestError) as raised:  # msgspec's own schema is not strict mode's
            await client.chat.completions.create(
                model=MODELS[0], messages=[{"role": "user", "content": "My washer does not drain"}],
                response_format={"type": "json_schema", "json_schema": {
                    "name": SCHEMA_NAME, "strict": True, "schema": msgspec.json.schema(AiAnswer)}})
    assert raised.value.code == "invalid_json_schema"
    answer = msgspec.json.decode(reply.choices[0].message.content or "", type=AiAnswer)
    assert answer.verdict == "continue" and answer.steps[0].instruction == "instruction"


@pytest.mark.parametrize("answer", [ANSWER, ESCALATED, AiAnswer(
    diagnosis='Un "código" \\ 错误 E21 😀\n',
    steps=[AiStep(instruction="Réinitialiser", look_for="\t→", technician_only=True)],
    report_back="¿Y ahora?", verdict="continue", draft=None)], ids=["steps", "draft", "escapes"])
def test_every_prefix_of_an_answer_reads_as_the_start_of_its_render(answer: AiAnswer) -> None:
    for text in (encoded(answer), json.dumps(msgspec.to_builtins(answer), indent=1)):
        final, growing, shown = render(answer), PartialJSON(), ""
        for end in range(1, len(text) + 1):
            value = parse_partial(text[:end])
            assert growing.feed(text[end - 1]) == value
            now = readable(value)
            assert final.startswith(now), (text[:end], now)
            assert now.startswith(shown) or not now  # the text only grows
            shown = now or shown
        assert parse_partial(text) == msgspec.to_builtins(answer) and shown == final


def test_what_is_not_json_reads_as_nothing() -> None:
    for text in ("", "Sure! Here is what I found: {", '"diagnosis"', "  ", "[1, 2] and more"):
        assert readable(parse_partial(text)) == ""
    assert parse_partial('{"diagnosis": "The filt') == {"diagnosis": "The filt"}
    assert parse_partial('{"a": "x\\u00') == {"a": "x"} and parse_partial('{"a": "x\\ud83d') == {"a": "x"}
    assert parse_partial('{"a": [1, tr') == {"a": [1]} and parse_partial('{"a": 1, "b') == {"a": 1}


# --- Answers. ---

async def test_a_streamed_answer_is_decoded_and_its_deltas_make_its_render(server: OpenAIServer,
                                                                           engine: MakeEngine) -> None:
    server.reply_with(encoded(ANSWER))
    deltas = Deltas()
    tally = Tally(ok=(metrics.CALLS, {"outcome": "ok"}), tokens_in=(metrics.TOKENS, {"direction": "in"}),
                  tokens_out=(metrics.TOKENS, {"direction": "out"}))
    result = await engine().answer(dialogue(), deltas)
    assert (result.answer, result.engine, result.fallback) == (ANSWER, "openai", None)
    assert deltas.text == render(ANSWER) and len(deltas.pieces) > 5
    assert ANSWER.diagnosis.startswith(deltas.pieces[0])  # the diagnosis first, as it is generated
    usage = result.usage
    assert usage.prompt_tokens > 100 and usage.completion_tokens == (len(encoded(ANSWER)) + 3) // 4
    assert usage.cost_usd == pytest.approx((usage.prompt_tokens * 0.15 + usage.completion_tokens * 0.60) / 1e6)
    assert tally.moved() == {"ok": 1, "tokens_in": usage.prompt_tokens, "tokens_out": usage.completion_tokens}


async def test_the_prices_make_the_cost(server: OpenAIServer, engine: MakeEngine) -> None:
    server.reply_with(encoded(ANSWER))
    result = await engine(price_in_per_mtok_usd=2.5, price_out_per_mtok_usd=10.0).answer(dialogue(), Deltas())
    usage = result.usage
    assert usage.cost_usd == pytest.approx(usage.prompt_tokens * 2.5e-6 + usage.completion_tokens * 1e-5)


async def test_the_request_holds_the_dialogue_and_nothing_else(server: OpenAIServer, engine: MakeEngine) -> None:
    said = dialogue(locale="es", wants_technician=True, turns=(
        Turn("consumer", "Mi lavadora no desagua"), Turn("assistant", render(ANSWER), ANSWER),
        Turn("consumer", "Hecho, sigue sin desaguar", photos=(Photo("image/jpeg", b"\xff\xd8photo"),))))
    server.reply_with(encoded(ESCALATED))
    result = await engine(openai_model="gpt-4.1-mini").answer(said, Deltas())
    assert result.answer == ESCALATED
    [entry] = server.requests()
    body = entry["body"]
    assert (body["model"], body["stream"], body["stream_options"]) == ("gpt-4.1-mini", True, {"include_usage": True})
    assert body["response_format"] == {"type": "json_schema", "json_schema": {
        "name": SCHEMA_NAME, "strict": True, "schema": SCHEMA}}
    system, *chat = body["messages"]
    assert chat == [{"role": "user", "content": "Mi lavadora no desagua"},
                    {"role": "assistant", "content": encoded(ANSWER)},
                    {"role": "user", "content": "Hecho, sigue sin desaguar"}]  # vision off: no photo
    assert system == {"role": "system", "content": system_prompt(said)}
    prompt = system["content"]
    for part in ("Acme", "WM-1400", "FrontLoad 1400", "washer", "appliance_repair, installation", "Spanish",
                 "Washer does not drain", "error E21", "[safe] Clean the drain filter (look for: lint or a coin)",
                 "[technician] Replace the drain pump", "the filter is clean and it still does not drain",
                 "drain pump, filter", "mains wiring", "refrigerant", "microwave", "gas",
                 "the verdict must be technician_needed"):
        assert part in prompt, part
    # Only the dialogue's fields: the conversation id (and no one's contact) never reaches the provider.
    assert server.prompts() == [prompt, "Mi lavadora no desagua", encoded(ANSWER), "Hecho, sigue sin desaguar"]
    assert not any("c-1" in text or "@" in text for text in server.prompts())


async def test_photos_are_image_inputs_only_with_vision_on(server: OpenAIServer, engine: MakeEngine) -> None:
    photo = Photo("image/png", b"\x89PNG fake bytes")
    turns = (Turn("consumer", "The light blinks red three times", photos=(photo, Photo("application/pdf", b"%"))),)
    await engine(openai_vision=True).answer(dialogue(turns=turns), Deltas())
    [entry] = server.requests()
    assert entry["body"]["messages"][1] == {"role": "user", "content": [
        {"type": "text", "text": "The light blinks red three times"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(photo.data).decode()}}]}
    server.reset()
    await engine().answer(dialogue(turns=turns), Deltas())
    assert server.requests()[0]["body"]["messages"][1] == {"role": "user", "content": turns[0].text}


# --- Faults. ---

async def test_a_429_is_retried_after_its_retry_after(server: OpenAIServer, engine: MakeEngine) -> None:
    server.reply_with(encoded(ANSWER))
    server.fail(429, retry_after=0.4)
    tally = Tally(limited=(metrics.ATTEMPTS, {"outcome": "rate_limited"}), ok=(metrics.ATTEMPTS, {"outcome": "ok"}))
    deltas = Deltas()
    result = await engine().answer(dialogue(), deltas)  # how long it waits: test_the_wait_before_a_retry
    assert (result.answer, result.engine, result.fallback, deltas.text) == (ANSWER, "openai", None, render(ANSWER))
    assert [entry["status"] for entry in server.requests()] == [429, 200]
    assert tally.moved() == {"limited": 1, "ok": 1}


def test_the_wait_before_a_retry() -> None:
    assert retry_after({"retry-after": "2"}) == 2.0 and retry_after({"retry-after-ms": "250"}) == 0.25
    assert retry_after({"retry-after": "Wed, 02 Dec 2026 07:00:00 GMT"}) is None and retry_after({}) is None
    made = OpenAIEngine(AiRules(openai_api_key="sk-x", timeout_s=10), FixedEngine(), backoff_s=0.5)
    waits = [made._backoff(failures, None) for failures in (1, 2, 3, 10) for _ in range(50)]
    assert all(0 <= (wait or 0) <= ceiling for wait, ceiling in zip(waits, [0.5] * 50 + [1.0] * 50 + [2.0] * 50
                                                                     + [8.0] * 50, strict=True))
    assert len(set(waits)) > 150  # jittered, not a fixed ladder
    assert 3.0 <= (made._backoff(1, 3.0) or 0) <= 3.5 and made._backoff(1, 11.0) is None


async def test_a_429_asking_for_more_than_a_call_lasts_goes_to_the_fallback(server: OpenAIServer,
                                                                            engine: MakeEngine) -> None:
    server.fail(429, retry_after=60)
    result = await engine(timeout_s=2.0).answer(dialogue(), Deltas())
    assert (result.answer, result.engine, result.fallback) == (FALLBACK, "fixed", "rate_limited")
    assert len(server.requests()) == 1


async def test_server_errors_past_the_retries_go_to_the_fallback(server: OpenAIServer, engine: MakeEngine) -> None:
    server.fail(500, times=2)
    server.reply_with(encoded(ANSWER))  # never reached
    tally = Tally(fallbacks=(metrics.FALLBACKS, {"reason": "unavailable"}),
                  calls=(metrics.CALLS, {"outcome": "unavailable"}))
    made = engine(max_retries=1)
    deltas = Deltas()
    result = await made.answer(dialogue(), deltas)
    assert (result.answer, result.engine, result.fallback) == (FALLBACK, "fixed", "unavailable")
    assert deltas.text == render(FALLBACK)  # what the fallback streamed, no provider error
    assert [entry["status"] for entry in server.requests()] == [500, 500]
    assert isinstance(made.fallback, FixedEngine) and made.fallback.asked == [dialogue()]
    assert tally.moved() == {"fallbacks": 1, "calls": 1}


async def test_a_503_then_success_is_the_providers_answer(server: OpenAIServer, engine: MakeEngine) -> None:
    server.fail(503)
    server.reply_with(encoded(ANSWER))
    result = await engine().answer(dialogue(), Deltas())
    assert (result.answer, result.engine) == (ANSWER, "openai")


@pytest.mark.parametrize(("second", "engine_name", "reason"), [
    ("not_json", "fixed", "invalid_output"), ("off_schema", "fixed", "invalid_output"), (None, "openai", None)])
async def test_malformed_output_is_asked_again_once(server: OpenAIServer, engine: MakeEngine, second: Any,
                                                    engine_name: str, reason: str | None) -> None:
    server.malformed("not_json")
    if second is not None:
        server.malformed(second)
    server.reply_with(encoded(ANSWER))
    tally = Tally(invalid=(metrics.ATTEMPTS, {"outcome": "invalid_output"}))
    result = await engine().answer(dialogue(), Deltas())
    assert (result.engine, result.fallback) == (engine_name, reason)
    assert result.answer == (ANSWER if second is None else FALLBACK)
    assert [entry["fault"] for entry in server.requests()] == ["malformed", "malformed" if second else None]
    assert tally.moved() == {"invalid": 2 if second else 1}
    assert result.usage.completion_tokens > 0  # the unusable answers cost too


async def test_an_answer_that_does_not_fit_the_dialogue_is_invalid(server: OpenAIServer, engine: MakeEngine) -> None:
    wrong_service = msgspec.structs.replace(ESCALATED, draft=msgspec.structs.replace(
        ESCALATED.draft, service_type="plumbing"))
    no_draft = msgspec.structs.replace(ESCALATED, draft=None)
    server.reply_with(encoded(wrong_service))
    server.reply_with(encoded(no_draft))
    result = await engine().answer(dialogue(), Deltas())
    assert (result.engine, result.fallback) == ("fixed", "invalid_output")
    server.reset()
    server.reply_with(encoded(ANSWER), times=2)  # "continue", when the consumer asked for a technician
    result = await engine().answer(dialogue(wants_technician=True), Deltas())
    assert (result.engine, result.fallback) == ("fixed", "invalid_output")


async def test_a_refusal_is_asked_again_then_the_fallback_answers(server: OpenAIServer, engine: MakeEngine) -> None:
    server.refuse(times=2)
    deltas = Deltas()
    result = await engine().answer(dialogue(), deltas)
    assert (result.answer, result.engine, result.fallback) == (FALLBACK, "fixed", "refused")
    assert deltas.text == render(FALLBACK) and "sorry" not in deltas.text
    server.reset()
    server.refuse()
    server.reply_with(encoded(ANSWER))
    assert (await engine().answer(dialogue(), Deltas())).answer == ANSWER


async def test_a_stalled_stream_times_out_then_the_fallback_follows_what_was_shown(server: OpenAIServer,
                                                                                  engine: MakeEngine) -> None:
    server.reply_with(encoded(ANSWER))
    server.stall(seconds=30, after_chunks=3, times=2)
    deltas = Deltas()
    tally = Tally(timeouts=(metrics.ATTEMPTS, {"outcome": "timeout"}))
    result = await engine(timeout_s=0.5, max_retries=1).answer(dialogue(), deltas)
    assert (result.answer, result.engine, result.fallback) == (FALLBACK, "fixed", "timeout")
    then = "\n\n" + render(FALLBACK)
    assert deltas.text.endswith(then)
    shown = deltas.text[:-len(then)]
    assert shown and ANSWER.diagnosis.startswith(shown)  # the answer's start, then the fallback's answer
    assert tally.moved() == {"timeouts": 2}
    assert [entry["fault"] for entry in server.requests()] == ["stall", "stall"]


async def test_a_stall_then_an_answer_streams_it_once(server: OpenAIServer, engine: MakeEngine) -> None:
    server.reply_with(encoded(ANSWER), times=None)  # the retry may come before the server gives the reply back
    server.stall(seconds=30, after_chunks=3)
    deltas = Deltas()
    result = await engine(timeout_s=0.5).answer(dialogue(), deltas)
    assert (result.answer, result.engine) == (ANSWER, "openai")
    assert deltas.text == render(ANSWER)  # the retry's text continued what the stalled one had shown


async def test_a_cut_connection_is_retried(server: OpenAIServer, engine: MakeEngine) -> None:
    server.reply_with(encoded(ANSWER))
    server.cut(after_chunks=2)
    server.cut()
    deltas = Deltas()
    result = await engine().answer(dialogue(), deltas)
    assert (result.answer, result.engine, deltas.text) == (ANSWER, "openai", render(ANSWER))
    ends = [entry["end"] for entry in server.requests()]
    assert len(ends) == 3 and ends[:2] == ["cut", "cut"]  # (the third's end is recorded after its last byte)


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
@pytest.mark.parametrize("size", [1, 7, 4096])
async def test_server_sent_events_are_read_as_the_format_says(newline: bytes, size: int) -> None:
    """What OpenAI-compatible servers send besides one `data:` line per chunk: comments (keep-alives), other
    fields, data over several lines, no space after the colon, any of the three line endings, cut anywhere by
    the network (a CRLF too); `[DONE]` ends the stream."""
    lines = [b": keep-alive", b"", b"event: message", b'data: {"a":', b"data: 1}", b"", b'data:{"b": "\xc3\xa9"}',
             b"", b"id: 7", b"", b"data: [DONE]", b"", b'data: {"after": "done"}', b""]
    body = newline.join(lines) + newline

    async def chunks() -> AsyncIterator[bytes]:
        for at in range(0, len(body), size):
            yield body[at:at + size]

    assert [json.loads(data) async for data in events(chunks())] == [{"a": 1}, {"b": "é"}]


async def test_the_last_event_counts_without_its_blank_line() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'data: {"a": 1}\r\n\r\ndata: {"b"'
        yield b': 2}'

    assert [json.loads(data) async for data in events(chunks())] == [{"a": 1}, {"b": 2}]


async def test_an_error_event_in_the_stream_is_retried(server: OpenAIServer, engine: MakeEngine) -> None:
    server.reply_with(encoded(ANSWER))
    server.error_event(after_chunks=3)
    deltas = Deltas()
    result = await engine().answer(dialogue(), deltas)
    assert (result.answer, result.engine, result.fallback) == (ANSWER, "openai", None)
    assert deltas.text == render(ANSWER)  # the retry's text continued what the failed stream had shown
    ends = [entry["end"] for entry in server.requests()]
    assert len(ends) == 2 and ends[0] == "error_event"  # (the second's end is recorded after its last byte)


async def test_a_refused_request_is_not_retried(server: OpenAIServer, engine: MakeEngine) -> None:
    result = await engine(openai_api_key="sk-wrong-key-123456").answer(dialogue(), Deltas())
    assert (result.answer, result.engine, result.fallback) == (FALLBACK, "fixed", "rejected")
    assert [entry["status"] for entry in server.requests()] == [401]
    result = await engine(openai_model="gpt-9").answer(dialogue(), Deltas())
    assert result.fallback == "rejected"


async def test_no_more_than_max_in_flight_requests_reach_the_server(server: OpenAIServer,
                                                                   engine: MakeEngine) -> None:
    server.reply_with(encoded(ANSWER), times=None)
    server.stall(seconds=0.3, times=7)  # each request waits before its answer
    made = engine(max_in_flight=3)
    calls = [asyncio.ensure_future(made.answer(dialogue(conversation_id=f"c-{n}"), Deltas())) for n in range(7)]
    most, waiting = 0, 0
    while not all(call.done() for call in calls):
        open_now = sum(entry["end"] is None for entry in server.requests())
        most = max(most, open_now)
        waiting = max(waiting, int(counted_gauge(metrics.WAITING)))
        await asyncio.sleep(0.01)
    results = [call.result() for call in calls]
    assert most == 3 and waiting >= 1  # the limit reached, never passed; the others waited their turn
    assert all(result.engine == "openai" and result.answer == ANSWER for result in results)
    assert len(server.requests()) == 7 and counted_gauge(metrics.IN_FLIGHT) == 0


async def test_a_failing_stream_is_the_callers_error_not_a_provider_fault(server: OpenAIServer,
                                                                          engine: MakeEngine) -> None:
    async def gone(piece: str) -> None:
        raise ConnectionError("the consumer's session closed")

    server.reply_with(encoded(ANSWER))
    made = engine()
    with pytest.raises(ConnectionError, match="session closed"):
        await made.answer(dialogue(), gone)
    assert isinstance(made.fallback, FixedEngine) and made.fallback.asked == []
    assert counted_gauge(metrics.IN_FLIGHT) == 0 and made.slots._value == made.rules.max_in_flight
    with pytest.raises(ValueError, match="openai_api_key"):
        OpenAIEngine(AiRules(), FixedEngine())


def counted_gauge(gauge: Any) -> float:
    return float(next(iter(gauge.collect())).samples[0].value)


async def test_the_metrics_are_exported(server: OpenAIServer, engine: MakeEngine) -> None:
    server.fail(500)
    server.reply_with(encoded(ANSWER))
    await engine(max_retries=0).answer(dialogue(), Deltas())
    await engine().answer(dialogue(), Deltas())
    exposition = Metrics().exposition().decode()
    for line in ('ai_openai_calls_total{outcome="unavailable"}', 'ai_fallbacks_total{reason="unavailable"}',
                 'ai_openai_requests_total{outcome="server_error"}', "ai_openai_call_seconds_bucket",
                 "ai_openai_in_flight ", 'ai_openai_tokens_total{direction="in"}', "ai_openai_cost_usd_total"):
        assert line in exposition, line
    assert "c-1" not in exposition
