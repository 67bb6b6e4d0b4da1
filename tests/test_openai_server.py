"""The OpenAI test server driven through the real SDK (async client): each test shows something the gateway's
AI provider will meet through it, as a user of the SDK would notice it."""

import asyncio
import json
import re
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import jsonschema
import msgspec
import openai
import pytest
from openai.types.chat import ChatCompletionChunk

from tests.openai_server import API_KEY, MODELS, ROOT, OpenAIServer, openai_server  # noqa: F401

MakeClient = Callable[..., openai.AsyncOpenAI]
MODEL = MODELS[0]
EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")

STEP = {"type": "object", "additionalProperties": False, "required": ["instruction", "look_for"],
        "properties": {"instruction": {"type": "string"}, "look_for": {"type": "string"}}}
DRAFT = {"type": "object", "additionalProperties": False, "required": ["summary", "urgency", "likely_parts"],
         "properties": {"summary": {"type": "string"}, "urgency": {"enum": ["normal", "urgent", "emergency"]},
                        "likely_parts": {"type": "array", "items": {"type": "string"}}}}
ANSWER: dict[str, Any] = {
    "type": "object", "additionalProperties": False,
    "required": ["diagnosis", "steps", "report_back", "verdict", "order_draft"],
    "properties": {"diagnosis": {"type": "string"}, "steps": {"type": "array", "items": {"$ref": "#/$defs/Step"}},
                   "report_back": {"type": "string"},
                   "verdict": {"type": "string", "enum": ["continue", "resolved", "technician_needed"]},
                   "order_draft": {"anyOf": [{"$ref": "#/$defs/Draft"}, {"type": "null"}]}},
    "$defs": {"Step": STEP, "Draft": DRAFT}}
REPLY = json.dumps({"diagnosis": "A tripped breaker", "verdict": "continue", "order_draft": None,
                    "steps": [{"instruction": "Reset the breaker marked DRYER", "look_for": "The drum light comes on"}],
                    "report_back": "Does the dryer start?"})


def structured(schema: dict[str, Any] = ANSWER, strict: bool = True) -> Any:
    return {"type": "json_schema", "json_schema": {"name": "troubleshooting_answer", "strict": strict,
                                                   "schema": schema}}


def asking(text: str = "My dryer does not start") -> Any:
    return [{"role": "system", "content": "You help consumers fix home appliances safely."},
            {"role": "user", "content": text}]


@pytest.fixture
def server(openai_server: OpenAIServer) -> OpenAIServer:  # noqa: F811
    openai_server.reset()  # the session's server, with nothing scripted and nothing recorded
    return openai_server


@pytest.fixture
async def sdk(server: OpenAIServer) -> AsyncIterator[MakeClient]:
    """`sdk(timeout=..., retries=..., key=..., server=...)`: SDK clients of a test server, closed after the test."""
    made: list[openai.AsyncOpenAI] = []

    def make(timeout: float = 10, retries: int = 0, key: str = API_KEY,
             server: OpenAIServer = server) -> openai.AsyncOpenAI:
        made.append(openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=key, timeout=timeout,
                                       max_retries=retries))
        return made[-1]

    yield make
    for client in made:
        await client.close()


@pytest.fixture
def client(sdk: MakeClient) -> openai.AsyncOpenAI:
    return sdk()


async def collect(stream: openai.AsyncStream[ChatCompletionChunk]) -> list[ChatCompletionChunk]:
    return [chunk async for chunk in stream]


def content(chunks: list[ChatCompletionChunk]) -> str:
    return "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)


async def settled(server: OpenAIServer, count: int) -> list[dict[str, Any]]:
    """The record once `count` requests are in and all answered (the server notices a client leave on its own)."""
    deadline = time.monotonic() + 5
    while True:
        log = server.requests()
        if len(log) >= count and all(entry["end"] for entry in log):
            return log
        assert time.monotonic() < deadline, log
        await asyncio.sleep(0.01)


async def test_a_whole_answer_is_the_scripted_reply_with_its_usage(client: openai.AsyncOpenAI,
                                                                   server: OpenAIServer) -> None:
    server.reply_with("Check the breaker first.")
    answer = await client.chat.completions.create(model=MODEL, messages=asking())
    assert (answer.object, answer.model, answer.choices[0].finish_reason) == ("chat.completion", MODEL, "stop")
    assert answer.choices[0].message.content == "Check the breaker first." and answer.id.startswith("chatcmpl-")
    assert answer.usage is not None and answer.usage.prompt_tokens > 0 and answer.usage.completion_tokens > 0
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens
    assert answer._request_id == server.requests()[0]["id"]  # the x-request-id header


