"""Prometheus metrics; with several worker processes, aggregated through the multiprocess dir."""

import collections
import gc
import os
import time
from typing import Any, get_args

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
    multiprocess,
)

from gateway import delivery
from handlers.accounts import metrics as account_metrics
from handlers.ai import metrics as ai_metrics
from handlers.ai.openai_engine import REASONS as AI_REASONS
from handlers.chat import metrics as chat_metrics
from handlers.chat import push
from handlers.money import stripe_api
from handlers.orders import metrics as order_metrics
from protocol.orders import OrderState
from storage import db, geo, payments

LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
GC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

GC_PAUSES = Histogram("gateway_gc_pause_seconds", "Garbage collections, by generation: how long each held the "
                      "process (the event loop runs nothing meanwhile)", ["generation"], buckets=GC_BUCKETS,
                      registry=None)


def time_gc_pauses() -> None:
    """Time every collection of this process for GC_PAUSES (once per process: the callbacks
    are the interpreter's). A callback costs about a microsecond a collection."""
    if _gc_pause not in gc.callbacks:
        gc.callbacks.append(_gc_pause)


_gc_started = [0.0]
_gc_series = [GC_PAUSES.labels(str(generation)) for generation in range(3)]
# The pauses wait here for `flush_gc_pauses`: a collection can start inside prometheus_client while
# it holds a metric's lock (the multiprocess mode's, around allocations), and observing from the
# callback then waited on that lock forever (a deadlock of `--workers 2` at start).
_gc_pending: collections.deque[tuple[int, float]] = collections.deque(maxlen=10_000)


