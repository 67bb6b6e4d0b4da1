"""The OpenAI engine: any OpenAI-compatible chat-completions server (OpenAI, llama.cpp, vLLM, Ollama's /v1)
answers in strict structured output, streamed; on a provider's fault, after retries, the fallback answers."""

import asyncio
import base64
import logging
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx2
import msgspec
import openai

from handlers.ai import metrics
from handlers.ai.engine import Dialogue, Engine, Guide, Result, Stream, Usage, flat
from handlers.ai.partial_json import PartialJSON
from handlers.ai.schema import drop_added_nulls, strict_schema
from handlers.ai.settings import AiRules
from protocol.ai import AiAnswer

log = logging.getLogger(__name__)

SCHEMA_NAME = "troubleshooting_answer"
SCHEMA = strict_schema(AiAnswer)
RESPONSE_FORMAT: Any = {"type": "json_schema", "json_schema": {"name": SCHEMA_NAME, "strict": True,
                                                                "schema": SCHEMA}}
LANGUAGES = {"en": "English", "es": "Spanish (español)", "zh-Hans": "Simplified Chinese (简体中文)"}
BACKOFF_CAP_S = 8.0


class _Delta(msgspec.Struct):
    content: str | None = None
    refusal: str | None = None


class _Choice(msgspec.Struct):
    delta: _Delta | None = None


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _Chunk(msgspec.Struct):
    """The part of a `chat.completion.chunk` the engine reads (an `error` member: the stream failed)."""

    choices: list[_Choice] = []
    usage: _Usage | None = None
    error: Any = None


CHUNK = msgspec.json.Decoder(_Chunk)


class StreamError(Exception):
    """The server sent an error event in the stream, or a line that is not a chunk."""

ROLE = ("You are the troubleshooting assistant of a home-appliance repair service. You help a consumer try safe, "
        "simple checks on their appliance before a technician is sent, and when those do not fix it you write the "
        "order draft a technician will read.")
SAFETY = ("Safety rules, above everything else:\n"
          "- Only suggest what a non-professional can do safely: resetting, cleaning a filter, checking a breaker, "
          "a plug, a door latch, a setting, a hose for kinks, reading an error code.\n"
          "- Never suggest work on mains wiring or the inside of an electrical panel, gas lines or gas valves, "
          "sealed refrigerant circuits, the inside of a microwave oven's case (its capacitor stays charged), "
          "heating elements or burners under power, or anything that needs the appliance opened while plugged in. "
          "Such a step is written as 'a technician must do this' with technician_only true.\n"
          "- On any sign of danger (a gas smell, sparks, smoke, a burning smell, water near electrics, a "
          "carbon-monoxide alarm, exposed wiring) give no repair steps: tell the consumer to stop, switch off or "
          "leave, and call emergency services or a professional; verdict technician_needed, urgency emergency.\n"
          "The gateway checks every answer against these rules as well.")
FORMAT = ("Answer with one JSON object in the required schema, never free prose: a short diagnosis, numbered steps "
          "(each with what to look for), what the consumer should report back, and a verdict: continue (more "
          "checks to try), resolved (the consumer says it works) or technician_needed. With technician_needed, "
          "fill the draft: the service type, a summary written for the technician, the steps already tried and "
          "their outcomes, likely parts and the urgency; otherwise the draft is null.")


def system_prompt(dialogue: Dialogue) -> str:
    """What the model is told before the conversation: only the dialogue's fields, never who the consumer is."""
    language = LANGUAGES.get(dialogue.locale, dialogue.locale)
    parts = [ROLE, SAFETY, FORMAT,
             f"Write every text of the answer in {language}.",
             f"The appliance: brand {dialogue.brand}, model (SKU) {dialogue.sku}, {dialogue.product}, "
             f"category {dialogue.category}.",
             "A draft's service_type is one of: " + ", ".join(dialogue.service_types) + "."]
    if dialogue.guides:
        parts.append("Troubleshooting guides for this appliance, best match first:\n\n"
                     + "\n\n".join(guide_text(guide) for guide in dialogue.guides))
    if dialogue.wants_technician:
        parts.append("The consumer asked for a technician: the verdict must be technician_needed, with the draft.")
    return "\n\n".join(parts)


def guide_text(guide: Guide) -> str:
    lines = [f"Guide: {guide.title}", f"Symptoms: {guide.symptoms}", "Checks, in order:"]
    lines += [f"{number}. [{check.safety}] {check.text} (look for: {check.look_for})"
              + (" (a technician must do this)" if check.safety == "technician" else "")
              for number, check in enumerate(guide.checks, 1)]
    lines += [f"Call a technician when: {guide.call_when}", f"Urgency if a technician is needed: {guide.urgency}"]
    if guide.likely_parts:
        lines.append("Likely parts: " + ", ".join(guide.likely_parts))
    return "\n".join(lines)