async def test_a_streamed_answer_comes_in_deltas_then_its_usage(client: openai.AsyncOpenAI,
                                                                server: OpenAIServer) -> None:
    server.reply_with(REPLY)
    stream = await client.chat.completions.create(model=MODEL, messages=asking(), stream=True,
                                                  stream_options={"include_usage": True},
                                                  response_format=structured())
    chunks = await collect(stream)
    deltas = [chunk.choices[0].delta.content for chunk in chunks if chunk.choices and chunk.choices[0].delta.content]
    assert len(deltas) > 3 and all(len(delta) <= server.chunk_size for delta in deltas)
    assert content(chunks) == REPLY and json.loads(content(chunks))["verdict"] == "continue"
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].object == "chat.completion.chunk"
    assert [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1] == "stop"
    *body, last = chunks
    assert last.choices == [] and last.usage is not None and last.usage.completion_tokens > 0
    assert all(chunk.usage is None for chunk in body) and len({chunk.id for chunk in chunks}) == 1

    plain = await collect(await client.chat.completions.create(model=MODEL, messages=asking(), stream=True))
    assert all(chunk.usage is None and chunk.choices for chunk in plain)  # no usage chunk unless asked


async def test_replies_are_queued_then_a_default_answers_which_may_be_a_function(client: openai.AsyncOpenAI,
                                                                                 server: OpenAIServer) -> None:
    server.reply_with("first", times=2)
    server.reply_with(lambda body: f"you said: {body['messages'][-1]['content']}", times=None)
    server.reply_with("last queued")
    said = [(await client.chat.completions.create(model=MODEL, messages=asking(f"q{i}"))).choices[0].message.content
            for i in range(5)]
    assert said == ["first", "first", "last queued", "you said: q3", "you said: q4"]
    server.reset()
    again = await client.chat.completions.create(model=MODEL, messages=asking())
    assert again.choices[0].message.content == "This is the local OpenAI test server: no reply was scripted for " \
                                               "this request."


TRICKY: dict[str, Any] = {
    "type": "object", "additionalProperties": False,
    "required": ["when", "count", "ratio", "code", "tags", "flag", "maybe", "kind", "nested"],
    "properties": {"when": {"type": "string", "format": "date-time"},
                   "count": {"type": "integer", "minimum": 2, "maximum": 5},
                   "ratio": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
                   "code": {"type": "string", "pattern": "^[A-Z][0-9]$"},
                   "tags": {"type": "array", "items": {"type": "string", "minLength": 6}, "minItems": 2},
                   "flag": {"type": "boolean"}, "maybe": {"type": ["string", "null"]}, "kind": {"const": "fixed"},
                   "nested": {"type": "array", "maxItems": 0, "items": {"$ref": "#"}}}}


@pytest.mark.parametrize("schema", [ANSWER, TRICKY], ids=["answer", "tricky"])
@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
async def test_with_nothing_scripted_the_answer_fits_the_schema(client: openai.AsyncOpenAI, schema: dict[str, Any],
                                                                streamed: bool) -> None:
    if streamed:
        chunks = await collect(await client.chat.completions.create(
            model=MODEL, messages=asking(), response_format=structured(schema), stream=True))
        text = content(chunks)
    else:
        answer = await client.chat.completions.create(model=MODEL, messages=asking(),
                                                      response_format=structured(schema))
        text = answer.choices[0].message.content or ""
    document = json.loads(text)
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(document)
    if schema is ANSWER:  # the first verdict, one step, no order draft: the flow goes on
        assert (document["verdict"], len(document["steps"]), document["order_draft"]) == ("continue", 1, None)


class Later(msgspec.Struct, forbid_unknown_fields=True):
    note: str | None = None


