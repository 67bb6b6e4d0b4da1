"""The AI domain's tunables: which provider, its limits, the per-consumer quota and prices."""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AiRules:
    openai_api_key: str | None = None  # None: the offline engine answers (the embedded default)
    openai_base_url: str | None = None  # any OpenAI-compatible server (llama.cpp, vLLM, Ollama...)
    openai_model: str = "gpt-4o-mini"
    openai_vision: bool = False  # send the consumer's photos as image inputs
    timeout_s: float = 30.0  # one model call, first byte to last
    max_retries: int = 2  # on 429 and 5xx, with backoff and jitter
    max_in_flight: int = 16  # model calls at once in this process; more wait their turn
    # Answers being made at once in this process (reading the dialogue, the engine, storing): more wait their
    # turn, so that a burst of ai.start cannot fill the event loop with hundreds of ready tasks at once.
    max_answering: int = 16  # as many as model calls (max_in_flight): no answers queue up half-made
    quota_per_hour: int = 30  # ai.start and ai.reply per consumer per rolling hour
    price_in_per_mtok_usd: float = 0.15  # for the estimated cost stored per conversation
    price_out_per_mtok_usd: float = 0.60
    stream_pause_s: float = 0.05  # the offline engine's pause between streamed pieces
    # One model call's output at most (max_completion_tokens), so a model that runs on costs a bounded
    # amount: its answer is cut off, asked for once more, then the offline engine answers.
    max_output_tokens: int = 1_500