def messages(dialogue: Dialogue, vision: bool) -> list[Any]:
    """The chat: the system prompt, then the consumer's words (photos as image inputs when `vision`) and the
    assistant's earlier answers as the JSON they were given in."""
    chat: list[Any] = [{"role": "system", "content": system_prompt(dialogue)}]
    for turn in dialogue.turns:
        if turn.role == "assistant":
            said = msgspec.json.encode(turn.answer).decode() if turn.answer is not None else turn.text
            chat.append({"role": "assistant", "content": said})
            continue
        photos = [photo for photo in turn.photos if photo.content_type.startswith("image/")] if vision else []
        if not photos:
            chat.append({"role": "user", "content": turn.text})
            continue
        content: list[Any] = [{"type": "text", "text": turn.text}]
        content += [{"type": "image_url", "image_url": {
            "url": f"data:{photo.content_type};base64,{base64.b64encode(photo.data).decode()}"}} for photo in photos]
        chat.append({"role": "user", "content": content})
    return chat


def readable(document: Any) -> str:
    """`engine.render` of an answer still being generated: its fields in render's order, each shown only once
    the ones before it are there, so that each text is the start of the next and of the final render."""
    if not isinstance(document, dict) or not isinstance(document.get("diagnosis"), str):
        return ""
    lines = [flat(document["diagnosis"]), ""]
    steps = document.get("steps")
    for number, step in enumerate(steps if isinstance(steps, list) else [], 1):
        if not isinstance(step, dict) or not isinstance(step.get("instruction"), str):
            break
        if not isinstance(step.get("look_for"), str):
            lines.append(f"{number}. {flat(step['instruction'])}")
            break
        lines.append(f"{number}. {flat(step['instruction'])} — {flat(step['look_for'])}")
    else:
        report = document.get("report_back") if isinstance(steps, list) else None
        if isinstance(report, str) and report:
            lines += ["", flat(report)]
    return "\n".join(lines).strip()


class Retry(Exception):
    """An attempt that failed in a way another attempt may not: `kind` is the attempt's outcome."""

    def __init__(self, kind: str, wait_s: float | None = None) -> None:
        super().__init__(kind)
        self.kind, self.wait_s = kind, wait_s


class BadOutput(Exception):
    """The model answered, but not with a usable answer (invalid_output, refused): asked once more."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


class GiveUp(Exception):
    """No attempt will help (the request itself is refused: a bad key, an unknown model...)."""


class StreamFailed(Exception):
    """The `stream` given to `answer` raised: not the provider's fault, so it goes to the caller as it is."""

    def __init__(self, error: Exception) -> None:
        super().__init__(repr(error))
        self.error = error


# What an attempt's failure means for the call's fallback reason.
REASONS = {"rate_limited": "rate_limited", "server_error": "unavailable", "connection": "unavailable",
           "timeout": "timeout", "invalid_output": "invalid_output", "refused": "refused", "rejected": "rejected"}


@dataclass(slots=True)
class Call:
    """One answer being made: what the consumer has been shown so far, over every attempt, and the tokens spent."""

    stream: Stream
    shown: str = ""
    usage: Usage = field(default_factory=Usage)

    async def show(self, text: str) -> None:
        """Stream what `text` adds to what was shown; nothing if it does not continue it (a retry that differs:
        the final answer will say it all)."""
        if len(text) > len(self.shown) and text.startswith(self.shown):
            delta, self.shown = text[len(self.shown):], text
            await self.stream(delta)