@pytest.mark.parametrize(("schema", "error"), [
    ({**ANSWER, "additionalProperties": True}, "In context=(), 'additionalProperties' is required to be supplied "
                                               "and to be false."),
    ({**ANSWER, "$defs": {"Step": {**STEP, "required": ["instruction"]}, "Draft": DRAFT}},
     "In context=('$defs', 'Step'), 'required' is required to be supplied and to be an array including every key "
     "in properties. Missing 'look_for'."),
    ({**ANSWER, "properties": {**ANSWER["properties"], "verdict": {"$ref": "#/$defs/Step", "description": "x"}}},
     "In context=('properties', 'verdict'), '$ref' cannot be combined with other keywords (description)."),
    ({**ANSWER, "properties": {**ANSWER["properties"], "diagnosis": {"oneOf": [{"type": "string"}]}}},
     "In context=('properties', 'diagnosis'), 'oneOf' is not permitted."),
    (msgspec.json.schema(Later), "schema must be a JSON Schema of 'type: \"object\"', got 'type: \"None\"'."),
], ids=["open object", "optional property", "ref with siblings", "oneOf", "msgspec as is"])
async def test_strict_mode_refuses_schemas_openai_refuses(client: openai.AsyncOpenAI, schema: dict[str, Any],
                                                          error: str) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        await client.chat.completions.create(model=MODEL, messages=asking(), response_format=structured(schema))
    assert raised.value.param == "response_format" and raised.value.code == "invalid_json_schema"
    assert raised.value.message.endswith(error) and "troubleshooting_answer" in raised.value.message
    loose = await client.chat.completions.create(model=MODEL, messages=asking(),
                                                 response_format=structured(schema, strict=False))
    assert loose.choices[0].message.content  # without strict, any schema goes


