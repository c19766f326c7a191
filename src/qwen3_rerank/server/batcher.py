"""Micro-batching across requests: one inference worker fed by an asyncio queue.

Each HTTP request is tokenized on its own (:meth:`Reranker.prepare`) and queued as a job. One
loop takes the oldest job, gathers the jobs queued behind it until their tokens reach the
batch budget (or ``max_wait`` has passed), and hands them all to
:meth:`Reranker.score_requests` in one call on a single worker thread; each job then gets its
own scores back. While the model runs, new requests pile up and go together into the next step,
so the busier the server, the bigger its batches. The scoring itself (batch planning, padding,
the score graph, shared-prefix reuse) is the library's; nothing here scores.

Admission control: at most ``max_queued`` requests are admitted and not answered at once; the
next one is refused (:class:`QueueFull` → 429). A job whose client gave up (timeout) before the
model took it is dropped without being scored.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..errors import RerankError
from ..reranker import Reranker, ScoringRequest
from .metrics import Metrics

log = logging.getLogger("qwen3_rerank.server")


class QueueFull(Exception):
    """Too many requests admitted and not answered yet."""


class WorkerError(Exception):
    """The model failed on a batch for a reason that is not the client's (logged, never shown)."""


@dataclass(eq=False)
class _Job:
    request: ScoringRequest
    raw: bool
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)

    @property
    def tokens(self) -> int:
        return self.request.num_tokens


class Batcher:
    def __init__(
        self,
        reranker: Reranker,
        metrics: Metrics,
        *,
        max_batch_tokens: int,
        max_wait: float,
        max_queued: int,
        step_delay: float = 0.0,
    ) -> None:
        self.reranker = reranker
        self.metrics = metrics
        self.max_batch_tokens = max_batch_tokens
        self.max_wait = max_wait
        self.max_queued = max_queued
        self.step_delay = step_delay
        self._pending: collections.deque[_Job] = collections.deque()
        self._wakeup: asyncio.Event | None = None
        self._admitted = 0
        self._task: asyncio.Task | None = None
        # One thread: the model is run by one worker, one step at a time.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qwen3-rerank-worker")

    # -- admission -------------------------------------------------------------------------------

    def acquire(self) -> None:
        """Admit one request or raise :class:`QueueFull`; pair with :meth:`release`."""
        if self._admitted >= self.max_queued:
            raise QueueFull(f"server busy: {self._admitted} requests in progress (limit {self.max_queued})")
        self._admitted += 1
        self.metrics.queue_depth.set(self._admitted)

    def release(self) -> None:
        self._admitted -= 1
        self.metrics.queue_depth.set(self._admitted)

    @property
    def admitted(self) -> int:
        return self._admitted

    # -- life cycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="qwen3-rerank-batcher")

    async def stop(self) -> None:
        """Finish the queued jobs, then stop the loop and the worker thread."""
        while self._pending:
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._worker.shutdown(wait=True)

    # -- submitting ------------------------------------------------------------------------------

    async def score(self, request: ScoringRequest, *, raw: bool = False) -> list[float]:
        """Scores of one admitted request's documents, computed with other requests' documents.

        The caller holds an admission (:meth:`acquire`); from here on the job owns it and gives it
        back once the model is done with it or drops it. Cancelling the wait (a timeout) drops a
        job the model has not taken yet.
        """
        if self._task is None or self._task.done():
            self.release()
            raise RuntimeError("batcher is not running")
        job = _Job(request, raw, asyncio.get_running_loop().create_future())
        self._pending.append(job)
        self._wakeup.set()
        try:
            return await asyncio.shield(job.future)
        except asyncio.CancelledError:
            job.future.cancel()  # the loop drops it if the model has not taken it yet
            raise

    # -- the loop --------------------------------------------------------------------------------

    async def _next_job(self, timeout: float | None) -> _Job | None:
        """The oldest live job, waiting at most ``timeout`` seconds (None: forever)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            while self._pending:
                job = self._pending.popleft()
                if job.future.cancelled():  # its client is gone: nothing to score
                    self.release()
                    continue
                return job
            self._wakeup.clear()
            if deadline is None:
                await self._wakeup.wait()
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except asyncio.TimeoutError:
                return None

    async def _loop(self) -> None:
        while True:
            first = await self._next_job(None)
            batch, tokens = [first], first.tokens
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.max_wait
            while tokens < self.max_batch_tokens:
                job = await self._next_job(max(0.0, deadline - loop.time()))
                if job is None:
                    break
                if tokens + job.tokens > self.max_batch_tokens:
                    self._pending.appendleft(job)  # first in the next step
                    break
                batch.append(job)
                tokens += job.tokens
            await self._step(batch)

    async def _step(self, batch: list[_Job]) -> None:
        loop = asyncio.get_running_loop()
        now = time.perf_counter()
        for job in batch:
            self.metrics.queue_wait.observe(now - job.enqueued)
        if self.step_delay:
            await asyncio.sleep(self.step_delay)
        # One score_requests call per score kind (raw or probability); nearly always one.
        for raw in (False, True):
            group = [job for job in batch if job.raw is raw]
            if not group:
                continue
            started = time.perf_counter()
            try:
                scores = await loop.run_in_executor(
                    self._worker,
                    functools.partial(self.reranker.score_requests_detailed, [job.request for job in group], raw=raw),
                )
                error = None
            except RerankError as exc:
                scores, error = None, exc
            except Exception:  # logged with its traceback here; the client gets a generic 500
                log.exception("model step failed for %d request(s)", len(group))
                scores, error = None, WorkerError("the model failed on this batch")
            self.metrics.observe_batch(
                requests=len(group),
                documents=sum(len(job.request) for job in group),
                tokens=sum(job.tokens for job in group),
                seconds=time.perf_counter() - started,
            )
            for i, job in enumerate(group):
                if not job.future.done():
                    if error is None:
                        job.future.set_result(scores[i])
                    else:
                        job.future.set_exception(error)
                self.release()
