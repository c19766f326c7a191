"""The server's units in-process, with a fake model: admission, queue, worker, infer.

Ordering, token budgets, fairness, cancellation and permit bookkeeping are checked here in
milliseconds; tests/test_server.py then only checks that a real process wires them together.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

pytest.importorskip("fastapi")

from hypothesis import given, settings
from hypothesis import strategies as st
from server_fakes import FakeReranker, request_of

from qwen3_rerank.server.admission import Admission
from qwen3_rerank.server.api_errors import ApiError
from qwen3_rerank.server.infer import Infer, RerankParams
from qwen3_rerank.server.metrics import Metrics
from qwen3_rerank.server.request_queue import QueueClosed, RequestQueue
from qwen3_rerank.server.worker import Worker, WorkerError


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run one test coroutine in a fresh loop, bounded so a hang fails instead of blocking."""
    return asyncio.run(asyncio.wait_for(coro, 20))


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never came true"
        await asyncio.sleep(0.005)


def labels(batch: list) -> list[str]:
    return [entry.request.label for entry in batch]


# -- admission -----------------------------------------------------------------------------------


def test_admission_refuses_past_the_limit_with_429():
    metrics = Metrics().for_model("m")
    admission = Admission(2, metrics.queue_depth)
    first, second = admission.try_acquire(), admission.try_acquire()
    assert admission.in_use == 2 and metrics.queue_depth._value.get() == 2
    with pytest.raises(ApiError) as refused:
        admission.try_acquire()
    assert refused.value.status == 429 and refused.value.type == "overloaded"
    assert refused.value.headers == {"Retry-After": "1"}
    assert admission.in_use == 2  # a refusal takes nothing
    first.release()
    with admission.try_acquire():
        assert admission.in_use == 2
    second.release()
    assert admission.in_use == 0 and metrics.queue_depth._value.get() == 0


def test_permit_is_released_exactly_once():
    admission = Admission(1)
    with pytest.raises(RuntimeError), admission.try_acquire() as permit:
        raise RuntimeError("a failure inside the block")
    assert permit.released and admission.in_use == 0
    permit.release()  # again: nothing happens
    with permit:
        pass
    assert admission.in_use == 0
    admission.try_acquire()
    assert admission.in_use == 1


# -- queue ---------------------------------------------------------------------------------------


def test_next_batch_is_fifo_under_the_token_budget():
    async def scenario() -> None:
        queue = RequestQueue()
        for name in "abcde":
            queue.put(request_of(3, name))
        assert labels(queue.next_batch(7)) == ["a", "b"]  # c would pass 7
        assert labels(queue.next_batch(9)) == ["c", "d", "e"]  # exactly 9 fits
        assert queue.next_batch(9) == [] and len(queue) == 0

    run(scenario())


def test_next_batch_takes_an_oversized_request_alone_and_a_small_one_next():
    async def scenario() -> None:
        queue = RequestQueue()
        queue.put(request_of(50, "large"))
        queue.put(request_of(2, "small"))
        queue.put(request_of(2, "later"))
        assert labels(queue.next_batch(10)) == ["large"]  # over the budget: alone, not skipped
        assert labels(queue.next_batch(10)) == ["small", "later"]  # the small one leads the next batch

    run(scenario())


def test_next_batch_never_skips_ahead_of_a_request_that_does_not_fit():
    async def scenario() -> None:
        queue = RequestQueue()
        for name, tokens in (("a", 6), ("b", 6), ("c", 1)):
            queue.put(request_of(tokens, name))
        assert labels(queue.next_batch(10)) == ["a"]  # c would fit, but b is older
        assert labels(queue.next_batch(10)) == ["b", "c"]

    run(scenario())


def test_next_batch_drops_cancelled_entries():
    async def scenario() -> None:
        queue = RequestQueue()
        gone = queue.put(request_of(1, "gone"))
        queue.put(request_of(1, "kept"))
        also_gone = queue.put(request_of(1, "also gone"))
        gone.future.cancel()
        also_gone.future.cancel()
        assert queue.live_tokens == 1
        assert labels(queue.next_batch(100)) == ["kept"]
        assert len(queue) == 0

    run(scenario())


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 40), max_size=25),
    cancelled=st.sets(st.integers(0, 24)),
    budget=st.integers(1, 60),
)
def test_next_batch_properties(sizes: list[int], cancelled: set[int], budget: int):
    """Batches are the live entries in order, each within budget (or one), each as full as FIFO allows."""

    async def scenario() -> list[list[str]]:
        queue = RequestQueue()
        entries = [queue.put(request_of(n, str(i))) for i, n in enumerate(sizes)]
        for i in cancelled & set(range(len(entries))):
            entries[i].future.cancel()
        batches = []
        while batch := queue.next_batch(budget):
            batches.append(labels(batch))
        return batches

    batches = run(scenario())
    live = [str(i) for i in range(len(sizes)) if i not in cancelled]
    assert [label for batch in batches for label in batch] == live
    for k, batch in enumerate(batches):
        tokens = sum(sizes[int(label)] for label in batch)
        assert len(batch) == 1 or tokens <= budget
        if k + 1 < len(batches):  # the next live entry did not fit
            assert tokens + sizes[int(batches[k + 1][0])] > budget


