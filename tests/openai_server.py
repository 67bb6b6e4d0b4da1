"""An OpenAI chat-completions API on localhost for the tests, so the real `openai` SDK runs unchanged against it
(`base_url`): answers scripted by the test, or a minimal instance of the requested JSON schema; streamed or not;
with fault injection (429/5xx, malformed output, refusals, stalls, cut connections) and a record of every request.

    python -m tests.openai_server --port 8421     # or OpenAIServer() / the `openai_server` fixture below
"""

import argparse
import asyncio
import collections
import copy
import json
import math
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
from aiohttp import web
from aiohttp.typedefs import Handler

from tests.doubles import serve

API_KEY = "sk-local-test"
MODELS = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "gpt-4.1-nano", "gpt-5-mini")
DEFAULT_TEXT = "This is the local OpenAI test server: no reply was scripted for this request."
NOT_JSON = 'Sure! Here is what I found: {"diagnosis": "The filter is'  # prose, then JSON cut short
REFUSAL = "I'm sorry, I can't help with that."
SECRET_HEADERS = {"authorization", "api-key", "openai-api-key"}
ROOT = Path(__file__).resolve().parent.parent

Content = str | Callable[[dict[str, Any]], str]  # a reply, or a function of the request's JSON body giving one


# --- Errors, in OpenAI's shape: {"error": {"message", "type", "param", "code"}}. ---

