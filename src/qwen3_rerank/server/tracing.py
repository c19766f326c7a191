"""OpenTelemetry traces of the scoring requests (the ``otel`` extra; ``--otlp-endpoint``).

Off unless an OTLP endpoint is configured (or a test hands :func:`~.app.create_app` a
:class:`Tracing`). Off, this module imports nothing of OpenTelemetry: :func:`current` returns
:data:`NO_TRACE`, whose hooks do nothing, and the worker's hooks find entries without a trace.

One trace per scoring request (``/rerank``, ``/v1/rerank``, ``/v2/rerank``, ``/score``,
``/v1/score``; probes, ``/metrics`` and the docs are not traced)::

    POST /v1/rerank   SERVER span, the whole request (middleware): route, status, model, documents, tokens
    ├── tokenize      the tokenizing thread (infer)
    ├── queue         on the queue until the worker takes it (one per query group of a /score request)
    ├── model         the worker's model step that scored it
    └── response      from the scores to the answer's first bytes: ranking, response model, JSON

A model step serves every request of its batch. Each of them gets a ``model`` span of its own (same
start, end and ``qwen3_rerank.batch.id``, with the batch's totals), so that one request's trace
tells its whole story; a separate batch span would be a trace of its own, with no client, shown
apart from the requests it served. The worker runs the model in a thread: its spans are started
and ended on the event loop with each request's context passed explicitly, never taken from the
worker task's or the thread's context.

The request span joins the caller's trace when the request carries a W3C ``traceparent`` header
(OpenTelemetry's global propagator, which ``OTEL_PROPAGATORS`` may change), or nests under a
server span that an outer instrumentation already opened.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from .. import __version__
from .._extras import require
from ..request_builder import ScoringRequest
from .settings import ServerSettings

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer, TracerProvider

log = logging.getLogger("qwen3_rerank.server")

#: what needs the ``otel`` extra, for :class:`~qwen3_rerank._extras.MissingExtraError`'s message
_FEATURE = "tracing (--otlp-endpoint)"
#: the OTLP exporter module of each protocol
_EXPORTERS = {
    "grpc": "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
    "http/protobuf": "opentelemetry.exporter.otlp.proto.http.trace_exporter",
}
#: the routes whose requests are traced (each is its own ``http.route``: no path parameters)
TRACED_ROUTES = frozenset({"/rerank", "/v1/rerank", "/v2/rerank", "/score", "/v1/score"})
#: the path an OTLP/HTTP collector takes traces on, added to a base URL (as ``OTEL_EXPORTER_OTLP_ENDPOINT``)
OTLP_HTTP_TRACES_PATH = "/v1/traces"

_NULL_CONTEXT: AbstractContextManager[None] = nullcontext()
#: one id per model step, unique in the process (a step's spans in several requests' traces share it)
_batch_ids = itertools.count(1)


# -- per request -----------------------------------------------------------------------------------


class NoTrace:
    """The hooks of a request that is not traced: each does nothing (see :data:`NO_TRACE`)."""

    def scoring(self, model: str, documents: int) -> None:
        """The request was parsed: which model scores it and how many documents it has."""

    def tokenizing(self) -> AbstractContextManager[None]:
        """Around the tokenizing of the request's texts."""
        return _NULL_CONTEXT

    def tokenized(self, requests: Sequence[ScoringRequest]) -> None:
        """Inside :meth:`tokenizing`, once the texts are tokens."""

    def queued(self, entry: Queued) -> None:
        """``entry`` (one query group of the request) was put on the queue."""

    def responding(self) -> None:
        """The scores are back: what follows is ranking, shaping and serializing the answer."""


#: the hooks' no-op implementation, what :func:`current` returns when the request is not traced
NO_TRACE = NoTrace()

_current: contextvars.ContextVar[RequestTrace | None] = contextvars.ContextVar("qwen3_rerank_trace", default=None)


def current() -> NoTrace:
    """The trace of the request being handled (set by the middleware), or :data:`NO_TRACE`."""
    trace = _current.get()
    return NO_TRACE if trace is None else trace


class Queued(Protocol):
    """What the tracing hooks read of a queue entry (:class:`~.request_queue.Entry`)."""

    request: ScoringRequest
    trace: EntryTrace | None


