"""Prometheus metrics of one server (own registry, so several apps can live in one process).

The HTTP series (requests, latency) are by endpoint; every series of the model path (queue,
batches, documents, tokens, cancellations) carries a ``model`` label, the served model's name,
so that a server of several models shows each one's load. :class:`ModelMetrics` is one model's
view: the same series with its label bound, which is all its queue, worker and infer see.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_COUNT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_TOKEN_BUCKETS = (64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072)


#: the label of the per-model series
MODEL = "model"


class Metrics:
    """The server's series, in its own registry; per-model ones through :meth:`for_model`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "qwen3_rerank_requests",
            "HTTP requests answered, by endpoint and status",
            ["endpoint", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "qwen3_rerank_request_duration_seconds",
            "Time from arrival to answer, by endpoint",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "qwen3_rerank_queue_depth", "Rerank requests admitted and not answered yet", [MODEL], registry=r
        )
        self.queue_wait = Histogram(
            "qwen3_rerank_queue_wait_seconds",
            "Time a request waited for the model",
            [MODEL],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batches = Counter(
            "qwen3_rerank_model_calls",
            "Calls into the model (Reranker.score_requests), one per batcher step",
            [MODEL],
            registry=r,
        )
        self.batch_requests = Histogram(
            "qwen3_rerank_batch_requests",
            "Requests merged into one model call",
            [MODEL],
            buckets=_COUNT_BUCKETS,
            registry=r,
        )
        self.batch_documents = Histogram(
            "qwen3_rerank_batch_documents",
            "Documents scored in one model call",
            [MODEL],
            buckets=_COUNT_BUCKETS,
            registry=r,
        )
        self.batch_tokens = Histogram(
            "qwen3_rerank_batch_tokens", "Tokens scored in one model call", [MODEL], buckets=_TOKEN_BUCKETS, registry=r
        )
        self.batch_seconds = Histogram(
            "qwen3_rerank_model_call_duration_seconds",
            "Time of one model call",
            [MODEL],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.documents = Counter("qwen3_rerank_documents", "Documents scored", [MODEL], registry=r)
        self.tokens = Counter("qwen3_rerank_tokens", "Tokens scored, prompt template included", [MODEL], registry=r)
        self.cancelled_requests = Counter(
            "qwen3_rerank_cancelled_requests",
            "Rerank requests given up before their answer: client gone (disconnect) or past the timeout",
            [MODEL, "reason"],
            registry=r,
        )
        self.cancelled_documents = Counter(
            "qwen3_rerank_cancelled_documents",
            "Documents (chunk windows, with chunking) of cancelled requests that the model did not score",
            [MODEL],
            registry=r,
        )

    def for_model(self, name: str) -> ModelMetrics:
        """The per-model series of the model served as ``name``."""
        return ModelMetrics(self, name)


class ModelMetrics:
    """One served model's series (the ``model`` label bound); its series show from the start, at 0."""

    def __init__(self, metrics: Metrics, name: str) -> None:
        self.name = name
        self._cancelled_requests = metrics.cancelled_requests
        self.queue_depth = metrics.queue_depth.labels(name)
        self.queue_wait = metrics.queue_wait.labels(name)
        self.batches = metrics.batches.labels(name)
        self.batch_requests = metrics.batch_requests.labels(name)
        self.batch_documents = metrics.batch_documents.labels(name)
        self.batch_tokens = metrics.batch_tokens.labels(name)
        self.batch_seconds = metrics.batch_seconds.labels(name)
        self.documents = metrics.documents.labels(name)
        self.tokens = metrics.tokens.labels(name)
        self.cancelled_documents = metrics.cancelled_documents.labels(name)

    def cancelled_requests(self, reason: str) -> Counter:
        """The count of this model's requests given up for ``reason`` ("disconnect" or "timeout")."""
        return self._cancelled_requests.labels(self.name, reason)

    def observe_batch(self, *, requests: int, documents: int, tokens: int, seconds: float) -> None:
        self.batches.inc()
        self.batch_requests.observe(requests)
        self.batch_documents.observe(documents)
        self.batch_tokens.observe(tokens)
        self.batch_seconds.observe(seconds)
        self.documents.inc(documents)
        self.tokens.inc(tokens)
