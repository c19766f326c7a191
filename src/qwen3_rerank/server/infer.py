"""One rerank request from parameters to scores (TEI's ``core/src/infer.rs``).

:meth:`Infer.rerank` admits the request (a :class:`~.admission.Permit`, or 429), tokenizes it
in a thread (so a long text does not stall the event loop), queues it for the worker and awaits
its scores, all within the request timeout. Library and worker failures become
:class:`~.api_errors.ApiError` here, the one place that knows which status each deserves.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from ..errors import InputError, RerankError
from ..reranker import ScoredDocument, ScoringRequest
from .admission import Admission
from .api_errors import ApiError
from .model import RerankModel
from .request_queue import QueueClosed, RequestQueue
from .worker import Worker, WorkerError


@dataclass(frozen=True)
class RerankParams:
    """What a route asks of the model, whichever API shape it came in."""

    query: str
    texts: list[str]
    instruction: str | None = None
    #: the logit gap ``yes - no`` instead of the probability of "yes"
    raw: bool = False
    #: False: a text longer than ``max_doc_tokens`` is refused (422) instead of cut
    truncate: bool = True
    max_doc_tokens: int | None = None
    #: cut a long text's start off (keep its end) instead of its end
    cut_start: bool = False
    #: windows instead of cutting ("max", "mean" or "first"); every token of every text is read
    chunking: str | None = None
    chunk_tokens: int = 512
    chunk_overlap: int = 64


@dataclass(frozen=True)
class Scored:
    """The prepared request (token counts, cut flags) and each document's score."""

    request: ScoringRequest
    documents: list[ScoredDocument] = field(default_factory=list)


def prepare(model: RerankModel, params: RerankParams) -> ScoringRequest:
    """Tokenize one request as its parameters say (blocking: run it in a thread)."""
    if params.chunking:
        return model.prepare(
            params.query,
            params.texts,
            instruction=params.instruction,
            truncate=params.truncate,
            chunking=params.chunking,
            chunk_tokens=params.chunk_tokens,
            chunk_overlap=params.chunk_overlap,
        )
    limit = params.max_doc_tokens
    if not params.truncate:
        if limit is not None:
            for i, text in enumerate(params.texts):
                if model.tokenizer.cut_text(text, limit) != text:
                    raise InputError(f"document {i} is longer than {limit} tokens and truncation is off")
        return model.prepare(params.query, params.texts, instruction=params.instruction, truncate=False)
    if params.cut_start and limit is not None:
        texts = [model.tokenizer.cut_text_start(text, limit) for text in params.texts]
        return model.prepare(params.query, texts, instruction=params.instruction, truncate=True)
    return model.prepare(
        params.query, params.texts, instruction=params.instruction, truncate=True, max_doc_tokens=limit
    )


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

    async def rerank(self, params: RerankParams) -> Scored:
        """The request's scores; :class:`ApiError` 429, 422, 500, 503 or 504 when it cannot have them."""
        with self.admission.try_acquire():
            try:
                return await asyncio.wait_for(self._prepare_and_score(params), self.timeout)
            except asyncio.TimeoutError:
                raise ApiError(504, "timeout", f"request took longer than {self.timeout:g} s") from None
            except QueueClosed:
                raise ApiError(503, "unavailable", "the server is stopping", {"Retry-After": "1"}) from None
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
            return await self._prepare_and_score(RerankParams("warm-up query", ["warm-up document"]))

    async def _prepare_and_score(self, params: RerankParams) -> Scored:
        request = await asyncio.to_thread(prepare, self.model, params)
        entry = self.queue.put(request, raw=params.raw)  # QueueClosed once the server is stopping
        if not self.worker.running:  # a bug, not the client's: 500 rather than a wait for the timeout
            entry.future.cancel()
            raise RuntimeError("the model worker is not running")
        # A timeout or a gone client cancels this wait and with it the entry's future: the queue
        # then drops the entry, or the worker leaves its scores unset if it already ran it.
        return Scored(request, await entry.future)
