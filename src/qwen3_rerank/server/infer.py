"""One rerank request from parameters to scores (TEI's ``core/src/infer.rs``).

:meth:`Infer.rerank` admits the request (a :class:`~.admission.Permit`, or 429), tokenizes it
in a thread (so a long text does not stall the event loop), queues it for the worker and awaits
its scores, all within the request timeout. Library and worker failures become
:class:`~.api_errors.ApiError` here, the one place that knows which status each deserves.
:meth:`Infer.rerank_groups` does the same for a request of several queries (vLLM's paired
scores): one permit and one timeout for all, one queue entry per query, so that each query's
prompt prefix still runs once for its texts.

A request is given up when its timeout passes (504) or its client goes away: uvicorn does not
cancel the handler then, it answers the app's next ``receive()`` with ``http.disconnect``, so
the route hands in ``client_gone``, a wait for that message, raced against the scoring here (an
ASGI server or test transport that cancels the handler task instead is handled the same way).
Either way the wait on the queue entries is cancelled: the queue drops it if the worker has not
taken it, else the worker's step stops between model batches once all its requests are gone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from ..chunking import DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_TOKENS, ChunkingOptions
from ..errors import InputError, RerankError
from ..request_builder import ScoringRequest
from ..results import ScoredDocument
from ..truncation import Truncation
from . import tracing
from .admission import Admission
from .api_errors import ApiError
from .model import RerankModel
from .model_watch import ModelChanged
from .request_queue import Entry, QueueClosed, RequestQueue
from .worker import Worker, WorkerError

log = logging.getLogger("qwen3_rerank.server")


@dataclass(frozen=True)
class RerankParams:
    """What a route asks of the model, whichever API shape it came in."""

    query: str
    texts: list[str]
    instruction: str | None = None
    #: the logit gap ``yes - no`` instead of the probability of "yes"
    raw: bool = False
    #: False: a text longer than ``max_doc_tokens`` (or the model's ``max_length``) is refused (422) instead of cut
    truncate: bool = True
    max_doc_tokens: int | None = None
    #: which end a text over ``max_doc_tokens`` loses: "right" its end, "left" its start (TEI)
    truncation_direction: Literal["right", "left"] = "right"
    #: windows instead of cutting ("max", "mean" or "first"); every token of every text is read
    chunking: str | None = None
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS
    chunk_overlap: int = DEFAULT_CHUNK_OVERLAP
    #: cut each text so that its whole prompt (template, instruction, query, text) has at most this
    #: many tokens (vLLM's ``truncate_prompt_tokens``); None: the model's ``max_length``
    max_prompt_tokens: int | None = None

    def chunking_options(self) -> ChunkingOptions | None:
        """The chunking the request asks for, or None.

        Raises:
            InputError: out-of-range chunking options (a 422, raised where :class:`Infer` maps it).
        """
        return ChunkingOptions(self.chunking, self.chunk_tokens, self.chunk_overlap) if self.chunking else None

    def truncation(self) -> Truncation:
        """The library's truncation policy for this request.

        With chunking a document is read whole, in windows: ``max_doc_tokens`` does not apply.

        Raises:
            InputError: an out-of-range ``max_doc_tokens``.
        """
        limit = None if self.chunking else self.max_doc_tokens
        return Truncation(enabled=self.truncate, direction=self.truncation_direction, max_doc_tokens=limit)


@dataclass(frozen=True)
class Scored:
    """The prepared request (token counts, cut flags) and each document's score."""

    request: ScoringRequest
    documents: list[ScoredDocument] = field(default_factory=list)


def prepare(model: RerankModel, params: RerankParams) -> ScoringRequest:
    """Tokenize one request as its parameters say (blocking: run it in a thread)."""
    if params.max_prompt_tokens is not None and params.max_prompt_tokens < model.max_length:
        return _prepare_within(model, params, params.max_prompt_tokens)
    return model.prepare(
        params.query,
        params.texts,
        instruction=params.instruction,
        chunking=params.chunking_options(),
        truncation=params.truncation(),
    )


#: tries at fitting a prompt budget: cutting a text to N tokens can leave it a token or two longer
#: than N once it is tokenized inside the prompt (merges across the cut), so the cut is redone
_FIT_TRIES = 4


def _prepare_within(model: RerankModel, params: RerankParams, budget: int) -> ScoringRequest:
    """Like :func:`prepare`, each text cut at its end so that its whole prompt fits ``budget`` tokens.

    The model cuts only to its own ``max_length``, so the text's share is measured here: the
    prompt around a one-word text gives the template's, instruction's and query's tokens.
    """
    if budget < 1:
        raise InputError(f"truncate_prompt_tokens must be at least 1, got {budget}")
    around = model.prepare(params.query, ["x"], instruction=params.instruction).num_tokens - 1
    room = budget - around
    if room < 1:
        raise InputError(
            f"truncate_prompt_tokens={budget} leaves no room for the text: the prompt template, instruction "
            f"and query alone take {around} tokens"
        )
    limit = room if params.max_doc_tokens is None else min(room, params.max_doc_tokens)

    def cut_to(limit: int) -> ScoringRequest:
        return model.prepare(
            params.query, params.texts, instruction=params.instruction, truncation=Truncation(max_doc_tokens=limit)
        )

    request = cut_to(limit)
    for _ in range(_FIT_TRIES):
        over = max(len(sequence) for sequence in request.sequences) - budget
        if over <= 0 or limit <= 1:
            break
        limit = max(1, limit - over)
        request = cut_to(limit)
    return request


def prepare_all(model: RerankModel, groups: Sequence[RerankParams]) -> list[ScoringRequest]:
    """:func:`prepare` for each group (one per distinct query of a request), in one thread hop."""
    return [prepare(model, params) for params in groups]


