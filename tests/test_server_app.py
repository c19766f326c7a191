"""The FastAPI app in-process (httpx's ASGI transport) over a slow fake model.

Limits that need a slow model (429 while full, 504 past the timeout) are tested here by
injecting the fake, with no test hook in the production settings; the permits come back on
every path, as the queue-depth gauge shows.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from server_fakes import FakeReranker

from qwen3_rerank.server.app import create_app
from qwen3_rerank.server.settings import ServerSettings
from qwen3_rerank.server.state import ServerState

BODY = {"query": "q", "texts": ["a"]}


@asynccontextmanager
async def serving(model: FakeReranker, **settings: object) -> AsyncIterator[tuple[httpx.AsyncClient, ServerState]]:
    """The app started (lifespan: warm-up) and a client on it; stopped (drained) afterwards."""
    app = create_app(ServerSettings(max_batch_wait=0.0, **settings), model)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as client:
            yield client, app.state.server


def run(coro) -> None:
    asyncio.run(asyncio.wait_for(coro, 30))


async def _until(condition, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never came true"
        await asyncio.sleep(0.01)


def test_queue_limit_429_and_timeout_504():
    async def scenario() -> None:
        model = FakeReranker()
        async with serving(model, max_queued_requests=2, request_timeout=1.0) as (client, state):
            model.delay = 2.0  # after the warm-up: every step now outlasts the timeout
            slow = [asyncio.ensure_future(client.post("/rerank", json=BODY)) for _ in range(2)]
            await _until(lambda: state.default.admission.in_use == 2)
            refused = await client.post("/rerank", json=BODY)
            assert refused.status_code == 429
            assert refused.headers["retry-after"] == "1"
            assert refused.json()["error"]["type"] == "overloaded"
            for response in await asyncio.gather(*slow):
                assert response.status_code == 504
                assert response.json()["error"]["type"] == "timeout"
            assert state.default.admission.in_use == 0
            metrics = (await client.get("/metrics")).text
            assert 'qwen3_rerank_queue_depth{model="qwen3-reranker"} 0.0' in metrics
            assert 'qwen3_rerank_requests_total{endpoint="/rerank",status="429"} 1.0' in metrics
            model.delay = 0.0
            await _until(lambda: not model.busy.is_set())  # the step the timed-out requests were in
            assert (await client.post("/rerank", json=BODY)).status_code == 200

    run(scenario())


def test_every_answer_gives_its_permit_back():
    async def scenario() -> None:
        model = FakeReranker(fail_label="boom")
        async with serving(model, max_tokens_per_doc=3) as (client, state):
            ok = await client.post("/v2/rerank", json={"query": "q", "documents": ["a b", "a"]})
            assert ok.status_code == 200
            assert [r["index"] for r in ok.json()["results"]] == [0, 1]
            too_long = await client.post("/rerank", json={"query": "q", "texts": ["a b c d"], "truncate": False})
            assert too_long.status_code == 422 and "document 0" in too_long.json()["error"]["message"]
            failed = await client.post("/rerank", json={"query": "boom", "texts": ["a"]})
            assert failed.status_code == 500 and failed.json()["error"]["type"] == "internal_error"
            assert "Traceback" not in failed.text
            assert state.default.admission.in_use == 0
        assert model.seen()[-2:] == ["q", "boom"]  # the 422 never reached the model

    run(scenario())


def test_a_small_request_is_not_held_behind_a_large_one():
    async def scenario() -> None:
        model = FakeReranker()
        async with serving(model, max_batch_tokens=8) as (client, state):
            model.delay = 1.0
            blocker = asyncio.ensure_future(client.post("/rerank", json={"query": "blocker", "texts": ["a"]}))
            await _until(lambda: model.busy.is_set())
            large = asyncio.ensure_future(client.post("/rerank", json={"query": "large", "texts": ["w " * 20]}))
            await _until(lambda: len(state.default.queue) == 1)  # queued behind the busy model
            model.delay = 0.0
            small = asyncio.ensure_future(client.post("/rerank", json={"query": "small", "texts": ["a"]}))
            responses = await asyncio.gather(blocker, large, small)
            assert [r.status_code for r in responses] == [200, 200, 200]
        assert model.steps[-3:] == [["blocker"], ["large"], ["small"]]

    run(scenario())


def test_not_ready_is_503():
    async def scenario() -> None:
        app = create_app(ServerSettings(), FakeReranker())  # no lifespan: never warmed up
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.post("/rerank", json=BODY)
            assert response.status_code == 503 and response.headers["retry-after"] == "1"
            assert (await client.get("/ready")).status_code == 503

    run(scenario())