class OpenAIEngine:
    """Strict structured answers from an OpenAI-compatible server, streamed as they are generated. Retries 429s
    (after their retry-after), 5xx, timeouts and lost connections with exponential backoff and full jitter; asks
    once more for an answer that does not fit the schema or is refused; then `fallback` answers."""

    name = "openai"

    def __init__(self, rules: AiRules, fallback: Engine, *, backoff_s: float = 0.5) -> None:
        if not rules.openai_api_key:  # else the SDK would look for OPENAI_API_KEY in the environment itself
            raise ValueError("the OpenAI engine needs rules.openai_api_key (any text for a server that asks none)")
        self.rules, self.fallback, self.backoff_s = rules, fallback, backoff_s
        # The SDK's aiohttp transport: a streamed chunk costs about half what it does through httpx's own.
        self.client = openai.AsyncOpenAI(api_key=rules.openai_api_key, base_url=rules.openai_base_url,
                                         timeout=rules.timeout_s, max_retries=0,
                                         http_client=openai.DefaultAioHttpClient(timeout=rules.timeout_s))
        self.slots = asyncio.Semaphore(rules.max_in_flight)

    async def close(self) -> None:
        await self.client.close()

    async def answer(self, dialogue: Dialogue, stream: Stream) -> Result:
        call = Call(stream)
        started = time.monotonic()
        try:
            answer = await self._answer(dialogue, call)
        except (Retry, BadOutput) as exc:
            reason = REASONS[exc.kind]
        except GiveUp:
            reason = "rejected"
        else:
            metrics.CALLS.labels("ok").inc()
            metrics.LATENCY.observe(time.monotonic() - started)
            return Result(answer, self.name, call.usage)
        metrics.CALLS.labels(reason).inc()
        metrics.LATENCY.observe(time.monotonic() - started)
        metrics.FALLBACKS.labels(reason).inc()
        log.warning("conversation %s: the %s fallback answers (%s)", dialogue.conversation_id, self.fallback.name,
                    reason)
        if call.shown and not call.shown.endswith("\n"):
            await stream("\n\n")  # what the fallback says starts a paragraph of its own
        result = await self.fallback.answer(dialogue, stream)
        usage = Usage(result.usage.prompt_tokens + call.usage.prompt_tokens,
                      result.usage.completion_tokens + call.usage.completion_tokens,
                      result.usage.cost_usd + call.usage.cost_usd)
        return Result(result.answer, result.engine, usage, reason)

    async def _answer(self, dialogue: Dialogue, call: Call) -> AiAnswer:
        chat = messages(dialogue, self.rules.openai_vision)
        failures = 0  # transport faults, up to max_retries
        asked_again = False  # one more request for an unusable answer
        while True:
            try:
                return await self._attempt(chat, dialogue, call)
            except Retry as exc:
                failures += 1
                if failures > self.rules.max_retries:
                    raise
                wait = self._backoff(failures, exc.wait_s)
                if wait is None:
                    raise
                await asyncio.sleep(wait)
            except BadOutput:
                if asked_again:
                    raise
                asked_again = True

    def _backoff(self, failures: int, retry_after: float | None) -> float | None:
        """Seconds before the next attempt: full jitter over an exponential ceiling, or the server's retry-after
        (None: a retry-after longer than a whole call, not worth the consumer's wait)."""
        if retry_after is not None:  # a little jitter still, so that the waiting calls do not all come back at once
            return retry_after + random.uniform(0, self.backoff_s) if retry_after <= self.rules.timeout_s else None
        return random.uniform(0, min(BACKOFF_CAP_S, self.backoff_s * 2 ** (failures - 1)))

    async def _attempt(self, chat: list[Any], dialogue: Dialogue, call: Call) -> AiAnswer:
        metrics.WAITING.inc()
        try:
            await self.slots.acquire()
        finally:
            metrics.WAITING.dec()
        metrics.IN_FLIGHT.inc()
        try:
            async with asyncio.timeout(self.rules.timeout_s):
                text, refused = await self._request(chat, call)
        except StreamFailed as exc:
            raise exc.error from None
        except TimeoutError:
            raise self._failed(Retry("timeout")) from None
        except openai.RateLimitError as exc:
            raise self._failed(Retry("rate_limited", retry_after(exc.response.headers))) from None
        except openai.InternalServerError as exc:
            raise self._failed(Retry("server_error", retry_after(exc.response.headers))) from None
        except openai.APITimeoutError:
            raise self._failed(Retry("timeout")) from None
        except openai.APIConnectionError:
            raise self._failed(Retry("connection")) from None
        except StreamError as exc:
            log.warning("the OpenAI server's stream failed: %s", exc)
            raise self._failed(Retry("server_error")) from None
        except openai.APIStatusError as exc:
            metrics.ATTEMPTS.labels("rejected").inc()
            log.error("the OpenAI server refused the request: %s %s", exc.status_code, exc.message)
            raise GiveUp() from None
        except Exception:  # an error event in the stream, a chunk the SDK cannot read...: the provider's fault
            log.exception("the OpenAI server's answer could not be read")
            raise self._failed(Retry("server_error")) from None
        finally:
            metrics.IN_FLIGHT.dec()
            self.slots.release()
        if refused:
            raise self._failed(BadOutput("refused"))
        answer = decoded(text, dialogue)
        if answer is None:
            raise self._failed(BadOutput("invalid_output"))
        metrics.ATTEMPTS.labels("ok").inc()
        return answer

    @staticmethod
    def _failed(exc: Retry | BadOutput) -> Retry | BadOutput:
        metrics.ATTEMPTS.labels(exc.kind).inc()
        return exc

    async def _request(self, chat: list[Any], call: Call) -> tuple[str, bool]:
        """(the content, whether it was a refusal), its readable text streamed while it comes. The SDK sends the
        request and raises the provider's errors; its stream's events are read raw and decoded with msgspec (the
        SDK's typed chunks cost about half a millisecond each in pydantic, and a model streams a chunk a token)."""
        pieces: list[str] = []
        partial = PartialJSON()
        refused = False
        # The messages and the schema go as they are, in `extra_body`: they are plain JSON already, which the SDK's
        # transform would walk against its typed parameters for nothing (about 2 ms of CPU a request).
        async with self.client.chat.completions.with_streaming_response.create(
                model=self.rules.openai_model, messages=[], stream=True, stream_options={"include_usage": True},
                max_completion_tokens=self.rules.max_output_tokens,
                extra_body={"messages": chat, "response_format": RESPONSE_FORMAT}) as response:
            try:
                async for data in events(response.http_response.aiter_bytes()):
                    try:
                        chunk = CHUNK.decode(data)
                    except msgspec.DecodeError:
                        raise StreamError(f"not a chunk: {data[:80]!r}") from None
                    if chunk.error is not None:
                        raise StreamError(f"an error event: {data[:200]!r}")
                    if chunk.usage is not None:
                        self._count(chunk.usage.prompt_tokens, chunk.usage.completion_tokens, call)
                    delta = chunk.choices[0].delta if chunk.choices else None
                    if delta is None:
                        continue
                    if delta.refusal:
                        refused = True
                    if delta.content:
                        pieces.append(delta.content)
                        partial.scan(delta.content)
                        if '"' not in delta.content:
                            continue  # inside a string or between values: no line of the render can end here
                        try:
                            await call.show(readable(partial.value()))
                        except Exception as exc:
                            raise StreamFailed(exc) from exc
            except httpx2.TimeoutException:
                raise openai.APITimeoutError(request=response.http_request) from None
            except httpx2.TransportError:
                raise openai.APIConnectionError(request=response.http_request) from None
        return "".join(pieces), refused

    def _count(self, prompt: int, completion: int, call: Call) -> None:
        cost = (prompt * self.rules.price_in_per_mtok_usd + completion * self.rules.price_out_per_mtok_usd) / 1e6
        call.usage.prompt_tokens += prompt
        call.usage.completion_tokens += completion
        call.usage.cost_usd += cost
        metrics.TOKENS.labels("in").inc(prompt)
        metrics.TOKENS.labels("out").inc(completion)
        metrics.COST.inc(cost)