class RequestTrace(NoTrace):
    """The spans of one traced request: its server span and the children the hooks open and close."""

    def __init__(self, tracer: Tracer, span: Span) -> None:
        from opentelemetry import trace

        self._tracer = tracer
        self.span = span
        #: the context whose current span is the request's: the explicit parent of every child
        self.context: Context = trace.set_span_in_context(span)
        self._tokenize: Span | None = None
        self._response: Span | None = None
        self._entries: list[EntryTrace] = []

    def child(self, name: str, attributes: dict[str, Any] | None = None) -> Span:
        """A span under the request's, started now."""
        return self._tracer.start_span(name, context=self.context, attributes=attributes)

    @contextmanager
    def activated(self) -> Iterator[None]:
        """The request's trace is :func:`current` (and OpenTelemetry's current span) inside."""
        from opentelemetry import context

        token = _current.set(self)
        otel_token = context.attach(self.context)
        try:
            yield
        finally:
            context.detach(otel_token)
            _current.reset(token)

    def scoring(self, model: str, documents: int) -> None:
        self.span.set_attributes({"qwen3_rerank.model": model, "qwen3_rerank.documents": documents})

    @contextmanager
    def _tokenizing(self) -> Iterator[None]:
        with self._tracer.start_as_current_span("tokenize", context=self.context) as span:
            self._tokenize = span
            try:
                yield
            finally:
                self._tokenize = None

    def tokenizing(self) -> AbstractContextManager[None]:
        return self._tokenizing()

    def tokenized(self, requests: Sequence[ScoringRequest]) -> None:
        documents = sum(len(request) for request in requests)
        tokens = sum(request.num_tokens for request in requests)
        truncated = sum(sum(request.truncated) for request in requests)
        if self._tokenize is not None:
            self._tokenize.set_attributes(
                {
                    "qwen3_rerank.documents": documents,
                    "qwen3_rerank.tokens": tokens,
                    "qwen3_rerank.truncated": truncated,
                    "qwen3_rerank.queries": len(requests),
                }
            )
        self.span.set_attributes({"qwen3_rerank.tokens": tokens, "qwen3_rerank.truncated": truncated})

    def queued(self, entry: Queued) -> None:
        request = entry.request
        attributes = {"qwen3_rerank.documents": len(request), "qwen3_rerank.tokens": request.num_tokens}
        entry.trace = EntryTrace(self, self.child("queue", attributes), attributes)
        self._entries.append(entry.trace)

    def responding(self) -> None:
        self._response = self.child("response")

    def response_started(self) -> None:
        """The answer's first bytes are being sent: the ``response`` span ends."""
        if self._response is not None:
            self._response.end()
            self._response = None

    def end(self, status: int) -> None:
        """The request was answered with ``status`` (or given up): close what is still open, then its span.

        A query group given up while queued never reaches the worker: its ``queue`` span ends here.
        """
        from opentelemetry.trace import StatusCode

        for entry in self._entries:
            entry.dequeued(given_up=True)
        self.response_started()
        self.span.set_attribute("http.response.status_code", status)
        if status >= 500:  # a 4xx is the client's mistake: not an error of the server's span
            self.span.set_attribute("error.type", str(status))
            self.span.set_status(StatusCode.ERROR)
        self.span.end()


class EntryTrace:
    """The spans of one queue entry (a query group of a traced request): ``queue``, then ``model``."""

    def __init__(self, request: RequestTrace, queue: Span, attributes: dict[str, Any]) -> None:
        self.request = request
        self._queue: Span | None = queue
        #: the entry's own documents and tokens (its ``model`` span carries them too)
        self.attributes = attributes

    def dequeued(self, *, given_up: bool = False) -> None:
        """The worker took the entry (or its request was given up first): the ``queue`` span ends."""
        if self._queue is not None:
            if given_up:
                self._queue.set_attribute("qwen3_rerank.given_up", True)
            self._queue.end()
            self._queue = None


# -- the worker's hooks ----------------------------------------------------------------------------


def dequeued(batch: Sequence[Queued]) -> None:
    """The worker took ``batch`` off the queue: each traced entry's ``queue`` span ends."""
    for entry in batch:
        if entry.trace is not None:
            entry.trace.dequeued()


class ModelStep:
    """The ``model`` spans of one model step, one under each traced request it scores."""

    def __init__(self, spans: list[Span]) -> None:
        self.spans = spans

    def end(self, error: BaseException | None, unscored: int = 0) -> None:
        """The step returned (``error`` None), failed, or stopped with ``unscored`` sequences left."""
        from opentelemetry.trace import StatusCode

        for span in self.spans:
            if unscored:
                span.set_attributes({"qwen3_rerank.given_up": True, "qwen3_rerank.unscored": unscored})
            elif error is not None:
                span.set_attribute("error.type", type(error).__qualname__)
                span.set_status(StatusCode.ERROR, str(error))
            span.end()