class ApiError(Exception):
    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def response(self) -> web.Response:
        body = {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        return web.json_response(body, status=self.status, headers=self.headers)


def invalid(message: str, param: str | None = None, code: str | None = None, status: int = 400) -> ApiError:
    return ApiError(status, message, param=param, code=code)


def injected(status: int, model: str, retry_after: float | None) -> ApiError:
    """The error a fault rule answers with, worded as OpenAI words it."""
    headers = {"retry-after": f"{retry_after:g}"} if retry_after is not None else {}
    if status == 429:
        wait = f"{retry_after:g}s" if retry_after is not None else "a moment"
        return ApiError(429, f"Rate limit reached for {model} in organization org-local on requests per min (RPM): "
                             f"Limit 3, Used 3, Requested 1. Please try again in {wait}.", "requests",
                        code="rate_limit_exceeded", headers=headers)
    if status == 503:
        return ApiError(503, "The server is overloaded or not ready yet.", "server_error", headers=headers)
    return ApiError(status, "The server had an error while processing your request. Sorry about that! "
                            "(injected by the local test server)", "server_error", headers=headers)


def kind_of(value: Any) -> str:
    """How OpenAI's validation messages name a JSON value's type."""
    if value is None:
        return "null"
    for types, name in ((bool, "a boolean"), (int, "an integer"), (float, "a decimal"), (str, "a string"),
                        (list, "an array"), (dict, "an object")):
        if isinstance(value, types):
            return name
    return "an unknown value"


# --- What a chat completion request may say. ---

ROLES = ("system", "developer", "user", "assistant")
ACCEPTED = {"model", "messages", "stream", "stream_options", "response_format", "temperature", "top_p", "max_tokens",
            "max_completion_tokens", "n", "stop", "presence_penalty", "frequency_penalty", "seed", "user", "metadata",
            "store", "service_tier", "reasoning_effort", "safety_identifier", "prompt_cache_key", "logit_bias",
            "verbosity"}
NOT_HERE = {"tools", "tool_choice", "parallel_tool_calls", "functions", "function_call", "logprobs", "top_logprobs",
            "audio", "modalities", "prediction", "web_search_options"}  # real parameters this server does not do
IMAGE_URL = re.compile(r"^(https?://\S+|data:image/[a-z0-9.+-]+;base64,[A-Za-z0-9+/=]+)$")
SCHEMA_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


@dataclass
class Asked:
    """A checked request: what the answer depends on."""
    body: dict[str, Any]
    model: str
    stream: bool
    include_usage: bool
    schema: dict[str, Any] | None  # the json_schema response format's schema
    json_mode: bool  # response_format json_object
    limit: int | None  # max_completion_tokens or max_tokens
    prompt_tokens: int


def tokens(text: str) -> int:
    """An estimate, about four characters a token: enough for usage to be non-zero and to grow with the text."""
    return (len(text) + 3) // 4


def texts(message: dict[str, Any]) -> Iterator[str]:
    content = message.get("content")
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        yield from (part["text"] for part in content if isinstance(part, dict) and part.get("type") == "text")


def check_message(message: Any, where: str) -> int:
    """Raises ApiError unless `message` is one chat completions accepts; returns its image count."""
    if not isinstance(message, dict):
        raise invalid(f"Invalid type for '{where}': expected an object, but got {kind_of(message)} instead.", where,
                      "invalid_type")
    role = message.get("role")
    if role is None:
        raise invalid(f"Missing required parameter: '{where}.role'.", f"{where}.role", "missing_required_parameter")
    if role in ("tool", "function"):
        raise invalid(f"Messages with role '{role}' are not supported by the local OpenAI test server.",
                      f"{where}.role")
    if role not in ROLES:
        raise invalid(f"Invalid value: '{role}'. Supported values are: 'system', 'assistant', 'user', 'function', "
                      "'tool', and 'developer'.", f"{where}.role", "invalid_value")
    for key in message:
        if key not in ("role", "content", "name"):
            raise invalid(f"Unrecognized request argument supplied: {where}.{key}", f"{where}.{key}")
    if "content" not in message:
        raise invalid(f"Missing required parameter: '{where}.content'.", f"{where}.content",
                      "missing_required_parameter")
    content = message["content"]
    if isinstance(content, str):
        return 0
    if not isinstance(content, list):
        raise invalid(f"Invalid type for '{where}.content': expected one of a string or array of objects, but got "
                      f"{kind_of(content)} instead.", f"{where}.content", "invalid_type")
    if not content:
        raise invalid(f"Invalid '{where}.content': empty array. Expected an array with minimum length 1, but got an "
                      "empty array instead.", f"{where}.content", "empty_array")
    images = 0
    for j, part in enumerate(content):
        at = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise invalid(f"Missing required parameter: '{at}.text'.", f"{at}.text", "missing_required_parameter")
        elif kind == "image_url":
            if role != "user":
                raise invalid(f"Invalid '{where}'. Image URLs are only allowed for messages with role 'user', but "
                              f"this message with role '{role}' contains an image URL.", where, "invalid_value")
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else None
            if not isinstance(url, str) or not IMAGE_URL.match(url):
                raise invalid(f"Invalid '{at}.image_url.url': expected an http(s) URL or a base64-encoded data URL "
                              "with an image MIME type (e.g. 'data:image/png;base64,...').", f"{at}.image_url.url",
                              "invalid_value")
            assert isinstance(image, dict)
            if image.get("detail", "auto") not in ("auto", "low", "high"):
                raise invalid(f"Invalid value: '{image['detail']}'. Supported values are: 'auto', 'low', and 'high'.",
                              f"{at}.image_url.detail", "invalid_value")
            images += 1
        else:
            raise invalid(f"Invalid value: '{kind}'. Supported values are: 'text' and 'image_url'.", f"{at}.type",
                          "invalid_value")
    return images


def check_format(response_format: Any) -> tuple[dict[str, Any] | None, bool]:
    """(the json_schema's schema or None, json_object mode?) of a `response_format`."""
    if response_format is None:
        return None, False
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "text":
        return None, False
    if kind == "json_object":
        return None, True
    if kind != "json_schema":
        raise invalid(f"Invalid value: '{kind}'. Supported values are: 'text', 'json_object', and 'json_schema'.",
                      "response_format.type", "invalid_value")
    spec = response_format.get("json_schema")
    if not isinstance(spec, dict):
        raise invalid("Missing required parameter: 'response_format.json_schema'.", "response_format.json_schema",
                      "missing_required_parameter")
    name = spec.get("name")
    if not isinstance(name, str) or not SCHEMA_NAME.match(name):
        raise invalid("Invalid 'response_format.json_schema.name': string does not match pattern. Expected a string "
                      "that matches the pattern '^[a-zA-Z0-9_-]+$' of at most 64 characters.",
                      "response_format.json_schema.name", "invalid_value")
    schema = spec.get("schema", {})
    if not isinstance(schema, dict):
        raise invalid(f"Invalid type for 'response_format.json_schema.schema': expected an object, but got "
                      f"{kind_of(schema)} instead.", "response_format.json_schema.schema", "invalid_type")
    if spec.get("strict") is True:
        check_strict(schema, name)
    return schema, False


def check_request(body: Any, models: tuple[str, ...]) -> Asked:
    if not isinstance(body, dict):
        raise invalid(f"Invalid type for the request body: expected an object, but got {kind_of(body)} instead.")
    for key in body:
        if key in NOT_HERE:
            raise invalid(f"'{key}' is not supported by the local OpenAI test server.", key)
        if key not in ACCEPTED:
            raise invalid(f"Unrecognized request argument supplied: {key}", key)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("you must provide a model parameter")
    if model not in models:
        raise invalid(f"The model `{model}` does not exist or you do not have access to it.", None,
                      "model_not_found", status=404)
    messages = body.get("messages")
    if messages is None:
        raise invalid("Missing required parameter: 'messages'.", "messages", "missing_required_parameter")
    if not isinstance(messages, list):
        raise invalid(f"Invalid type for 'messages': expected an array, but got {kind_of(messages)} instead.",
                      "messages", "invalid_type")
    if not messages:
        raise invalid("Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty "
                      "array instead.", "messages", "empty_array")
    images = sum(check_message(message, f"messages[{i}]") for i, message in enumerate(messages))
    stream = body.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise invalid(f"Invalid type for 'stream': expected a boolean, but got {kind_of(stream)} instead.", "stream",
                      "invalid_type")
    options = body.get("stream_options")
    if options is not None and not stream:
        raise invalid("The 'stream_options' parameter is only allowed when 'stream' is enabled.", "stream_options")
    if options is not None and not isinstance(options, dict):
        raise invalid(f"Invalid type for 'stream_options': expected an object, but got {kind_of(options)} instead.",
                      "stream_options", "invalid_type")
    if body.get("n", 1) not in (1, None):
        raise invalid("'n' other than 1 is not supported by the local OpenAI test server.", "n")
    named = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    limit = body.get(named)
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise invalid(f"Invalid '{named}': expected a positive integer, but got {limit!r}.", named, "invalid_value")
    schema, json_mode = check_format(body.get("response_format"))
    said = [text for message in messages for text in texts(message)]
    if json_mode and not any("json" in text.lower() for text in said):
        raise invalid("'messages' must contain the word 'json' in some form, to use 'response_format' of type "
                      "'json_object'.", "messages")
    prompt = sum(4 + tokens(text) for text in said) + 85 * images + 3 + (tokens(json.dumps(schema)) if schema else 0)
    return Asked(body, model, bool(stream), bool((options or {}).get("include_usage")), schema, json_mode, limit,
                 prompt)


# --- Strict structured output: the rules OpenAI enforces on the schema, and a minimal instance of it. ---

UNSUPPORTED_KEYWORDS = ("allOf", "oneOf", "not", "if", "then", "else", "dependentRequired", "dependentSchemas",
                        "patternProperties")


class SchemaError(Exception):
    pass


def resolve(ref: str, root: dict[str, Any]) -> dict[str, Any]:
    node: Any = root
    if ref == "#":
        return root
    if not ref.startswith("#/"):
        raise SchemaError(f"only local references ('#/...') are supported, got {ref!r}")
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            raise SchemaError(f"reference {ref!r} cannot be resolved")
        node = node[part]
    if not isinstance(node, dict):
        raise SchemaError(f"reference {ref!r} does not name a schema")
    return node


def types_of(node: dict[str, Any]) -> list[str]:
    kind = node.get("type")
    return [kind] if isinstance(kind, str) else list(kind) if isinstance(kind, list) else []


def check_strict(schema: dict[str, Any], name: str) -> None:
    """Refuse, as OpenAI does with `strict: true`, a root that is not an object, an object that allows other
    properties or leaves one out of `required`, a `$ref` with sibling keywords, and composition keywords other
    than anyOf. Which string/number/array keywords (pattern, minLength...) a model supports is not checked."""

    def refuse(context: tuple[str | int, ...], reason: str) -> ApiError:
        return invalid(f"Invalid schema for response_format '{name}': In context={context!r}, {reason}",
                       "response_format", "invalid_json_schema")

    def walk(node: Any, context: tuple[str | int, ...]) -> None:
        if not isinstance(node, dict):
            raise refuse(context, f"schema must be an object, got {kind_of(node)}.")
        if "$ref" in node:
            others = sorted(set(node) - {"$ref"})
            if others:
                raise refuse(context, f"'$ref' cannot be combined with other keywords ({', '.join(others)}).")
            try:
                resolve(node["$ref"], schema)
            except SchemaError as exc:
                raise refuse(context, f"{exc}.") from None
            return
        for keyword in UNSUPPORTED_KEYWORDS:
            if keyword in node:
                raise refuse(context, f"'{keyword}' is not permitted.")
        if "object" in types_of(node):
            properties = node.get("properties", {})
            if node.get("additionalProperties") is not False:
                raise refuse(context, "'additionalProperties' is required to be supplied and to be false.")
            required = node.get("required", [])
            missing = [key for key in properties if key not in required]
            if missing:
                raise refuse(context, "'required' is required to be supplied and to be an array including every key "
                                      f"in properties. Missing '{missing[0]}'.")
            extra = [key for key in required if key not in properties]
            if extra:
                raise refuse(context, f"Extra required key '{extra[0]}' supplied.")
            for key, child in properties.items():
                walk(child, (*context, "properties", key))
        if "items" in node:
            walk(node["items"], (*context, "items"))
        for i, option in enumerate(node.get("anyOf", [])):
            walk(option, (*context, "anyOf", i))
        for group in ("$defs", "definitions"):
            for key, child in node.get(group, {}).items():
                walk(child, (*context, group, key))

    if schema.get("type") != "object" or "anyOf" in schema:
        raise invalid(f"Invalid schema for response_format '{name}': schema must be a JSON Schema of 'type: "
                      f"\"object\"', got 'type: \"{schema.get('type')}\"'.", "response_format", "invalid_json_schema")
    walk(schema, ())


FORMATS = {"date-time": "2026-01-01T00:00:00Z", "date": "2026-01-01", "time": "00:00:00Z", "duration": "P1D",
           "email": "nobody@example.invalid", "hostname": "example.invalid", "ipv4": "192.0.2.1", "ipv6": "2001:db8::1",
           "uuid": "00000000-0000-4000-8000-000000000000", "uri": "https://example.invalid/"}


def instance(schema: dict[str, Any], root: dict[str, Any] | None = None, name: str = "text", depth: int = 0) -> Any:
    """A small valid instance of `schema`: every required property, the first enum value, one array item, null
    where null is allowed, strings that name their property. Enough for the schemas a program sends; not a solver
    (a `pattern` no simple string matches gets the property's name anyway)."""
    root = schema if root is None else root
    if depth > 32:
        raise SchemaError("the schema nests too deep for an instance (a required recursion?)")
    if "$ref" in schema:
        return instance(resolve(schema["$ref"], root), root, name, depth + 1)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    options = schema.get("anyOf") or schema.get("oneOf")
    if options:
        if any(option.get("type") == "null" for option in options):
            return None
        return instance(options[0], root, name, depth + 1)
    kinds = types_of(schema) or (["object"] if "properties" in schema else ["array"] if "items" in schema else [])
    if not kinds or "null" in kinds:
        return None
    kind = kinds[0]
    if kind == "object":
        required = schema.get("required", [])
        return {key: instance(child, root, key, depth + 1) for key, child in schema.get("properties", {}).items()
                if key in required}
    if kind == "array":
        count = max(1, schema.get("minItems", 1))
        if schema.get("maxItems") is not None:
            count = min(count, schema["maxItems"])
        return [instance(schema.get("items", {}), root, name, depth + 1) for _ in range(count)]
    if kind == "string":
        return text_for(schema, name)
    if kind in ("integer", "number"):
        return number_for(schema, kind == "integer")
    if kind == "boolean":
        return False
    raise SchemaError(f"unknown type {kind!r}")


def text_for(schema: dict[str, Any], name: str) -> str:
    if schema.get("format") in FORMATS:
        return FORMATS[schema["format"]]
    text = name.ljust(schema.get("minLength", 0), "x")
    if schema.get("maxLength") is not None:
        text = text[:schema["maxLength"]]
    pattern = schema.get("pattern")
    if pattern is not None:
        return next((candidate for candidate in (text, "", "x", "a", "A", "0", "a1", "A1")
                     if re.search(pattern, candidate)), text)
    return text


def number_for(schema: dict[str, Any], integer: bool) -> int | float:
    low, x_low = schema.get("minimum"), schema.get("exclusiveMinimum")
    high, x_high = schema.get("maximum"), schema.get("exclusiveMaximum")
    lows, highs = [b for b in (low, x_low) if b is not None], [b for b in (high, x_high) if b is not None]
    floor, ceiling = (max(lows) if lows else None), (min(highs) if highs else None)
    if floor is not None and ceiling is not None:
        value: float = floor if floor == low and floor != x_low else (floor + ceiling) / 2
    elif floor is not None:
        value = floor + 1 if floor == x_low else floor
    elif ceiling is not None:
        value = min(0, ceiling - 1 if ceiling == x_high else ceiling)
    else:
        value = 0
    step = schema.get("multipleOf")
    if step:
        value = math.ceil(value / step) * step
    if integer:
        return math.ceil(value) if floor is not None else math.floor(value)
    return value


def off_schema(schema: dict[str, Any] | None) -> str:
    """Valid JSON that does not fit `schema`: its instance less its first required property, plus one it forbids."""
    document = instance(schema) if schema is not None else {}
    if isinstance(document, dict):
        document.pop(next(iter(document), ""), None)
        document["unexpected"] = True
        return json.dumps(document)
    return json.dumps({"unexpected": True})


# --- The script a test writes, and the record of what came in. Shared by the server's loop and the test thread. ---

@dataclass
class Rule:
    kind: Literal["fail", "stall", "cut", "error_event", "malformed", "refuse"]
    times: int = 1
    status: int = 500
    retry_after: float | None = None
    seconds: float = 0.0
    after_chunks: int | None = None  # None: before the response's headers; n: after n content deltas
    malformed: Literal["not_json", "off_schema"] = "not_json"
    matching: str | None = None  # only requests where some message's text contains this


class Script:
    """What the server answers next, and what it was sent; the methods tests call. Thread-safe."""

    def __init__(self, api_key: str = API_KEY, models: tuple[str, ...] = MODELS, chunk_size: int = 16,
                 chunk_delay: float = 0.005) -> None:
        self.api_key, self.models = api_key, models
        self.chunk_size, self.chunk_delay = chunk_size, chunk_delay
        self.closing = threading.Event()  # set when the server stops: stalled answers end
        self._lock = threading.Lock()
        self._replies: collections.deque[Content] = collections.deque()
        self._default: Content | None = None
        self._rules: list[Rule] = []
        self._log: list[dict[str, Any]] = []

    def reply_with(self, content: Content, times: int | None = 1) -> None:
        """The next `times` answers (after those already queued) are `content`: a string, or a function of the
        request's JSON body returning one. `times=None`: the answer from now on whenever the queue is empty.
        An answer the client did not receive in full (a cut or stalled stream it gave up on) is given again."""
        with self._lock:
            if times is None:
                self._default = content
            else:
                self._replies.extend([content] * times)

    def fail(self, status: int = 500, times: int = 1, retry_after: float | None = None,
             matching: str | None = None) -> None:
        """The next `times` chat requests answer `status` (429, 500, 503...) in OpenAI's error shape, with a
        `retry-after` header when given."""
        self._add(Rule("fail", times, status=status, retry_after=retry_after, matching=matching))

    def stall(self, seconds: float = 60.0, after_chunks: int | None = None, times: int = 1,
              matching: str | None = None) -> None:
        """The next `times` chat requests wait `seconds` (or until the client hangs up): before the headers, or
        (`after_chunks=n`) after n content deltas of a stream (after the headers of a whole answer); then finish."""
        self._add(Rule("stall", times, seconds=seconds, after_chunks=after_chunks, matching=matching))

    def cut(self, after_chunks: int | None = None, times: int = 1, matching: str | None = None) -> None:
        """The next `times` chat requests lose their connection: before any answer, or (`after_chunks=n`) after n
        content deltas of a stream (half the body of a whole answer)."""
        self._add(Rule("cut", times, after_chunks=after_chunks, matching=matching))

    def error_event(self, after_chunks: int = 0, times: int = 1, matching: str | None = None) -> None:
        """The next `times` streamed chat requests send an error event (`data: {"error": ...}`, as OpenAI does when
        a stream fails on its side) after n content deltas, and end there."""
        self._add(Rule("error_event", times, after_chunks=after_chunks, matching=matching))

    def malformed(self, kind: Literal["not_json", "off_schema"] = "not_json", times: int = 1,
                  matching: str | None = None) -> None:
        """The next `times` answers' content is prose with cut-short JSON, or JSON that breaks the request's schema
        (a required property missing, an unexpected one added). Queued replies wait for the answer after."""
        self._add(Rule("malformed", times, malformed=kind, matching=matching))

    def refuse(self, times: int = 1, matching: str | None = None) -> None:
        """The next `times` answers are refusals: `message.refusal` set, `content` null, as structured output does."""
        self._add(Rule("refuse", times, matching=matching))

    def requests(self) -> list[dict[str, Any]]:
        """Every request in arrival order: id, method, path, headers (lowercase, without the API key), body (the
        parsed JSON), status (None: nothing was sent), fault (the rule's kind), content (the answer meant) and end
        ("sent", "client_gone", "cut", "error_event"; None while it is being answered)."""
        with self._lock:
            return copy.deepcopy(self._log)

    def prompts(self) -> list[str]:
        """Every text of every message in every chat request received: what to search for personal data."""
        return [text for entry in self.requests() if isinstance(entry["body"], dict)
                for message in entry["body"].get("messages") or [] if isinstance(message, dict)
                for text in texts(message)]

    def reset(self) -> None:
        """Forget queued replies, the default reply, fault rules and the record."""
        with self._lock:
            self._replies.clear()
            self._default = None
            self._rules.clear()
            self._log.clear()

    # The server's side.

    def _add(self, rule: Rule) -> None:
        with self._lock:
            self._rules.append(rule)

    def _record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self._log.append(entry)

    def _update(self, entry: dict[str, Any], **changes: Any) -> None:
        with self._lock:
            entry.update(changes)

    def _take_rule(self, asked: Asked) -> Rule | None:
        said = "\n".join(text for message in asked.body["messages"] for text in texts(message))
        with self._lock:
            for rule in self._rules:
                if rule.times > 0 and (rule.matching is None or rule.matching in said):
                    rule.times -= 1
                    return rule
        return None

    def _take_reply(self) -> tuple[Content | None, bool]:
        """(the scripted content or None, whether it came off the queue)."""
        with self._lock:
            if self._replies:
                return self._replies.popleft(), True
            return self._default, False

    def _give_back(self, content: Content) -> None:
        with self._lock:
            self._replies.appendleft(content)


# --- The HTTP side. ---

SCRIPT = web.AppKey("script", Script)
ENTRY = web.RequestKey("entry", dict)


def gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def hold(request: web.Request, seconds: float, script: Script) -> bool:
    """Wait `seconds`, or until the client hangs up or the server stops; whether the client is still there."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0 and not script.closing.is_set() and not gone(request):
        await asyncio.sleep(min(0.02, left))
    return not gone(request)


def drop(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.close()


@web.middleware
async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
    script = request.app[SCRIPT]
    entry: dict[str, Any] = {
        "id": f"req_{uuid.uuid4().hex[:24]}", "method": request.method, "path": request.path,
        "headers": {name.lower(): value for name, value in request.headers.items()
                    if name.lower() not in SECRET_HEADERS},
        "body": None, "status": None, "fault": None, "content": None, "end": None}
    script._record(entry)
    request[ENTRY] = entry
    try:
        response = await handler(request)
    except ApiError as exc:
        response = exc.response()
    except web.HTTPException as exc:  # no such route or method
        if exc.status not in (404, 405):
            raise
        response = invalid(f"Invalid URL ({request.method} {request.path})", status=exc.status).response()
    if not response.prepared:
        response.headers.setdefault("x-request-id", entry["id"])
    if entry["end"] is None:  # answered in one piece, by aiohttp after this returns
        script._update(entry, status=response.status, end="sent")
    return response


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer ") or not header[7:].strip():
        raise ApiError(401, "You didn't provide an API key. You need to provide your API key in an Authorization "
                            "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")
    key = header[7:].strip()
    if key != request.app[SCRIPT].api_key:
        shown = f"{key[:3]}{'*' * max(0, len(key) - 7)}{key[-4:]}" if len(key) > 8 else "***"
        raise ApiError(401, f"Incorrect API key provided: {shown}. You can find your API key at "
                            "https://platform.openai.com/account/api-keys.", code="invalid_api_key")
    return await handler(request)


def model_object(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 1700000000, "owned_by": "system"}


async def list_models(request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [model_object(name) for name in request.app[SCRIPT].models]})


async def get_model(request: web.Request) -> web.Response:
    name = request.match_info["model"]
    if name not in request.app[SCRIPT].models:
        raise invalid(f"The model '{name}' does not exist", "model", "model_not_found", status=404)
    return web.json_response(model_object(name))


@dataclass
class Answer:
    """What one chat request gets back, decided before the first byte."""
    id: str
    asked: Asked
    content: str | None
    refusal: str | None
    finish_reason: str
    rule: Rule | None
    scripted: Content | None  # to give back to the queue if the client does not get it all

    def usage(self) -> dict[str, Any]:
        completion = tokens(self.content or self.refusal or "")
        return {"prompt_tokens": self.asked.prompt_tokens, "completion_tokens": completion,
                "total_tokens": self.asked.prompt_tokens + completion,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                              "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}

    def head(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": int(time.time()), "model": self.asked.model,
                "service_tier": "default", "system_fingerprint": "fp_local"}

    def whole(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.content, "refusal": self.refusal,
                                   "annotations": []}
        return {**self.head("chat.completion"), "usage": self.usage(),
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": self.finish_reason}]}

    def chunks(self, size: int) -> Iterator[tuple[bool, dict[str, Any]]]:
        """(is a content delta, chunk) in stream order, the role first and usage (when asked for) last."""
        usage: dict[str, Any] = {"usage": None} if self.asked.include_usage else {}

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {**self.head("chat.completion.chunk"), **usage,
                    "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

        field, text = ("refusal", self.refusal) if self.refusal is not None else ("content", self.content or "")
        yield False, chunk({"role": "assistant", "content": None if field == "refusal" else "", "refusal": None})
        for start in range(0, len(text), max(1, size)):
            yield True, chunk({field: text[start:start + size]})
        yield False, chunk({}, self.finish_reason)
        if self.asked.include_usage:
            yield False, {**self.head("chat.completion.chunk"), "choices": [], "usage": self.usage()}


def compose(asked: Asked, rule: Rule | None, script: Script) -> Answer:
    scripted, queued, refusal = None, False, None
    if rule is not None and rule.kind == "malformed":
        content: str | None = NOT_JSON if rule.malformed == "not_json" else off_schema(asked.schema)
    elif rule is not None and rule.kind == "refuse":
        content, refusal = None, REFUSAL
    else:
        scripted, queued = script._take_reply()
        if scripted is not None:
            try:
                content = scripted(asked.body) if callable(scripted) else scripted
            except Exception as exc:
                raise ApiError(500, f"The test's reply function failed: {exc!r}", "server_error") from exc
        elif asked.schema is not None:
            content = json.dumps(instance(asked.schema))
        else:
            content = "{}" if asked.json_mode else DEFAULT_TEXT
    finish = "stop"
    if content is not None and asked.limit is not None and tokens(content) > asked.limit:
        content, finish = content[:asked.limit * 4], "length"
    return Answer(f"chatcmpl-{uuid.uuid4().hex[:24]}", asked, content, refusal, finish, rule,
                  scripted if queued else None)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    script, entry = request.app[SCRIPT], request[ENTRY]
    try:
        body = await request.json()
    except ValueError:
        raise invalid("We could not parse the JSON body of your request. (HINT: This likely means you aren't using "
                      "your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not "
                      "valid JSON.)") from None
    script._update(entry, body=body)
    asked = check_request(body, script.models)
    rule = script._take_rule(asked)
    script._update(entry, fault=rule.kind if rule else None)
    if rule is not None and rule.kind == "fail":
        raise injected(rule.status, asked.model, rule.retry_after)
    if rule is not None and rule.after_chunks is None and rule.kind in ("stall", "cut"):
        if rule.kind == "cut" or not await hold(request, rule.seconds, script):
            drop(request)
            script._update(entry, end="cut" if rule.kind == "cut" else "client_gone")
            return web.Response()  # never reaches anyone
    try:
        answer = compose(asked, rule, script)
    except SchemaError as exc:
        raise invalid(f"The local OpenAI test server cannot make an instance of this schema: {exc}",
                      "response_format") from None
    script._update(entry, content=answer.content if answer.refusal is None else answer.refusal)
    response = await (stream(request, answer, script) if asked.stream else whole(request, answer, script))
    if entry["end"] in ("cut", "client_gone", "error_event") and answer.scripted is not None:
        script._give_back(answer.scripted)
    return response


async def whole(request: web.Request, answer: Answer, script: Script) -> web.StreamResponse:
    data = json.dumps(answer.whole()).encode()
    rule, entry = answer.rule, request[ENTRY]
    if rule is None or rule.after_chunks is None or rule.kind not in ("stall", "cut"):
        return web.Response(body=data, content_type="application/json")
    response = web.StreamResponse(headers={"Content-Type": "application/json", "Content-Length": str(len(data)),
                                           "x-request-id": entry["id"]})
    await response.prepare(request)
    script._update(entry, status=response.status)
    try:
        if rule.kind == "cut":
            await response.write(data[:len(data) // 2])
            drop(request)
            script._update(entry, end="cut")
            return response
        if not await hold(request, rule.seconds, script):
            script._update(entry, end="client_gone")
            return response
        await response.write(data)
        await response.write_eof()
    except ConnectionResetError:
        script._update(entry, end="client_gone")
        return response
    script._update(entry, end="sent")
    return response


async def stream(request: web.Request, answer: Answer, script: Script) -> web.StreamResponse:
    """Server-sent events: `data: {chunk}` lines, a pause between content deltas, then `data: [DONE]`."""
    rule, entry = answer.rule, request[ENTRY]
    at = rule.after_chunks if rule is not None and rule.kind in ("stall", "cut", "error_event") else None
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                           "Cache-Control": "no-cache", "x-request-id": entry["id"]})
    await response.prepare(request)
    script._update(entry, status=response.status)
    deltas = 0
    try:
        for is_delta, chunk in answer.chunks(script.chunk_size):
            if at is not None and deltas == at and (is_delta or chunk["choices"]):  # before the next delta/finish
                assert rule is not None
                at = None
                if rule.kind == "error_event":
                    error = {"message": "The server had an error while processing your request.",
                             "type": "server_error", "param": None, "code": None}
                    await response.write(f"data: {json.dumps({'error': error})}\n\n".encode())
                    await response.write_eof()
                    script._update(entry, end="error_event")
                    return response
                if rule.kind == "cut":
                    drop(request)
                    script._update(entry, end="cut")
                    return response
                if not await hold(request, rule.seconds, script):
                    script._update(entry, end="client_gone")
                    return response
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
            if is_delta:
                deltas += 1
                await asyncio.sleep(script.chunk_delay)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
    except ConnectionResetError:
        script._update(entry, end="client_gone")
        return response
    script._update(entry, end="sent")
    return response


def build_app(script: Script) -> web.Application:
    app = web.Application(middlewares=[record, authenticate])
    app[SCRIPT] = script
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model}", get_model)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8421, help="0: any free port (the ready line says which)")
    parser.add_argument("--key", default=API_KEY, help="the API key clients must send")
    parser.add_argument("--model", action="append", help=f"a model it serves, repeatable (default: {' '.join(MODELS)})")
    parser.add_argument("--chunk-size", type=int, default=16, help="characters per streamed delta")
    parser.add_argument("--chunk-delay", type=float, default=0.005, help="seconds between streamed deltas")
    parser.add_argument("--reply", help="the answer to every request (default: an instance of the schema asked for)")
    args = parser.parse_args()
    script = Script(args.key, tuple(args.model or MODELS), args.chunk_size, args.chunk_delay)
    if args.reply is not None:
        script.reply_with(args.reply, times=None)
    asyncio.run(serve(build_app(script), args.host, args.port))


# --- The test side: the server on its own event loop in a thread of the test process, so a test's reply
# functions run in-process and a stalled answer never blocks the test's loop. ---

class OpenAIServer(Script):
    """`with OpenAIServer() as server:` on a free port; `server.url + "/v1"` is the SDK's base_url."""

    def __init__(self, api_key: str = API_KEY, models: tuple[str, ...] = MODELS, chunk_size: int = 16,
                 chunk_delay: float = 0.005, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(api_key, models, chunk_size, chunk_delay)
        self.host, self.port, self.url = host, port, ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None
        self._failure: Exception | None = None

    def __enter__(self) -> "OpenAIServer":
        started = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(started),), name="openai-server",
                                        daemon=True)
        self._thread.start()
        if not started.wait(10) or not self.url:
            self.__exit__()
            raise RuntimeError(f"the OpenAI test server did not start: {self._failure!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.closing.set()  # stalled answers end
        if self._loop is not None and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
        if self._thread is not None:
            self._thread.join(timeout=10)

    async def _serve(self, started: threading.Event) -> None:
        self._loop, self._stopped = asyncio.get_running_loop(), asyncio.Event()
        runner = web.AppRunner(build_app(self), access_log=None, shutdown_timeout=2)
        try:
            await runner.setup()
            await web.TCPSite(runner, self.host, self.port).start()
            self.url = f"http://{self.host}:{runner.addresses[0][1]}"
        except Exception as exc:
            self._failure = exc
        finally:
            started.set()
        try:
            await self._stopped.wait()
        finally:
            await runner.cleanup()


@pytest.fixture(scope="session")
def openai_server() -> Iterator[OpenAIServer]:
    with OpenAIServer() as server:
        yield server


if __name__ == "__main__":
    main()