async def events(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The data of each server-sent event until `[DONE]`, from the response body's bytes as they come: lines
    end in LF, CRLF or CR, an event's `data:` lines are joined with LF and a blank line ends it, as the SSE
    format says. (The SDK's own line reader decodes every line to text first, about a third of a chunk's cost.)"""
    data: list[bytes] = []
    rest = b""
    async for chunk in chunks:
        rest += chunk
        if b"\r" in rest:  # a CR at the very end may be the first half of a CRLF: kept for the next chunk
            head, tail = (rest[:-1], b"\r") if rest.endswith(b"\r") else (rest, b"")
            rest = head.replace(b"\r\n", b"\n").replace(b"\r", b"\n") + tail
        *lines, rest = rest.split(b"\n")
        for line in lines:
            if line.startswith(b"data:"):
                data.append(line[6:] if line.startswith(b"data: ") else line[5:])
            elif not line and data:
                event, data = b"\n".join(data), []
                if event.startswith(b"[DONE]"):
                    return
                yield event
    rest = rest.rstrip(b"\r")
    if rest.startswith(b"data:"):
        data.append(rest[6:] if rest.startswith(b"data: ") else rest[5:])
    if data and not data[0].startswith(b"[DONE]"):
        yield b"\n".join(data)


def retry_after(headers: Any) -> float | None:
    """The seconds a 429 asks to wait (retry-after-ms or retry-after in seconds), if it says."""
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is not None:
            try:
                seconds = float(value) / scale
            except ValueError:
                continue  # an HTTP date: rare from these servers, and the backoff does instead
            if seconds >= 0:
                return seconds
    return None


def decoded(text: str, dialogue: Dialogue) -> AiAnswer | None:
    """The answer in `text`, or None when it does not decode into AiAnswer or does not fit the dialogue (a draft
    missing or of another service type, no technician when the consumer asked for one)."""
    try:
        answer = msgspec.json.decode(text, type=AiAnswer)
    except msgspec.ValidationError:  # maybe the nulls strict mode wants for optional fields (none today)
        try:
            answer = msgspec.convert(drop_added_nulls(msgspec.json.decode(text), AiAnswer), AiAnswer)
        except msgspec.ValidationError:
            return None
    except msgspec.DecodeError:
        return None
    if answer.verdict == "technician_needed" and answer.draft is None:
        return None
    if answer.draft is not None and dialogue.service_types and answer.draft.service_type not in dialogue.service_types:
        return None
    if dialogue.wants_technician and answer.verdict != "technician_needed":
        return None
    return answer