def test_closed_queue_refuses_new_entries_and_lets_the_rest_drain():
    async def scenario() -> None:
        queue = RequestQueue()
        queue.put(request_of(1, "queued"))
        queue.close()
        with pytest.raises(QueueClosed):
            queue.put(request_of(1, "late"))
        assert await queue.wait_for_entry() is True
        assert labels(queue.next_batch(10)) == ["queued"]
        assert await queue.wait_for_entry() is False

    run(scenario())


# -- worker --------------------------------------------------------------------------------------


def _worker(model: FakeReranker, budget: int = 100) -> tuple[RequestQueue, Worker]:
    queue = RequestQueue()
    return queue, Worker(model, queue, Metrics().for_model("m"), max_batch_tokens=budget, max_wait=0.0)


def test_worker_batches_requests_that_arrive_while_the_model_runs():
    async def scenario() -> None:
        model = FakeReranker(delay=0.2)
        queue, worker = _worker(model)
        worker.start()
        first = queue.put(request_of(2, "first"))
        await until(lambda: model.steps != [])
        rest = [queue.put(request_of(2, name)) for name in ("second", "third")]
        results = await asyncio.gather(first.future, *(e.future for e in rest))
        assert model.steps == [["first"], ["second", "third"]]
        assert [r[0].score for r in results] == [2.0, 2.0, 2.0]
        await worker.stop()

    run(scenario())


def test_worker_small_request_behind_a_large_one_gets_the_next_batch():
    async def scenario() -> None:
        model = FakeReranker(delay=0.1)
        queue, worker = _worker(model, budget=10)
        worker.start()
        blocker = queue.put(request_of(1, "blocker"))
        await until(lambda: model.steps != [])
        large = queue.put(request_of(30, "large"))
        small = queue.put(request_of(1, "small"))
        await asyncio.gather(blocker.future, large.future, small.future)
        assert model.steps == [["blocker"], ["large"], ["small"]]
        await worker.stop()

    run(scenario())


def test_worker_never_runs_a_cancelled_request():
    async def scenario() -> None:
        model = FakeReranker(delay=0.1)
        queue, worker = _worker(model)
        worker.start()
        blocker = queue.put(request_of(1, "blocker"))
        await until(lambda: model.steps != [])
        gone = queue.put(request_of(1, "gone"))
        kept = queue.put(request_of(1, "kept"))
        gone.future.cancel()
        await asyncio.gather(blocker.future, kept.future)
        assert "gone" not in model.seen() and model.seen() == ["blocker", "kept"]
        await worker.stop()

    run(scenario())


@pytest.mark.parametrize("library_error", [False, True])
def test_worker_failed_batch_fails_only_its_requests(library_error: bool):
    async def scenario() -> None:
        model = FakeReranker(delay=0.05, fail_label="bad", library_error=library_error)
        queue, worker = _worker(model, budget=5)  # 5 tokens: every request is a batch of its own
        worker.start()
        entries = [queue.put(request_of(5, name)) for name in ("good", "bad", "after")]
        results = await asyncio.gather(*(e.future for e in entries), return_exceptions=True)
        assert results[0][0].score == 5.0 and results[2][0].score == 5.0
        expected = "the model says no" if library_error else "the model failed on this batch"
        assert isinstance(results[1], WorkerError if not library_error else Exception)
        assert str(results[1]) == expected
        assert worker.running  # the loop goes on after a failed step
        await worker.stop()

    run(scenario())


def test_worker_groups_raw_and_probability_requests():
    async def scenario() -> None:
        model = FakeReranker(delay=0.1)
        queue, worker = _worker(model)
        worker.start()
        blocker = queue.put(request_of(1, "blocker"))
        await until(lambda: model.steps != [])
        raw = queue.put(request_of(2, "raw"), raw=True)
        prob = queue.put(request_of(2, "prob"))
        await asyncio.gather(blocker.future, raw.future, prob.future)
        assert model.steps == [["blocker"], ["prob"], ["raw"]]
        assert raw.future.result()[0].score == -2.0 and prob.future.result()[0].score == 2.0
        await worker.stop()

    run(scenario())


def test_worker_stop_scores_what_is_queued_first():
    async def scenario() -> None:
        model = FakeReranker(delay=0.05)
        queue, worker = _worker(model, budget=1)
        worker.start()
        entries = [queue.put(request_of(1, str(i))) for i in range(3)]
        await worker.stop()
        assert all(e.future.done() and not e.future.cancelled() for e in entries)
        assert model.seen() == ["0", "1", "2"] and not worker.running

    run(scenario())


def test_worker_waits_up_to_max_wait_to_fill_a_batch():
    async def scenario() -> None:
        model = FakeReranker()
        queue = RequestQueue()
        worker = Worker(model, queue, Metrics().for_model("m"), max_batch_tokens=4, max_wait=5.0)
        worker.start()
        first = queue.put(request_of(2, "first"))
        await asyncio.sleep(0.05)
        assert model.steps == []  # waiting: 2 of 4 tokens
        second = queue.put(request_of(2, "second"))  # the budget is full: no more waiting
        await asyncio.gather(first.future, second.future)
        assert model.steps == [["first", "second"]]
        await worker.stop()

    run(scenario())


