"""OpenTelemetry traces of the server's requests (the ``otel`` extra), over the fake model.

The spans go to the SDK's in-memory exporter (through :func:`create_app`'s ``tracing``), so the
tree of one request, its attributes and the parent links are read back exactly; two tests send
them over the wire to a local OTLP receiver (gRPC and HTTP), as ``--otlp-endpoint`` does. The
expected token counts come from the fake model's rule (one token per word of the query and of
the document), not from the server's answer.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("opentelemetry.sdk.trace")

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from server_fakes import FakeReranker

from qwen3_rerank.cli import UsageError, build_parser, main
from qwen3_rerank.cli.serve import resolve
from qwen3_rerank.server import tracing
from qwen3_rerank.server.app import create_app
from qwen3_rerank.server.settings import ServerSettings
from qwen3_rerank.server.state import ServerState
from qwen3_rerank.server.tracing import Tracing

MODEL_NAME = "tiny-fake"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_SPAN_ID = "b7ad6b7169203331"


def word_tokens(query: str, documents: list[str]) -> int:
    """The fake model's token count: the query's and the document's words, per document."""
    return sum(len(query.split()) + len(document.split()) for document in documents)


@asynccontextmanager
async def serving(
    model: FakeReranker, tracer: Tracing | None, **settings: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, ServerState]]:
    """The app started (warm-up) with ``tracer``, and a client on it; stopped (drained) afterwards."""
    config = ServerSettings(model_name=MODEL_NAME, max_batch_wait=0.0, **settings)
    app = create_app(config, model, tracing=tracer)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as client:
            yield client, app.state.server