class ClientGone(Exception):
    """The client closed the connection before its answer."""


@dataclass
class _Attempt:
    """What one request reached: its queue entries (one per group), once it has them."""

    entries: list[Entry] = field(default_factory=list)


class Infer:
    """Admission, tokenizing, the queue and the timeout, tied together for one request."""

    def __init__(
        self, model: RerankModel, admission: Admission, queue: RequestQueue, worker: Worker, *, timeout: float
    ) -> None:
        self.model = model
        self.admission = admission
        self.queue = queue
        self.worker = worker
        self.timeout = timeout

    async def rerank(self, params: RerankParams, client_gone: Callable[[], Awaitable[object]] | None = None) -> Scored:
        """The request's scores; :class:`ApiError` 429, 422, 500, 503 or 504 when it cannot have them.

        ``client_gone``: a coroutine function that returns once the client has gone (then the
        request is given up, and answered 499, which no one reads but the access log).
        """
        return (await self.rerank_groups([params], client_gone))[0]

    async def rerank_groups(
        self, groups: Sequence[RerankParams], client_gone: Callable[[], Awaitable[object]] | None = None
    ) -> list[Scored]:
        """One request made of several queries' groups (vLLM's paired scores): one permit, one
        timeout, one queue entry per group; the errors are :meth:`rerank`'s."""
        with self.admission.try_acquire():
            attempt = _Attempt()
            try:
                return await asyncio.wait_for(self._score_while_connected(groups, attempt, client_gone), self.timeout)
            except asyncio.TimeoutError:
                self._given_up(groups, attempt, "timeout")
                raise ApiError(504, "timeout", f"request took longer than {self.timeout:g} s") from None
            except ClientGone:
                self._given_up(groups, attempt, "disconnect")
                raise ApiError(499, "client_closed", "the client closed the connection") from None
            except asyncio.CancelledError:  # the handler itself was cancelled: its client is gone
                self._given_up(groups, attempt, "disconnect")
                raise
            except QueueClosed:
                raise ApiError(503, "unavailable", "the server is stopping", {"Retry-After": "1"}) from None
            except ModelChanged as exc:
                raise ApiError(503, "model_changed", str(exc)) from None
            except InputError as exc:
                raise ApiError(422, "invalid_request", str(exc)) from None
            except (WorkerError, RerankError) as exc:
                raise ApiError(500, "internal_error", str(exc)) from None

    async def warm_up(self) -> Scored:
        """One request through the whole path, with no timeout.

        The model's first run can take far longer than any request (kernels load, caches fill),
        and no client waits on it: a short ``--request-timeout`` must not stop the server starting.
        """
        with self.admission.try_acquire():
            return (await self._prepare_and_score([RerankParams("warm-up query", ["warm-up document"])]))[0]

    def _given_up(self, groups: Sequence[RerankParams], attempt: _Attempt, reason: str) -> None:
        """Count a cancelled request and its documents that will not be scored because of it."""
        metrics = self.worker.metrics
        metrics.cancelled_requests(reason).inc()
        if not attempt.entries:  # still tokenizing: none of it reaches the model
            metrics.cancelled_documents.inc(sum(len(params.texts) for params in groups))
        for entry in attempt.entries:
            if not entry.started:  # queued: the queue drops it
                metrics.cancelled_documents.inc(len(entry.request))
            # else the worker counts what its stopped step left unscored (nothing, if shared with a live one)

    async def _score_while_connected(
        self, groups: Sequence[RerankParams], attempt: _Attempt, client_gone: Callable[[], Awaitable[object]] | None
    ) -> list[Scored]:
        """The scores, or :class:`ClientGone` as soon as ``client_gone`` returns."""
        if client_gone is None:
            return await self._prepare_and_score(groups, attempt)
        scoring = asyncio.ensure_future(self._prepare_and_score(groups, attempt))
        watching = asyncio.ensure_future(client_gone())
        try:
            await asyncio.wait((scoring, watching), return_when=asyncio.FIRST_COMPLETED)
            if not scoring.done() and watching.exception() is not None:  # cannot tell: just wait
                log.warning("cannot watch for the client leaving: %r", watching.exception())
                return await scoring
        finally:  # on a timeout too: cancelling `scoring` cancels the wait on the queue entry at once
            watching.cancel()
            if not scoring.done():
                scoring.cancel()
        if scoring.done() and not scoring.cancelled():
            return scoring.result()
        raise ClientGone

    async def _prepare_and_score(self, groups: Sequence[RerankParams], attempt: _Attempt | None = None) -> list[Scored]:
        trace = tracing.current()
        with trace.tokenizing():
            requests = await asyncio.to_thread(prepare_all, self.model, groups)
            trace.tokenized(requests)
        entries: list[Entry] = []
        try:
            for request, params in zip(requests, groups, strict=True):
                entries.append(self.queue.put(request, raw=params.raw))  # QueueClosed once the server is stopping
                trace.queued(entries[-1])
                if attempt is not None:
                    attempt.entries = entries
            if not self.worker.running:  # a bug, not the client's: 500 rather than a wait for the timeout
                raise RuntimeError("the model worker is not running")
            # A timeout or a gone client cancels this wait and with it the entries' futures: the
            # queue then drops them, or the worker leaves their scores unset if it already ran them.
            scores = await asyncio.gather(*(entry.future for entry in entries))
        except BaseException:  # one group failed (or all were given up): the others are not wanted
            for entry in entries:
                entry.future.cancel()
            raise
        return [Scored(request, documents) for request, documents in zip(requests, scores, strict=True)]
