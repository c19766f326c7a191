"""Cancellation: a request given up (client gone, timeout) stops costing model time.

Queued, it never reaches the model; in a model step of its own, the step stops before the next
model batch; in a step shared with a live request, the step goes on for that one. The fake
model's ``gate`` holds each model batch until the test lets it end, so every test is decided by
the order of model batches, never by the clock.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from server_fakes import FakeReranker

from qwen3_rerank.server.admission import Admission
from qwen3_rerank.server.api_errors import ApiError
from qwen3_rerank.server.app import create_app
from qwen3_rerank.server.infer import Infer, RerankParams
from qwen3_rerank.server.metrics import Metrics, ModelMetrics
from qwen3_rerank.server.request_queue import Entry, RequestQueue
from qwen3_rerank.server.settings import ServerSettings
from qwen3_rerank.server.worker import Worker

BIG = [f"document {i}" for i in range(300)]  # 30 model batches of 10


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


async def until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never came true"
        await asyncio.sleep(0.005)


GATES: list[threading.Semaphore] = []


@pytest.fixture(autouse=True)
def open_gates_afterwards():
    """A failed test must not leave a model thread waiting on its gate (the process would hang)."""
    yield
    while GATES:
        GATES.pop().release(100_000)


def gate(model: FakeReranker) -> FakeReranker:
    model.gate = threading.Semaphore(0)
    GATES.append(model.gate)
    return model


def gated_model() -> FakeReranker:
    return gate(FakeReranker(batch_size=10))


def entry_of(entries: list[Entry], label: str) -> Entry:
    (entry,) = [e for e in entries if e.request.label == label]
    return entry


def recording(queue: RequestQueue) -> list[Entry]:
    """Every entry put on ``queue`` from now on."""
    entries: list[Entry] = []
    put = queue.put

    def put_and_record(*args: Any, **kwargs: Any) -> Entry:
        entries.append(put(*args, **kwargs))
        return entries[-1]

    queue.put = put_and_record  # type: ignore[method-assign]
    return entries


def batches_of(model: FakeReranker, label: str) -> list[int]:
    return [rows for labels, rows in model.batches if label in labels]


def cancelled(metrics: ModelMetrics, reason: str) -> float:
    return metrics.cancelled_requests(reason)._value.get()


def cancelled_documents(metrics: ModelMetrics) -> float:
    return metrics.cancelled_documents._value.get()


def _infer(model: FakeReranker, timeout: float = 20.0) -> tuple[Infer, Worker, list[Entry]]:
    queue = RequestQueue()
    worker = Worker(model, queue, Metrics().for_model("m"), max_batch_tokens=10_000, max_wait=0.0)
    return Infer(model, Admission(8), queue, worker, timeout=timeout), worker, recording(queue)


def client_leaving() -> tuple[asyncio.Event, Callable[[], Coroutine[Any, Any, bool]]]:
    """An event that says the client has gone, and the ``client_gone`` wait on it."""
    gone = asyncio.Event()
    return gone, gone.wait


# -- in-process: infer, queue and worker -----------------------------------------------------------


def test_abandoned_large_request_stops_after_its_batch_and_a_small_one_goes_next():
    async def scenario() -> None:
        model = gated_model()
        infer, worker, entries = _infer(model)
        worker.start()
        leave, client_gone = client_leaving()
        big = asyncio.ensure_future(infer.rerank(RerankParams("big", BIG), client_gone))
        await until(lambda: len(model.batches) == 1)  # its first model batch is running
        leave.set()
        with pytest.raises(ApiError) as error:
            await big
        assert error.value.status == 499
        await until(lambda: entries[0].gone.is_set())
        small = asyncio.ensure_future(infer.rerank(RerankParams("small", ["a"])))
        await until(lambda: len(infer.queue) == 1)  # queued behind the running step
        model.gate.release(1000)  # every batch may end now
        assert [d.score for d in (await small).documents] == [2.0]
        assert batches_of(model, "big") == [10]  # not one batch more
        assert model.batches[1:] == [(["small"], 1)]  # the very next model batch
        assert model.steps == [["big"], ["small"]]
        metrics = worker.metrics
        assert cancelled(metrics, "disconnect") == 1 and cancelled(metrics, "timeout") == 0
        assert cancelled_documents(metrics) == 290
        assert metrics.documents._value.get() == 10 + 1  # what the model scored
        await worker.stop()

    run(scenario())


def test_request_cancelled_while_queued_never_reaches_the_model():
    async def scenario() -> None:
        model = gated_model()
        infer, worker, _ = _infer(model)
        worker.start()
        blocker = asyncio.ensure_future(infer.rerank(RerankParams("blocker", ["a"])))
        await until(lambda: len(model.batches) == 1)
        leave, client_gone = client_leaving()
        queued = asyncio.ensure_future(infer.rerank(RerankParams("queued", BIG[:25]), client_gone))
        await until(lambda: len(infer.queue) == 1)
        leave.set()
        with pytest.raises(ApiError):
            await queued
        cancelled_task = asyncio.ensure_future(infer.rerank(RerankParams("task cancelled", ["a", "b"])))
        await until(lambda: len(infer.queue) == 2)
        cancelled_task.cancel()  # as an ASGI server that cancels the handler would
        with pytest.raises(asyncio.CancelledError):
            await cancelled_task
        model.gate.release(1000)
        await blocker
        await worker.stop()
        assert model.seen() == ["blocker"] and [labels for labels, _ in model.batches] == [["blocker"]]
        assert cancelled(worker.metrics, "disconnect") == 2
        assert cancelled_documents(worker.metrics) == 25 + 2
        assert len(infer.queue) == 0 and infer.admission.in_use == 0

    run(scenario())


def test_timed_out_requests_stop_the_step_and_leave_the_queue():
    async def scenario() -> None:
        model = gated_model()
        infer, worker, entries = _infer(model, timeout=0.3)
        worker.start()
        big = asyncio.ensure_future(infer.rerank(RerankParams("big", BIG[:30])))
        await until(lambda: len(model.batches) == 1)
        small = asyncio.ensure_future(infer.rerank(RerankParams("small", ["a"])))
        for request in (big, small):  # the gate stays shut: both time out
            with pytest.raises(ApiError) as error:
                await request
            assert error.value.status == 504
        await until(lambda: all(entry.gone.is_set() for entry in entries))
        model.gate.release(1000)
        await worker.stop()
        assert model.batches == [(["big"], 10)] and model.steps == [["big"]]
        assert cancelled(worker.metrics, "timeout") == 2
        assert cancelled_documents(worker.metrics) == 20 + 1

    run(scenario())


def test_a_step_shared_with_a_live_request_goes_on_for_it():
    async def scenario() -> None:
        model = gated_model()
        infer, worker, entries = _infer(model)
        worker.start()
        blocker = asyncio.ensure_future(infer.rerank(RerankParams("blocker", ["a"])))
        await until(lambda: len(model.batches) == 1)
        leave, client_gone = client_leaving()
        big = asyncio.ensure_future(infer.rerank(RerankParams("big", BIG[:30]), client_gone))
        live = asyncio.ensure_future(infer.rerank(RerankParams("live", ["a", "b", "c"])))
        await until(lambda: len(infer.queue) == 2)
        model.gate.release(1)  # the blocker's batch ends; big and live share the next step
        await blocker
        await until(lambda: len(model.batches) == 2)
        leave.set()
        with pytest.raises(ApiError):
            await big
        await until(lambda: entry_of(entries, "big").gone.is_set())
        model.gate.release(1000)
        assert len((await live).documents) == 3
        assert [sorted(step) for step in model.steps] == [["blocker"], ["big", "live"]]
        assert sum(rows for labels, rows in model.batches[1:]) == 33  # all of the shared step ran
        assert cancelled(worker.metrics, "disconnect") == 1 and cancelled_documents(worker.metrics) == 0
        await worker.stop()

    run(scenario())


# -- the app: httpx's ASGI transport, then a real uvicorn ------------------------------------------


def test_asgi_transport_cancels_the_handler_when_the_client_gives_up():
    """httpx's ASGI transport runs the app in the client's task: giving up cancels the handler."""

    async def scenario() -> None:
        model = FakeReranker(batch_size=10)
        app = create_app(ServerSettings(max_batch_wait=0.0), model)
        state = app.state.server
        async with app.router.lifespan_context(app):
            entries = recording(state.default.queue)
            gate(model)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as client:
                big = asyncio.ensure_future(client.post("/v2/rerank", json={"query": "big", "documents": BIG}))
                await until(lambda: batches_of(model, "big") == [10])
                big.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await big
                await until(lambda: entries[0].gone.is_set())
                model.gate.release(1000)
                small = await client.post("/rerank", json={"query": "small", "texts": ["a"]})
                assert small.status_code == 200
                metrics = (await client.get("/metrics")).text
        assert batches_of(model, "big") == [10] and model.steps[-2:] == [["big"], ["small"]]
        assert 'qwen3_rerank_cancelled_requests_total{model="qwen3-reranker",reason="disconnect"} 1.0' in metrics
        assert 'qwen3_rerank_cancelled_documents_total{model="qwen3-reranker"} 290.0' in metrics

    run(scenario())


def test_uvicorn_client_disconnect_stops_the_scoring():
    """A real uvicorn: it does not cancel the handler; ``receive()`` says ``http.disconnect``."""
    uvicorn = pytest.importorskip("uvicorn")

    async def scenario() -> None:
        model = FakeReranker(batch_size=10)
        app = create_app(ServerSettings(max_batch_wait=0.0), model)
        state = app.state.server
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        serving = asyncio.ensure_future(server.serve())
        try:
            await until(lambda: server.started or serving.done())
            port = server.servers[0].sockets[0].getsockname()[1]
            entries = recording(state.default.queue)
            gate(model)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                big = asyncio.ensure_future(client.post("/v2/rerank", json={"query": "big", "documents": BIG}))
                await until(lambda: batches_of(model, "big") == [10])
                big.cancel()  # httpx closes the connection
                with pytest.raises(asyncio.CancelledError):
                    await big
                await until(lambda: entries and entries[0].gone.is_set())
                model.gate.release(1000)
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as fresh:
                    small = await fresh.post("/rerank", json={"query": "small", "texts": ["a"]})
                    assert small.status_code == 200
                    metrics = (await fresh.get("/metrics")).text
        finally:
            server.should_exit = True
            await serving
        assert batches_of(model, "big") == [10] and model.steps[-2:] == [["big"], ["small"]]
        assert 'qwen3_rerank_cancelled_requests_total{model="qwen3-reranker",reason="disconnect"} 1.0' in metrics
        assert 'qwen3_rerank_cancelled_documents_total{model="qwen3-reranker"} 290.0' in metrics
        # answered 499 by the handler, which learnt of the disconnect itself (not cancelled: that is a 500)
        assert 'qwen3_rerank_requests_total{endpoint="/v2/rerank",status="499"} 1.0' in metrics

    run(scenario())


def test_a_failing_disconnect_watch_does_not_fail_the_request():
    async def scenario() -> None:
        model = FakeReranker()
        infer, worker, _ = _infer(model)
        worker.start()

        async def broken() -> None:
            raise RuntimeError("this server cannot tell")

        scored = await infer.rerank(RerankParams("q", ["a"]), broken)
        assert [d.score for d in scored.documents] == [2.0]
        assert cancelled(worker.metrics, "disconnect") == 0
        await worker.stop()

    run(scenario())
