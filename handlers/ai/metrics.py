"""The AI troubleshooter's Prometheus metrics, counted per process; gateway.metrics registers them with its
registry. Labels are small closed sets (outcomes, reasons, directions): never a conversation or consumer id."""

from prometheus_client import Counter, Gauge, Histogram

CALL_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)

CALLS = Counter("ai_openai_calls", "Answers asked of the OpenAI engine, by outcome: ok, or the reason the "
                "fallback answered", ["outcome"], registry=None)
ATTEMPTS = Counter("ai_openai_requests", "Chat completion requests sent, by outcome: ok, rate_limited, "
                   "server_error, timeout, connection, invalid_output, refused, rejected", ["outcome"], registry=None)
LATENCY = Histogram("ai_openai_call_seconds", "Time to the OpenAI engine's answer (its retries included, the "
                    "fallback's work not)", buckets=CALL_BUCKETS, registry=None)
TOKENS = Counter("ai_openai_tokens", "Tokens the provider reported, by direction: in (prompt), out (completion)",
                 ["direction"], registry=None)
COST = Counter("ai_openai_cost_usd", "Estimated provider cost in US dollars, from the configured prices",
               registry=None)
FALLBACKS = Counter("ai_fallbacks", "Answers given by the fallback engine instead of the provider, by reason",
                    ["reason"], registry=None)
IN_FLIGHT = Gauge("ai_openai_in_flight", "Chat completion requests open now", registry=None,
                  multiprocess_mode="livesum")
WAITING = Gauge("ai_openai_waiting", "Answers waiting for a free request slot (max_in_flight)", registry=None,
                multiprocess_mode="livesum")

ALL = (CALLS, ATTEMPTS, LATENCY, TOKENS, COST, FALLBACKS, IN_FLIGHT, WAITING)