# -- infer: one permit per request, released on every path ---------------------------------------


def _infer(model: FakeReranker, *, limit: int = 4, timeout: float = 5.0) -> tuple[Infer, Admission, Worker]:
    admission = Admission(limit)
    queue, worker = _worker(model)
    return Infer(model, admission, queue, worker, timeout=timeout), admission, worker


def test_infer_success_releases_the_permit():
    async def scenario() -> None:
        model = FakeReranker()
        infer, admission, worker = _infer(model)
        worker.start()
        scored = await infer.rerank(RerankParams("q", ["one two", "one two three"]))
        assert [d.score for d in scored.documents] == [3.0, 4.0] and scored.request.num_tokens == 7
        assert admission.in_use == 0
        await worker.stop()

    run(scenario())


def test_infer_validation_error_is_422_and_releases_the_permit():
    async def scenario() -> None:
        model = FakeReranker()
        infer, admission, worker = _infer(model)
        worker.start()
        with pytest.raises(ApiError) as error:
            await infer.rerank(RerankParams("q", ["a b c d"], truncate=False, max_doc_tokens=2))
        assert error.value.status == 422 and "document 0 is longer than 2 tokens" in error.value.message
        with pytest.raises(ApiError) as error:
            await infer.rerank(RerankParams(" ", ["a"]))  # the library's own InputError
        assert error.value.status == 422
        assert admission.in_use == 0 and model.steps == []
        await worker.stop()

    run(scenario())


def test_infer_timeout_is_504_releases_the_permit_and_the_model_never_sees_it():
    async def scenario() -> None:
        model = FakeReranker(delay=1.5)
        infer, admission, worker = _infer(model, timeout=0.5)
        worker.start()
        blocker = asyncio.ensure_future(infer.rerank(RerankParams("blocker", ["a"])))
        await until(lambda: model.steps != [])
        with pytest.raises(ApiError) as error:
            await infer.rerank(RerankParams("late", ["a"]))
        assert error.value.status == 504 and error.value.type == "timeout"
        with pytest.raises(ApiError):  # the blocker times out too, while the model runs it
            await blocker
        assert admission.in_use == 0
        await worker.stop()
        assert model.seen() == ["blocker"]

    run(scenario())


def test_infer_cancelled_client_releases_the_permit_and_the_model_never_sees_it():
    async def scenario() -> None:
        # The blocker's batch runs until the gate opens (not for a fixed time: under load,
        # tokenizing "gone" could outlast any delay and the queue would never hold it).
        model = FakeReranker(batch_size=1)
        model.gate = threading.Semaphore(0)
        infer, admission, worker = _infer(model)
        worker.start()
        blocker = asyncio.ensure_future(infer.rerank(RerankParams("blocker", ["a"])))
        await until(lambda: model.steps != [])
        gone = asyncio.ensure_future(infer.rerank(RerankParams("gone", ["a"])))
        try:
            await until(lambda: admission.in_use == 2 and len(infer.queue) == 1)
            gone.cancel()
            with pytest.raises(asyncio.CancelledError):
                await gone
            assert admission.in_use == 1
        finally:
            model.gate.release()
        await blocker
        await worker.stop()
        assert admission.in_use == 0 and model.seen() == ["blocker"]

    run(scenario())


def test_infer_worker_error_is_500_and_releases_the_permit():
    async def scenario() -> None:
        model = FakeReranker(fail_label="bad")
        infer, admission, worker = _infer(model)
        worker.start()
        with pytest.raises(ApiError) as error:
            await infer.rerank(RerankParams("bad", ["a"]))
        assert error.value.status == 500 and error.value.message == "the model failed on this batch"
        assert admission.in_use == 0
        await worker.stop()

    run(scenario())


def test_infer_is_429_when_full_and_503_once_stopping():
    async def scenario() -> None:
        model = FakeReranker(delay=0.5)
        infer, admission, worker = _infer(model, limit=1)
        worker.start()
        first = asyncio.ensure_future(infer.rerank(RerankParams("first", ["a"])))
        await until(lambda: admission.in_use == 1)
        with pytest.raises(ApiError) as error:
            await infer.rerank(RerankParams("second", ["a"]))
        assert error.value.status == 429
        await first
        infer.queue.close()
        with pytest.raises(ApiError) as error:
            await infer.rerank(RerankParams("late", ["a"]))
        assert error.value.status == 503 and admission.in_use == 0
        await worker.stop()

    run(scenario())


def test_warm_up_is_not_bound_by_the_request_timeout():
    async def scenario() -> None:
        model = FakeReranker(delay=0.3)  # a slow first run
        infer, admission, worker = _infer(model, timeout=0.05)
        worker.start()
        scored = await infer.warm_up()
        assert len(scored.documents) == 1 and admission.in_use == 0
        assert model.seen() == ["warm-up query"]
        await worker.stop()

    run(scenario())