def _gc_pause(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _gc_started[0] = time.perf_counter()
    else:
        _gc_pending.append((info["generation"], time.perf_counter() - _gc_started[0]))


def flush_gc_pauses() -> None:
    """The collections timed since the last call into GC_PAUSES (`Metrics.flush`: every second and
    before each scrape)."""
    while _gc_pending:
        generation, seconds = _gc_pending.popleft()
        _gc_series[generation].observe(seconds)


class Metrics:
    """Frame counts are tallied in plain dicts on the hot path and added to the Prometheus
    counters by `flush()` (every second, and before each scrape): a Prometheus update costs
    ~0.3 us under its lock, a dict increment a tenth of that, and at 50k frames/s that is the
    difference. Latency is observed per frame: the histogram is worth its price."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.sessions = Gauge("gateway_sessions", "Open websocket sessions", registry=r,
                              multiprocess_mode="livesum")
        self.frames_in = Counter("gateway_frames_in", "Frames received, by request type (the operation), or why it"
                                 " was not decoded (invalid, too_large, rate_limited)", ["type"], registry=r)
        self.frames_out = Counter("gateway_frames_out", "Frames sent, by frame type (result, error, event)", ["type"],
                                  registry=r)
        self.errors = Counter("gateway_errors", "Error replies, by code", ["code"], registry=r)
        self.latency = Histogram("gateway_handler_seconds", "Handler latency, by operation", ["type"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.slow_consumers = Counter("gateway_slow_consumers", "Sessions closed for not reading", registry=r)
        self.webhooks = Counter("gateway_stripe_webhooks", "Stripe webhooks: applied, duplicate, refused (bad "
                                "signature or payload), deferred (stored, Stripe unreachable)", ["outcome"], registry=r)
        self.opened = Counter("gateway_connections_opened", "Websocket connections accepted", registry=r)
        self.closed = Counter("gateway_connections_closed", "Websocket connections ended, by close code (the one "
                              "sent or received; 1006: none)", ["code"], registry=r)
        self.loop_lag = Histogram("gateway_event_loop_lag_seconds", "How late a 0.25 s timer of the event loop "
                                  "fires: time the loop spent busy elsewhere", buckets=LAG_BUCKETS, registry=r)
        self.db_pool = Gauge("gateway_db_pool_connections", "PostgreSQL pool connections, by state: in_use, idle; "
                             "and waiting: callers waiting for one (the pool is exhausted)", ["state"], registry=r,
                             multiprocess_mode="livesum")
        self.indexed = Gauge("gateway_geo_indexed", "What Redis's indexes hold, fleet-wide (every process reads the"
                             " same): technicians (on duty, with a position), stale (of those, not heard from in "
                             "POSITION_STALE_S), open_orders (the pool)", ["what"], registry=r,
                             multiprocess_mode="mostrecent")
        self.dependency_up = Gauge("gateway_dependency_up", "1 while a dependency readiness needs answers (checked "
                                   "every second as /readyz does): postgres, redis, pool (the open-order pool "
                                   "built in Redis); 0 while it does not", ["dependency"], registry=r,
                                   multiprocess_mode="livemin")
        # Read from PostgreSQL every METRICS_DB_INTERVAL_S, fleet-wide like gateway_geo_indexed:
        self.outbox = Gauge("push_outbox", "The push outbox, fleet-wide: pending (pushes not sent yet), "
                            "overdue_seconds (how long the most overdue pending push has been due)", ["what"],
                            registry=r, multiprocess_mode="mostrecent")
        self.money_jobs = Gauge("money_jobs", "Jobs that move money, fleet-wide, by kind and unsettled state "
                                "(pending, running, waiting, failed: failed ones wait for a person)",
                                ["kind", "state"], registry=r, multiprocess_mode="mostrecent")
        self.money_overdue = Gauge("money_jobs_overdue_seconds", "How long the most overdue pending money job has "
                                   "been due, fleet-wide (0: none)", registry=r, multiprocess_mode="mostrecent")
        ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes, open fds...
        r.register(PLATFORM_COLLECTOR)  # python_info
        r.register(GC_COLLECTOR)  # python_gc_*
        r.register(GC_PAUSES)
        r.register(geo.REFUSED)
        r.register(geo.WRITTEN)
        for metric in (*delivery.ALL, *account_metrics.ALL, *ai_metrics.ALL, *chat_metrics.ALL, *order_metrics.ALL,
                       payments.JOB_RUNS, push.SENDS, push.DEAD, stripe_api.STRIPE_SECONDS, stripe_api.STRIPE_REQUESTS,
                       db.REDIS_SECONDS, db.REDIS_ERRORS):
            r.register(metric)
        self._preset()
        self.tally_in: dict[str, int] = {}
        self.tally_out: dict[str, int] = {"result": 0, "error": 0, "event": 0}

    def _preset(self) -> None:
        """Every series of a closed label set exported from the start, at 0: a series born with its
        first increment hides that increment from `rate()` and `increase()`, and with several
        workers a family with no series is not exported at all."""
        for outcome in ("applied", "duplicate", "refused", "deferred"):
            self.webhooks.labels(outcome)
        for index in ("positions", "orders"):
            geo.REFUSED.labels(index)
        for kind in payments.JOB_KINDS:
            for outcome in ("done", "skipped", "waiting", "retry", "failed"):
                payments.JOB_RUNS.labels(kind, outcome)
        for outcome in ("sent", "unregistered", "retry", "failed"):
            push.SENDS.labels(outcome)
        for state in get_args(OrderState):
            order_metrics.TRANSITIONS.labels(state)
        for reason in {"ok", *AI_REASONS.values()}:
            ai_metrics.CALLS.labels(reason)
        for reason in set(AI_REASONS.values()):
            ai_metrics.FALLBACKS.labels(reason)
        for outcome in ("ok", *AI_REASONS):
            ai_metrics.ATTEMPTS.labels(outcome)
        for direction in ("in", "out"):
            ai_metrics.TOKENS.labels(direction)

    def flush(self) -> None:
        flush_gc_pauses()
        for tally, counter in ((self.tally_in, self.frames_in), (self.tally_out, self.frames_out)):
            for kind, count in tally.items():
                if count:
                    counter.labels(kind).inc(count)
                    tally[kind] = 0

    def exposition(self) -> bytes:
        self.flush()
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)