@pytest.mark.parametrize(("messages", "param"), [
    ([{"role": "bot", "content": "hi"}], "messages[0].role"),
    ([{"role": "user"}], "messages[0].content"),
    ([{"role": "user", "content": 3}], "messages[0].content"),
    ([{"role": "user", "content": [{"type": "video", "url": "x"}]}], "messages[0].content[0].type"),
    ([{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://x.example/a.png"}}]}],
     "messages[0]"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}],
     "messages[0].content[0].image_url.url"),
    ([], "messages"),
])
async def test_a_malformed_request_is_a_bad_request(client: openai.AsyncOpenAI, messages: Any, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        await client.chat.completions.create(model=MODEL, messages=messages)
    assert raised.value.param == param and raised.value.type == "invalid_request_error"


async def test_photos_as_image_parts_are_accepted_and_other_requests_checked(client: openai.AsyncOpenAI) -> None:
    photo: Any = [{"type": "text", "text": "The light blinks red three times"},
             {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQSkZJRg==", "detail": "low"}},
             {"type": "image_url", "image_url": {"url": "https://cdn.example/p/1.jpg"}}]
    answer = await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": photo}])
    assert answer.usage is not None and answer.usage.prompt_tokens > 2 * 85  # images count
    with pytest.raises(openai.NotFoundError, match="gpt-9"):
        await client.chat.completions.create(model="gpt-9", messages=asking())
    with pytest.raises(openai.BadRequestError, match="only allowed when 'stream' is enabled"):
        await client.chat.completions.create(model=MODEL, messages=asking(), stream_options={"include_usage": True})
    with pytest.raises(openai.BadRequestError, match="Unrecognized request argument supplied: colour"):
        await client.chat.completions.create(model=MODEL, messages=asking(), extra_body={"colour": "red"})
    with pytest.raises(openai.BadRequestError, match="must contain the word 'json'"):
        await client.chat.completions.create(model=MODEL, messages=asking(), response_format={"type": "json_object"})


async def test_max_tokens_cuts_the_answer_short(client: openai.AsyncOpenAI, server: OpenAIServer) -> None:
    server.reply_with(REPLY)
    answer = await client.chat.completions.create(model=MODEL, messages=asking(), max_completion_tokens=5,
                                                  response_format=structured())
    assert answer.choices[0].finish_reason == "length" and REPLY.startswith(answer.choices[0].message.content or "-")
    assert answer.choices[0].message.content != REPLY


async def test_a_bad_key_is_401_and_no_key_is_recorded(sdk: MakeClient, server: OpenAIServer) -> None:
    with pytest.raises(openai.AuthenticationError) as raised:
        await sdk(key="sk-wrong-key-123456").chat.completions.create(model=MODEL, messages=asking())
    assert raised.value.status_code == 401 and raised.value.code == "invalid_api_key"
    assert "Incorrect API key provided: sk-" in raised.value.message and "wrong-key" not in raised.value.message
    with pytest.raises(openai.AuthenticationError):
        await sdk(key="sk-wrong-key-123456").models.list()
    await sdk().models.list()
    log = server.requests()
    assert [entry["status"] for entry in log] == [401, 401, 200]
    assert "sk-wrong-key-123456" not in json.dumps(log) and API_KEY not in json.dumps(log)
    assert all("authorization" not in entry["headers"] for entry in log)


async def test_models_are_listed_and_retrieved(client: openai.AsyncOpenAI) -> None:
    assert [model.id async for model in client.models.list()] == list(MODELS)
    assert (await client.models.retrieve(MODEL)).id == MODEL
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("gpt-9")


async def test_429_then_success_through_the_sdks_own_retries(sdk: MakeClient, server: OpenAIServer) -> None:
    server.reply_with("after the wait")
    server.fail(429, retry_after=0.1)
    with pytest.raises(openai.RateLimitError) as raised:
        await sdk().chat.completions.create(model=MODEL, messages=asking())
    assert raised.value.code == "rate_limit_exceeded" and raised.value.response.headers["retry-after"] == "0.1"

    server.fail(429, times=2, retry_after=0.1)
    answer = await sdk(retries=2).chat.completions.create(model=MODEL, messages=asking())
    assert answer.choices[0].message.content == "after the wait"  # the failures did not use the scripted reply
    log = server.requests()
    assert [(entry["status"], entry["fault"]) for entry in log] == [(429, "fail"), (429, "fail"), (429, "fail"),
                                                                     (200, None)]
    assert [entry["headers"]["x-stainless-retry-count"] for entry in log[1:]] == ["0", "1", "2"]


async def test_a_500_surfaces_as_an_internal_server_error_when_retries_are_off(client: openai.AsyncOpenAI,
                                                                               server: OpenAIServer) -> None:
    server.fail(500)
    server.fail(503, matching="washer")  # only a request that says "washer"
    with pytest.raises(openai.InternalServerError) as raised:
        await client.chat.completions.create(model=MODEL, messages=asking(), stream=True)
    assert raised.value.status_code == 500 and raised.value.type == "server_error"
    await client.chat.completions.create(model=MODEL, messages=asking("My dryer hums"))
    with pytest.raises(openai.InternalServerError) as raised:
        await client.chat.completions.create(model=MODEL, messages=asking("My washer leaks"))
    assert raised.value.status_code == 503


async def test_malformed_content_comes_back_as_is(client: openai.AsyncOpenAI, server: OpenAIServer) -> None:
    server.reply_with(REPLY)
    server.malformed("not_json")
    server.malformed("off_schema")
    texts = [content(await collect(await client.chat.completions.create(
        model=MODEL, messages=asking(), response_format=structured(), stream=True))) for _ in range(3)]
    with pytest.raises(json.JSONDecodeError):
        json.loads(texts[0])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(json.loads(texts[1]), ANSWER)
    assert texts[2] == REPLY  # the scripted answer waited for the next call


async def test_a_refusal_has_no_content(client: openai.AsyncOpenAI, server: OpenAIServer) -> None:
    server.refuse(times=2)
    answer = await client.chat.completions.create(model=MODEL, messages=asking(), response_format=structured())
    assert answer.choices[0].message.content is None and answer.choices[0].message.refusal
    chunks = await collect(await client.chat.completions.create(model=MODEL, messages=asking(), stream=True,
                                                                response_format=structured()))
    refusal = "".join(chunk.choices[0].delta.refusal or "" for chunk in chunks if chunk.choices)
    assert refusal == answer.choices[0].message.refusal and content(chunks) == ""


async def test_a_stream_stalled_midway_hits_the_sdks_timeout(sdk: MakeClient, server: OpenAIServer) -> None:
    server.reply_with(REPLY)
    server.stall(seconds=30, after_chunks=2)
    received: list[ChatCompletionChunk] = []
    with pytest.raises(openai.APITimeoutError):
        async for chunk in await sdk(timeout=0.5).chat.completions.create(model=MODEL, messages=asking(),
                                                                          stream=True):
            received.append(chunk)
    assert content(received) == REPLY[:2 * server.chunk_size]  # two deltas, then nothing
    [entry] = await settled(server, 1)
    assert (entry["fault"], entry["end"], entry["content"]) == ("stall", "client_gone", REPLY)
    again = await sdk().chat.completions.create(model=MODEL, messages=asking())
    assert again.choices[0].message.content == REPLY  # not received in full: given again


async def test_a_stall_before_the_headers_times_out_and_the_sdk_retries(sdk: MakeClient,
                                                                        server: OpenAIServer) -> None:
    server.reply_with(REPLY)
    server.stall(seconds=30)
    with pytest.raises(openai.APITimeoutError):
        await sdk(timeout=0.3).chat.completions.create(model=MODEL, messages=asking())
    server.stall(seconds=30)
    answer = await sdk(timeout=0.3, retries=1).chat.completions.create(model=MODEL, messages=asking())
    assert answer.choices[0].message.content == REPLY
    log = await settled(server, 3)
    assert [(entry["status"], entry["end"]) for entry in log] == [(None, "client_gone")] * 2 + [(200, "sent")]


async def test_a_cut_connection_is_a_connection_error(client: openai.AsyncOpenAI, server: OpenAIServer) -> None:
    server.reply_with(REPLY)
    server.cut(after_chunks=1)
    received: list[ChatCompletionChunk] = []
    with pytest.raises(openai.APIConnectionError):
        async for chunk in await client.chat.completions.create(model=MODEL, messages=asking(), stream=True):
            received.append(chunk)
    assert content(received) == REPLY[:server.chunk_size]
    server.cut()  # before any answer
    with pytest.raises(openai.APIConnectionError):
        await client.chat.completions.create(model=MODEL, messages=asking())
    server.cut(after_chunks=0)  # a whole answer: the headers and half the body
    with pytest.raises(openai.APIConnectionError):
        await client.chat.completions.create(model=MODEL, messages=asking())
    assert [(entry["fault"], entry["end"]) for entry in await settled(server, 3)] == [("cut", "cut")] * 3
    answer = await client.chat.completions.create(model=MODEL, messages=asking())
    assert answer.choices[0].message.content == REPLY


async def test_the_record_holds_what_was_sent(client: openai.AsyncOpenAI, server: OpenAIServer) -> None:
    messages: Any = [
        {"role": "system", "content": "You help consumers fix home appliances safely."},
        {"role": "user", "content": [{"type": "text", "text": "Brand Acme, SKU DR-200: the dryer does not start"},
                                     {"type": "image_url", "image_url": {"url": "https://cdn.example/p/1.jpg"}}]},
        {"role": "assistant", "content": REPLY},
        {"role": "user", "content": "done, still broken"}]
    await collect(await client.chat.completions.create(model=MODEL, messages=messages, response_format=structured(),
                                                       stream=True, temperature=0.2, user="consumer-42"))
    [entry] = server.requests()
    assert (entry["method"], entry["path"], entry["body"]["messages"]) == ("POST", "/v1/chat/completions", messages)
    assert entry["body"]["response_format"]["json_schema"]["schema"] == ANSWER
    assert (entry["body"]["temperature"], entry["body"]["user"], entry["body"]["stream"]) == (0.2, "consumer-42", True)
    assert entry["headers"]["user-agent"].startswith("AsyncOpenAI/Python")
    assert server.prompts() == [messages[0]["content"], messages[1]["content"][0]["text"], REPLY, "done, still broken"]
    assert not any(EMAIL.search(text) for text in server.prompts())


async def test_a_server_of_its_own_has_its_own_key_models_and_pace(sdk: MakeClient) -> None:
    with OpenAIServer(api_key="sk-other", models=("local-llama",), chunk_size=3, chunk_delay=0) as other:
        there = sdk(key="sk-other", server=other)
        other.reply_with("abcdefgh")
        chunks = await collect(await there.chat.completions.create(model="local-llama", messages=asking(),
                                                                   stream=True))
        assert [chunk.choices[0].delta.content for chunk in chunks[1:-1]] == ["abc", "def", "gh"]
        with pytest.raises(openai.NotFoundError):
            await there.chat.completions.create(model=MODEL, messages=asking())
        assert len(other.requests()) == 2


async def test_run_by_hand() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.openai_server", "--port", "0", "--reply", "by hand", cwd=ROOT,
        stdout=asyncio.subprocess.PIPE)
    try:
        assert process.stdout is not None
        ready = (await asyncio.wait_for(process.stdout.readline(), 10)).decode()
        assert ready.startswith("listening on http://")
        async with openai.AsyncOpenAI(base_url=ready.split()[-1] + "/v1", api_key=API_KEY, max_retries=0) as by_hand:
            answer = await by_hand.chat.completions.create(model=MODEL, messages=asking())
        assert answer.choices[0].message.content == "by hand"
    finally:
        process.terminate()
        await process.wait()
