"""Prometheus metrics, one registry per server (no module-level state)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class _StateCollector(Collector):
    """Queue depth, loaded models and their memory, read at scrape time."""

    def __init__(self, state: Callable[[], list[tuple[str, int, int, int]]]) -> None:
        self.state = state  # [(model, queue_waiting, running, memory_bytes)] for loaded models

    def collect(self):  # type: ignore[no-untyped-def]
        rows = self.state()
        loaded = GaugeMetricFamily("corral_loaded_models", "Models loaded now")
        loaded.add_metric([], len(rows))
        queue = GaugeMetricFamily("corral_queue_depth", "Requests waiting for a model", labels=["model"])
        running = GaugeMetricFamily("corral_requests_running", "Requests being served", labels=["model"])
        memory = GaugeMetricFamily("corral_model_memory_bytes", "Memory measured at load", labels=["model"])
        for name, waiting, active, mem in rows:
            queue.add_metric([name], waiting)
            running.add_metric([name], active)
            memory.add_metric([name], mem)
        yield from (loaded, queue, running, memory)


class Metrics:
    def __init__(self, state: Callable[[], list[tuple[str, int, int, int]]]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("corral_requests", "Requests handled", ["model", "route", "status"], registry=r)
        self.errors = Counter("corral_errors", "Requests that ended in an error", ["model", "route", "status"],
                              registry=r)
        self.tokens = Counter("corral_tokens", "Tokens processed", ["model", "kind"], registry=r)
        self.latency = Histogram("corral_request_seconds", "Request duration", ["model", "route"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("corral_time_to_first_token_seconds", "Time to first token", ["model"],
                              buckets=LATENCY_BUCKETS, registry=r)
        self.loads = Counter("corral_model_loads", "Model loads", ["model"], registry=r)
        self.embed_batch = Histogram("corral_embed_batch_inputs", "Inputs per embedding forward pass", ["model"],
                                     buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r)
        self.batch_inputs = Histogram("corral_batch_inputs", "Inputs per forward pass of other batchable tasks",
                                      ["model", "task"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r)
        self.draining = Gauge("corral_draining", "1 while the server drains for shutdown", registry=r)
        self.cost = Counter("corral_cost_usd", "What calls cost, by the target that served them and the price's "
                            "source", ["target", "source"], registry=r)
        self.retries = Counter("corral_target_retries", "Retries of a target after a retryable failure", ["target"],
                               registry=r)
        self.fallbacks = Counter("corral_target_fallbacks", "Calls a target failed and the next one took over",
                                 ["alias", "target"], registry=r)
        self.cooldowns = Counter("corral_target_cooldowns", "Times a target was cooled down", ["target"], registry=r)
        r.register(_StateCollector(state))

    def observe(self, model: str | None, route: str, status: int, prompt_tokens: int, completion_tokens: int,
                seconds: float, ttft: float | None) -> None:
        m = model or "-"
        self.requests.labels(m, route, str(status)).inc()
        if status >= 400:
            self.errors.labels(m, route, str(status)).inc()
        self.tokens.labels(m, "prompt").inc(prompt_tokens)
        self.tokens.labels(m, "completion").inc(completion_tokens)
        self.latency.labels(m, route).observe(seconds)
        if ttft is not None:
            self.ttft.labels(m).observe(ttft)

    def render(self) -> bytes:
        return generate_latest(self.registry)
