"""Prometheus metrics for one server (its own registry, so several servers in one process don't collide)."""

from __future__ import annotations

from typing import Any


class Metrics:
    """Request, token, queue and batching metrics; `observe` is the engine's event hook."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("attune_requests", "Requests answered, by endpoint and HTTP status", ["endpoint", "status"], registry=r)
        self.latency = Histogram("attune_request_seconds", "Time from request to last token", ["endpoint"], registry=r,
                                 buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64))
        self.prompt_tokens = Counter("attune_prompt_tokens", "Prompt tokens read", registry=r)
        self.completion_tokens = Counter("attune_completion_tokens", "Completion tokens generated", registry=r)
        self.waiting = Gauge("attune_queue_waiting", "Requests waiting for a batch slot", registry=r)
        self.active = Gauge("attune_active_sequences", "Sequences being decoded", registry=r)
        self.passes = Counter("attune_forward_passes", "Model forward passes, by phase", ["phase"], registry=r)
        self.batch_rows = Histogram("attune_decode_batch_rows", "Sequences sharing one decode forward pass", registry=r,
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128))
        self.cancelled = Counter("attune_cancelled", "Generations stopped because the client went away", registry=r)
        self.restarts = Counter("attune_engine_restarts", "Times the generation engine died and was restarted", registry=r)
        self.failed_rows = Counter("attune_failed_rows", "Requests failed alone by a batch step rerun without them", registry=r)
        self.adapter_loads = Counter("attune_adapter_loads", "Adapters loaded into the model", registry=r)
        self.adapter_evictions = Counter("attune_adapter_evictions", "Adapters evicted (LRU)", registry=r)
        self.resident = Gauge("attune_resident_adapters", "Adapters resident in the model", registry=r)

    def observe(self, event: str, data: dict[str, Any]) -> None:
        if event == "decode":
            self.passes.labels("decode").inc()
            self.batch_rows.observe(data["rows"])
        elif event == "prefill":
            self.passes.labels("prefill").inc()
        elif event == "cancelled":
            self.cancelled.inc()
        elif event == "restart":
            self.restarts.inc()
        elif event == "failed_row":
            self.failed_rows.inc()
        elif event in ("adapter_load", "adapter_evict"):
            (self.adapter_loads if event == "adapter_load" else self.adapter_evictions).inc()
            self.resident.set(data["resident"])
        elif event == "step":
            self.active.set(data["active"])
            self.waiting.set(data["waiting"])

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)