def in_memory() -> tuple[Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Tracing(provider), exporter


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


async def until(condition: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never came true"
        await asyncio.sleep(0.005)


def tree(spans: tuple[ReadableSpan, ...]) -> str:
    """The spans as an indented tree (names, milliseconds, attributes): for failure messages and the docs."""
    by_parent: dict[int | None, list[ReadableSpan]] = {}
    ids = {span.context.span_id for span in spans}
    for span in sorted(spans, key=lambda s: s.start_time or 0):
        parent = span.parent.span_id if span.parent is not None and span.parent.span_id in ids else None
        by_parent.setdefault(parent, []).append(span)
    lines: list[str] = []

    def walk(parent: int | None, depth: int) -> None:
        for span in by_parent.get(parent, []):
            ms = ((span.end_time or 0) - (span.start_time or 0)) / 1e6
            attributes = ", ".join(f"{k}={v!r}" for k, v in (span.attributes or {}).items())
            lines.append(f"{'  ' * depth}{span.name} [{ms:.2f} ms] {attributes}")
            walk(span.context.span_id, depth + 1)

    walk(None, 0)
    return "\n".join(lines)


def request_tree(spans: tuple[ReadableSpan, ...], name: str) -> tuple[ReadableSpan, dict[str, ReadableSpan]]:
    """The server span called ``name`` and its children by name (each name once)."""
    (root,) = [span for span in spans if span.name == name]
    children = [span for span in spans if span.parent is not None and span.parent.span_id == root.context.span_id]
    by_name = {span.name: span for span in children}
    assert len(by_name) == len(children), tree(spans)
    return root, by_name


def test_one_request_is_a_tree_of_spans_with_its_attributes():
    query, documents = "what do cats eat", ["cats eat meat", "Paris is in France", "fish"]

    async def scenario() -> None:
        tracer, exporter = in_memory()
        async with serving(FakeReranker(), tracer) as (client, _):
            assert exporter.get_finished_spans() == ()  # the warm-up request is not traced
            response = await client.post(
                "/v1/rerank", json={"query": query, "documents": documents}, headers={"X-Request-ID": "req-1"}
            )
            assert response.status_code == 200
            assert (await client.get("/health")).status_code == 200  # probes are not traced
            assert (await client.get("/metrics")).status_code == 200
        spans = exporter.get_finished_spans()
        assert len(spans) == 5, tree(spans)
        root, children = request_tree(spans, "POST /v1/rerank")
        assert sorted(children) == ["model", "queue", "response", "tokenize"], tree(spans)
        assert root.parent is None and root.kind is SpanKind.SERVER
        assert all(span.context.trace_id == root.context.trace_id for span in spans)

        tokens = word_tokens(query, documents)
        assert root.attributes == {
            "http.request.method": "POST",
            "http.route": "/v1/rerank",
            "url.path": "/v1/rerank",
            "url.scheme": "http",
            "qwen3_rerank.request_id": "req-1",
            "qwen3_rerank.model": MODEL_NAME,
            "qwen3_rerank.documents": 3,
            "qwen3_rerank.tokens": tokens,
            "qwen3_rerank.truncated": 0,
            "http.response.status_code": 200,
        }
        assert root.status.status_code is StatusCode.UNSET
        assert children["tokenize"].attributes == {
            "qwen3_rerank.documents": 3,
            "qwen3_rerank.tokens": tokens,
            "qwen3_rerank.truncated": 0,
            "qwen3_rerank.queries": 1,
        }
        assert children["queue"].attributes == {"qwen3_rerank.documents": 3, "qwen3_rerank.tokens": tokens}
        model = dict(children["model"].attributes or {})
        assert isinstance(model.pop("qwen3_rerank.batch.id"), int)
        assert model == {
            "qwen3_rerank.batch.requests": 1,
            "qwen3_rerank.batch.documents": 3,
            "qwen3_rerank.batch.tokens": tokens,
            "qwen3_rerank.raw_scores": False,
            "qwen3_rerank.documents": 3,
            "qwen3_rerank.tokens": tokens,
        }
        # one after the other, inside the request's span
        order = [root.start_time]
        for name in ("tokenize", "queue", "model", "response"):
            order += [children[name].start_time, children[name].end_time]
        order.append(root.end_time)
        assert order == sorted(order), tree(spans)

    run(scenario())


def test_a_model_step_shared_by_two_requests_is_a_model_span_in_each_trace():
    async def scenario() -> None:
        tracer, exporter = in_memory()
        model = FakeReranker(batch_size=64)
        async with serving(model, tracer) as (client, state):
            model.gate = threading.Semaphore(0)  # each model batch waits for a permit to finish
            model.batch_started.clear()
            blocker = asyncio.ensure_future(client.post("/rerank", json={"query": "blocker", "texts": ["a"]}))
            await until(model.batch_started.is_set)
            first = asyncio.ensure_future(client.post("/rerank", json={"query": "first", "texts": ["a", "b"]}))
            second = asyncio.ensure_future(client.post("/score", json={"text_1": "second", "text_2": ["c"]}))
            await until(lambda: len(state.default.queue) == 2)  # both wait behind the blocker: one step for the two
            model.gate.release(2)
            responses = await asyncio.gather(blocker, first, second)
            assert [r.status_code for r in responses] == [200, 200, 200]
        assert model.steps[-2] == ["blocker"] and sorted(model.steps[-1]) == ["first", "second"]  # either order
        spans = exporter.get_finished_spans()
        servers = {span.context.span_id: span for span in spans if span.kind is SpanKind.SERVER}
        assert len(servers) == 3, tree(spans)
        shared = [
            span for span in spans if span.name == "model" and span.attributes["qwen3_rerank.batch.requests"] == 2
        ]
        assert len(shared) == 2, tree(spans)
        assert shared[0].attributes["qwen3_rerank.batch.id"] == shared[1].attributes["qwen3_rerank.batch.id"]
        parents = [servers[span.parent.span_id] for span in shared]  # each under its own request's span
        assert sorted(parent.attributes["http.route"] for parent in parents) == ["/rerank", "/score"]
        assert len({span.context.trace_id for span in shared}) == 2  # in two traces
        for span, parent in zip(shared, parents, strict=True):  # the batch's totals, and the request's own share
            assert span.context.trace_id == parent.context.trace_id
            assert span.attributes["qwen3_rerank.batch.documents"] == 3
            assert span.attributes["qwen3_rerank.batch.tokens"] == word_tokens("first", ["a", "b"]) + word_tokens(
                "second", ["c"]
            )
            assert span.attributes["qwen3_rerank.documents"] == parent.attributes["qwen3_rerank.documents"]
            assert span.attributes["qwen3_rerank.tokens"] == parent.attributes["qwen3_rerank.tokens"]

    run(scenario())


def test_a_traceparent_header_puts_the_request_in_the_callers_trace():
    async def scenario() -> None:
        tracer, exporter = in_memory()
        async with serving(FakeReranker(), tracer) as (client, _):
            sampled = {"traceparent": f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"}
            assert (await client.post("/rerank", json={"query": "q", "texts": ["a"]}, headers=sampled)).is_success
            (root,) = [span for span in exporter.get_finished_spans() if span.kind is SpanKind.SERVER]
            assert root.context.trace_id == int(TRACE_ID, 16)
            assert root.parent is not None and root.parent.is_remote
            assert root.parent.span_id == int(PARENT_SPAN_ID, 16)
            assert all(span.context.trace_id == int(TRACE_ID, 16) for span in exporter.get_finished_spans())
            exporter.clear()
            # the caller did not sample its trace: neither does the server (parent-based sampling)
            unsampled = {"traceparent": f"00-{TRACE_ID}-{PARENT_SPAN_ID}-00"}
            assert (await client.post("/rerank", json={"query": "q", "texts": ["a"]}, headers=unsampled)).is_success
            assert exporter.get_finished_spans() == ()
            # no header: a trace of its own
            assert (await client.post("/rerank", json={"query": "q", "texts": ["a"]})).is_success
            (root,) = [span for span in exporter.get_finished_spans() if span.kind is SpanKind.SERVER]
            assert root.parent is None and root.context.trace_id != int(TRACE_ID, 16)

    run(scenario())


def test_an_outer_instrumentations_server_span_is_the_parent():
    """A span made current around the app (as ``opentelemetry-instrument`` or FastAPI's own telemetry
    would) is the request span's parent, even when a ``traceparent`` names another."""
    from opentelemetry import trace

    async def scenario() -> None:
        tracer, exporter = in_memory()
        outer_provider = TracerProvider()
        outer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        outer_tracer = outer_provider.get_tracer("outer")
        app = create_app(ServerSettings(max_batch_wait=0.0), FakeReranker(), tracing=tracer)

        async def instrumented(scope: Any, receive: Any, send: Any) -> None:
            with outer_tracer.start_as_current_span("outer", kind=SpanKind.SERVER):
                await app(scope, receive, send)

        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=instrumented), base_url="http://t"
            ) as client:
                headers = {"traceparent": f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"}
                response = await client.post("/rerank", json={"query": "q", "texts": ["a"]}, headers=headers)
                assert response.is_success
        spans = exporter.get_finished_spans()
        (outer,) = [span for span in spans if span.name == "outer"]
        root, children = request_tree(spans, "POST /rerank")
        assert root.parent is not None and root.parent.span_id == outer.context.span_id, tree(spans)
        assert sorted(children) == ["model", "queue", "response", "tokenize"]
        assert trace.get_current_span() is trace.INVALID_SPAN  # nothing left attached

    run(scenario())


def test_failures_mark_their_spans():
    async def scenario() -> None:
        tracer, exporter = in_memory()
        async with serving(FakeReranker(fail_label="boom"), tracer, max_tokens_per_doc=3) as (client, _):
            assert (await client.post("/rerank", json={"query": "boom", "texts": ["a"]})).status_code == 500
            failed, children = request_tree(exporter.get_finished_spans(), "POST /rerank")
            assert failed.status.status_code is StatusCode.ERROR and failed.attributes["error.type"] == "500"
            assert children["model"].status.status_code is StatusCode.ERROR
            assert children["model"].attributes["error.type"] == "WorkerError"
            assert "response" not in children
            exporter.clear()
            refused = await client.post("/rerank", json={"query": "q", "texts": ["a b c d"], "truncate": False})
            assert refused.status_code == 422
            spans = exporter.get_finished_spans()
            root, children = request_tree(spans, "POST /rerank")
            assert root.status.status_code is StatusCode.UNSET  # the client's mistake, not the server's
            assert root.attributes["http.response.status_code"] == 422
            assert sorted(children) == ["tokenize"], tree(spans)
            assert children["tokenize"].status.status_code is StatusCode.ERROR

    run(scenario())


def test_the_queue_span_of_a_request_given_up_while_queued_ends():
    async def scenario() -> None:
        tracer, exporter = in_memory()
        model = FakeReranker(batch_size=64)
        async with serving(model, tracer, request_timeout=0.5) as (client, state):
            model.gate = threading.Semaphore(0)
            model.batch_started.clear()
            blocker = asyncio.ensure_future(client.post("/rerank", json={"query": "blocker", "texts": ["a"]}))
            await until(model.batch_started.is_set)
            queued = await client.post("/rerank", json={"query": "queued", "texts": ["a"]})
            assert queued.status_code == 504
            model.gate.release()
            assert (await blocker).status_code == 504
            await until(lambda: not model.busy.is_set())
        spans = exporter.get_finished_spans()
        roots = [span for span in spans if span.kind is SpanKind.SERVER]
        assert [root.attributes["http.response.status_code"] for root in roots] == [504, 504], tree(spans)
        queues = [span for span in spans if span.name == "queue"]
        assert len(queues) == 2 and all(span.end_time is not None for span in queues)
        assert sum(bool(span.attributes.get("qwen3_rerank.given_up")) for span in queues) == 1
        assert model.seen()[-1] == "blocker"  # the given-up one never reached the model

    run(scenario())


NO_OTEL_SCRIPT = """
import asyncio, sys
sys.path.insert(0, {tests!r})
import fastapi, httpx, prometheus_client, starlette  # the web stack may import OpenTelemetry's API itself
baseline = {{name for name in sys.modules if name.startswith("opentelemetry")}}
from server_fakes import FakeReranker
from qwen3_rerank.server import tracing
from qwen3_rerank.server.app import create_app
from qwen3_rerank.server.settings import ServerSettings

async def main():
    app = create_app(ServerSettings(max_batch_wait=0.0), FakeReranker())
    assert app.state.server.tracing is None
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            assert (await client.post("/rerank", json={{"query": "q", "texts": ["a"]}})).status_code == 200
            assert (await client.post("/score", json={{"text_1": "q", "text_2": ["a"]}})).status_code == 200

asyncio.run(main())
print(sorted({{name for name in sys.modules if name.startswith("opentelemetry")}} - baseline))
"""


def test_no_opentelemetry_module_is_imported_when_tracing_is_off():
    script = NO_OTEL_SCRIPT.format(tests=str(Path(__file__).parent))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# -- configuration -------------------------------------------------------------------------------


def test_flags_and_environment():
    parser = build_parser()
    defaults, _ = resolve(parser.parse_args(["serve"]), {})
    assert (defaults.otlp_endpoint, defaults.otlp_protocol, defaults.otlp_service_name) == (
        None,
        "grpc",
        "qwen3-rerank",
    )
    env = {"QWEN3_RERANK_OTLP_ENDPOINT": "http://collector:4318", "QWEN3_RERANK_OTLP_PROTOCOL": "http/protobuf"}
    settings, _ = resolve(parser.parse_args(["serve", "--otlp-service-name", "rerank-eu"]), env)
    assert (settings.otlp_endpoint, settings.otlp_protocol, settings.otlp_service_name) == (
        "http://collector:4318",
        "http/protobuf",
        "rerank-eu",
    )
    with pytest.raises(UsageError, match="unknown OTLP protocol 'http'"):
        resolve(parser.parse_args(["serve", "--otlp-protocol", "http"]), {})
    with pytest.raises(UsageError, match="--otlp-endpoint: expected an http:// or https:// URL"):
        resolve(parser.parse_args(["serve", "--otlp-endpoint", "localhost:4317"]), {})
    with pytest.raises(ValueError, match="otlp_protocol"):
        ServerSettings(otlp_protocol="udp")


def test_the_otlp_http_endpoint_is_a_base_url_unless_it_has_a_path():
    assert tracing.exporter_endpoint("http://c:4318", "http/protobuf") == "http://c:4318/v1/traces"
    assert tracing.exporter_endpoint("https://c:4318/", "http/protobuf") == "https://c:4318/v1/traces"
    assert tracing.exporter_endpoint("http://c/otlp/v1/traces", "http/protobuf") == "http://c/otlp/v1/traces"
    assert tracing.exporter_endpoint("http://c:4317", "grpc") == "http://c:4317"


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_without_the_extra_serve_says_what_to_install_before_loading_the_model(protocol, monkeypatch, tmp_path, capsys):
    exporter = "grpc" if protocol == "grpc" else "http"
    monkeypatch.setitem(sys.modules, f"opentelemetry.exporter.otlp.proto.{exporter}.trace_exporter", None)
    code = main(
        [
            "serve",
            "--model",
            str(tmp_path / "no-model"),
            "--otlp-endpoint",
            "http://x:4317",
            "--otlp-protocol",
            protocol,
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "pip install 'qwen3-rerank[otel]'" in err and "Traceback" not in err
    assert "no-model" not in err  # it stopped before trying to load the model


# -- over the wire -------------------------------------------------------------------------------


class _OtlpHttpReceiver(BaseHTTPRequestHandler):
    received: list[tuple[str, bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def _exported(requests: list[bytes]) -> tuple[set[str], set[str]]:
    """Span names and ``service.name`` values of OTLP export requests."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    names, services = set(), set()
    for data in requests:
        request = ExportTraceServiceRequest.FromString(data)
        for resource_spans in request.resource_spans:
            for attribute in resource_spans.resource.attributes:
                if attribute.key == "service.name":
                    services.add(attribute.value.string_value)
            for scope_spans in resource_spans.scope_spans:
                names.update(span.name for span in scope_spans.spans)
    return names, services


async def _one_request_through(settings: ServerSettings) -> None:
    app = create_app(settings, FakeReranker())
    async with app.router.lifespan_context(app):  # its end shuts the provider down: the spans are sent
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            assert (await client.post("/v2/rerank", json={"query": "q", "documents": ["a"]})).status_code == 200


def test_spans_reach_an_otlp_http_collector():
    _OtlpHttpReceiver.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OtlpHttpReceiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        run(
            _one_request_through(
                ServerSettings(otlp_endpoint=endpoint, otlp_protocol="http/protobuf", otlp_service_name="rr-http")
            )
        )
    finally:
        server.shutdown()
    assert {path for path, _ in _OtlpHttpReceiver.received} == {"/v1/traces"}
    names, services = _exported([body for _, body in _OtlpHttpReceiver.received])
    assert names == {"POST /v2/rerank", "tokenize", "queue", "model", "response"}
    assert services == {"rr-http"}


def test_spans_reach_an_otlp_grpc_collector():
    grpc = pytest.importorskip("grpc")
    from concurrent import futures

    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    received: list[bytes] = []

    class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 (the service's method name)
            received.append(request.SerializeToString())
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Receiver(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        settings = ServerSettings(otlp_endpoint=f"http://127.0.0.1:{port}", otlp_service_name="rr-grpc")
        run(_one_request_through(settings))
    finally:
        server.stop(grace=None)
    names, services = _exported(received)
    assert names == {"POST /v2/rerank", "tokenize", "queue", "model", "response"}
    assert services == {"rr-grpc"}


def test_with_several_models_the_span_names_the_model_that_scored():
    """``qwen3_rerank.model`` is the served model the request's ``model`` picked, not the default's name."""

    async def scenario() -> None:
        tracer, exporter = in_memory()
        config = ServerSettings(model_name="first", max_batch_wait=0.0)
        app = create_app(config, {"first": FakeReranker(), "second": FakeReranker()}, tracing=tracer)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as client:
                for model in ("second", None, "first"):
                    body = {"query": "q", "documents": ["a b", "c"], **({"model": model} if model else {})}
                    assert (await client.post("/v2/rerank", json=body)).status_code == 200
        roots = sorted(
            (span for span in exporter.get_finished_spans() if span.name == "POST /v2/rerank"),
            key=lambda span: span.start_time or 0,
        )
        assert [(span.attributes or {}).get("qwen3_rerank.model") for span in roots] == ["second", "first", "first"]

    run(scenario())
