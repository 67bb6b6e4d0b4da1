"""Prometheus metrics; with several worker processes, aggregated through the multiprocess dir."""

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.sessions = Gauge("gateway_sessions", "Open websocket sessions", registry=r,
                              multiprocess_mode="livesum")
        self.frames_in = Counter("gateway_frames_in", "Frames received, by operation", ["type"], registry=r)
        self.frames_out = Counter("gateway_frames_out", "Frames sent, by frame type", ["type"], registry=r)
        self.errors = Counter("gateway_errors", "Error replies, by code", ["code"], registry=r)
        self.latency = Histogram("gateway_handler_seconds", "Handler latency, by operation", ["type"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.slow_consumers = Counter("gateway_slow_consumers", "Sessions closed for not reading", registry=r)

    def exposition(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)
