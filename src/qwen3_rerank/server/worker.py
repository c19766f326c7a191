"""A model's worker: pulls batches from the queue and runs them, one step at a time.

Each step is one :meth:`Reranker.score_requests_with_best_chunks` call (per score kind, raw or
probability) on a single worker thread, so the event loop stays free to take and queue new
requests while the model runs; they go together into the next step, and batches grow with
load. Before a step the worker waits at most ``max_wait`` for the queue to hold a full token
budget. A failed step fails only the requests in it; the worker goes on with the next batch.
A step stops between two model batches once every request in it was given up (client gone,
timeout): the library's ``should_stop`` check; a step shared with a live request goes on.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from ..errors import RerankError, ScoringCancelled
from . import tracing
from .metrics import ModelMetrics
from .model import RerankModel
from .model_watch import ModelChanged
from .request_queue import Entry, RequestQueue

log = logging.getLogger("qwen3_rerank.server")


class WorkerError(Exception):
    """The model failed on a batch for a reason that is not the client's (logged, never shown)."""


class Worker:
    def __init__(
        self,
        model: RerankModel,
        queue: RequestQueue,
        metrics: ModelMetrics,
        *,
        max_batch_tokens: int,
        max_wait: float,
        model_failure: Callable[[], str | None] | None = None,
    ) -> None:
        self.model = model
        #: asked before each step: a reason not to run the model (its weights changed under it)
        self.model_failure = model_failure
        self.queue = queue
        self.metrics = metrics
        self.max_batch_tokens = max_batch_tokens
        self.max_wait = max_wait
        self._task: asyncio.Task[None] | None = None
        # One thread: the model is run by one worker, one step at a time.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qwen3-rerank-worker")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="qwen3-rerank-worker")

    async def stop(self) -> None:
        """Score what is queued, then end the loop and the worker thread (the SIGTERM drain)."""
        self.queue.close()
        if self._task is not None:
            try:
                await self._task
            except Exception:  # the loop itself failed (a bug): stopping must still finish
                log.exception("the model worker loop failed")
        self._executor.shutdown(wait=True)

    async def _run(self) -> None:
        while await self.queue.wait_for_entry():
            if self.max_wait > 0:
                await self.queue.wait_for_tokens(self.max_batch_tokens, self.max_wait)
            batch = self.queue.next_batch(self.max_batch_tokens)
            if batch:
                await self.step(batch)

    async def step(self, batch: list[Entry]) -> None:
        """Score one batch and resolve each entry's future with its scores or its step's error."""
        now = time.perf_counter()
        for entry in batch:
            self.metrics.queue_wait.observe(now - entry.enqueued)
        tracing.dequeued(batch)
        failure = self.model_failure() if self.model_failure is not None else None
        if failure is not None:  # the weights the session reads changed: no answer rather than a wrong one
            for entry in batch:
                if not entry.future.done():
                    entry.future.set_exception(ModelChanged(failure))
            return
        # One call per score kind (raw or probability); nearly always one.
        for raw in (False, True):
            group = [entry for entry in batch if entry.raw is raw]
            if group:
                await self._score_group(group, raw=raw)

    async def _score_group(self, group: list[Entry], *, raw: bool) -> None:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        call = functools.partial(
            self.model.score_requests_with_best_chunks,
            [entry.request for entry in group],
            raw=raw,
            should_stop=lambda: all(entry.gone.is_set() for entry in group),  # asked on the model thread
        )
        unscored = 0
        traced = tracing.start_model_step(group, raw=raw)  # None unless a request of the group is traced
        try:
            scores = await loop.run_in_executor(self._executor, call)
            error: Exception | None = None
        except ScoringCancelled as exc:  # every request of the group was given up: no one to answer
            scores, error, unscored = [], exc, exc.unscored
            self.metrics.cancelled_documents.inc(unscored)
            log.info(
                "model step stopped: its %d request(s) were given up, %d sequence(s) left unscored",
                len(group),
                unscored,
            )
        except RerankError as exc:  # the user can act on it: its message goes to the client
            scores, error = [], exc
        except Exception:  # logged with its traceback here; the client gets a generic 500
            log.exception("model step failed for %d request(s)", len(group))
            scores, error = [], WorkerError("the model failed on this batch")
        if traced is not None:
            traced.end(error, unscored)
        self.metrics.observe_batch(
            requests=len(group),
            documents=sum(len(entry.request) for entry in group) - unscored,
            tokens=sum(entry.tokens for entry in group),
            seconds=time.perf_counter() - started,
        )
        for i, entry in enumerate(group):
            if entry.future.done():  # given up while the model ran
                continue
            if error is None:
                entry.future.set_result(scores[i])
            else:
                entry.future.set_exception(error)