def start_model_step(group: Sequence[Queued], *, raw: bool) -> ModelStep | None:
    """The ``model`` spans of a step about to score ``group``; None when no request of it is traced."""
    traced = [entry.trace for entry in group if entry.trace is not None]
    if not traced:
        return None
    batch = {
        "qwen3_rerank.batch.id": next(_batch_ids),
        "qwen3_rerank.batch.requests": len(group),
        "qwen3_rerank.batch.documents": sum(len(entry.request) for entry in group),
        "qwen3_rerank.batch.tokens": sum(entry.request.num_tokens for entry in group),
        "qwen3_rerank.raw_scores": raw,
    }
    return ModelStep([trace.request.child("model", {**batch, **trace.attributes}) for trace in traced])


# -- the tracer ------------------------------------------------------------------------------------


class Tracing:
    """The tracer of one app and the request spans it starts.

    Args:
        provider: where the spans go (an SDK ``TracerProvider`` with its exporter).
        shutdown: called when the server stops (flushes what is not exported yet); None when the
            provider is the caller's to shut down.
    """

    def __init__(self, provider: TracerProvider, shutdown: Callable[[], object] | None = None) -> None:
        self._tracer = provider.get_tracer("qwen3_rerank", __version__)
        self._shutdown = shutdown

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> Tracing | None:
        """The tracing ``settings`` ask for: None without an endpoint, else an OTLP exporter's.

        Raises:
            MissingExtraError: an endpoint is set but the ``otel`` extra is not installed.
        """
        if settings.otlp_endpoint is None:
            return None
        provider = otlp_provider(settings.otlp_endpoint, settings.otlp_protocol, settings.otlp_service_name)
        log.info(
            "tracing: OTLP %s to %s as service %r",
            settings.otlp_protocol,
            settings.otlp_endpoint,
            settings.otlp_service_name,
        )
        return cls(provider, provider.shutdown)

    def start_request(self, scope: MutableMapping[str, Any], route: str) -> RequestTrace:
        """The server span of one HTTP request (ASGI ``scope``) to ``route``, started now.

        Its parent: the span an outer instrumentation made current, else the caller's from the
        ``traceparent`` header, else none (a new trace).
        """
        from opentelemetry import propagate, trace

        parent = None
        if not trace.get_current_span().get_span_context().is_valid:
            headers = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope.get("headers") or ()}
            parent = propagate.extract(headers)
        method = scope.get("method", "")
        span = self._tracer.start_span(
            f"{method} {route}",
            context=parent,
            kind=trace.SpanKind.SERVER,
            attributes={
                "http.request.method": method,
                "http.route": route,
                "url.path": scope.get("path", ""),
                "url.scheme": scope.get("scheme", "http"),
                "qwen3_rerank.request_id": scope.get("state", {}).get("request_id", ""),
            },
        )
        return RequestTrace(self._tracer, span)

    def shutdown(self) -> None:
        """Export what is left (the provider this server made); a provider given to it is left alone."""
        if self._shutdown is not None:
            self._shutdown()


def activated(trace: RequestTrace | None) -> AbstractContextManager[None]:
    """``trace`` is the current request's inside (nothing happens for None)."""
    return _NULL_CONTEXT if trace is None else trace.activated()


def exporter_endpoint(endpoint: str, protocol: str) -> str:
    """The URL the exporter sends to: gRPC's as given; OTLP/HTTP's a base URL gets ``/v1/traces``.

    As with ``OTEL_EXPORTER_OTLP_ENDPOINT``, ``http://collector:4318`` means the collector and
    ``http://collector:4318/custom/path`` the exact URL.
    """
    if protocol == "http/protobuf" and urlsplit(endpoint).path in ("", "/"):
        return endpoint.rstrip("/") + OTLP_HTTP_TRACES_PATH
    return endpoint


def check_available(protocol: str) -> None:
    """Import the SDK and the ``protocol``'s exporter (``serve`` asks before it loads the model).

    Raises:
        MissingExtraError: the ``otel`` extra is not installed (a :class:`~qwen3_rerank.RerankError`:
            the CLI prints it as one line).
    """
    _exporter_class(protocol)


def _exporter_class(protocol: str) -> Any:
    require("opentelemetry.sdk.trace", "otel", _FEATURE)
    return require(_EXPORTERS[protocol], "otel", _FEATURE).OTLPSpanExporter


def otlp_provider(endpoint: str, protocol: str, service_name: str) -> Any:
    """An SDK tracer provider that batches spans to an OTLP collector.

    The sampler is the SDK's (parent-based, always on; ``OTEL_TRACES_SAMPLER`` changes it), and
    ``OTEL_RESOURCE_ATTRIBUTES`` adds to the resource.

    Raises:
        MissingExtraError: the ``otel`` extra is not installed.
    """
    exporter_class = _exporter_class(protocol)
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": service_name, "service.version": __version__})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter_class(endpoint=exporter_endpoint(endpoint, protocol))))
    return provider
