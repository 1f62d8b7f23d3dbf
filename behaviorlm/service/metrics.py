"""Prometheus metrics of one app instance (its own registry, so tests can run several apps).

Labels are bounded: route templates, status codes, adapter names, outcomes. Never user ids.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
_MASS_BUCKETS = (0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


class ServiceMetrics:
    content_type = CONTENT_TYPE_LATEST

    # One declaration per metric, in one place: long, but a list rather than logic.
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "behaviorlm_http_requests",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.request_latency = Histogram(
            "behaviorlm_request_latency_seconds",
            "total time per HTTP request",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_latency = Histogram(
            "behaviorlm_queue_latency_seconds",
            "time a prediction waited before its engine call started",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.engine_latency = Histogram(
            "behaviorlm_engine_latency_seconds",
            "time of one engine call (a micro-batch, or one vLLM request)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "behaviorlm_batch_size",
            "prompts per engine call",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "behaviorlm_queue_depth", "predictions admitted and not finished", registry=r
        )
        self.label_mass = Histogram(
            "behaviorlm_label_mass",
            "model probability at the readout that the next token starts a known behavior",
            ["adapter"],
            buckets=_MASS_BUCKETS,
            registry=r,
        )
        self.predictions = Counter(
            "behaviorlm_predictions", "predictions served", ["adapter"], registry=r
        )
        self.unknown_history = Counter(
            "behaviorlm_unknown_history_behaviors",
            "history events whose behavior is not in the adapter's vocabulary",
            ["adapter"],
            registry=r,
        )
        self.untrained_candidates = Counter(
            "behaviorlm_untrained_candidates",
            "candidates scored by name alone (not in the adapter's vocabulary)",
            ["adapter"],
            registry=r,
        )
        self.adapter_loads = Counter(
            "behaviorlm_adapter_load_events",
            "adapter loads and unloads by outcome",
            ["adapter", "event"],
            registry=r,
        )
        self.rejected = Counter(
            "behaviorlm_rejected_predictions",
            "predictions refused before scoring, by reason",
            ["reason"],
            registry=r,
        )
        self.abandoned = Counter(
            "behaviorlm_abandoned_engine_requests",
            "engine requests dropped or aborted because their request gave up (deadline, "
            "client gone)",
            registry=r,
        )
        self.engine_errors = Counter(
            "behaviorlm_engine_errors",
            "engine calls that failed (each answered 503; the service recovers by canary)",
            registry=r,
        )
        self.ready = Gauge("behaviorlm_ready", "1 when the service is ready", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
