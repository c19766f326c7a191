"""What the server needs of a model: the part of :class:`~qwen3_rerank.Reranker` it calls.

Written as protocols so that every unit of the server (infer, worker, routes) can be driven in
tests by a small fake, for instance one that sleeps in ``score_requests_with_best_chunks``, instead
of a test-only hook in the production settings. The truncation policy is the library's
(:class:`~qwen3_rerank.truncation.Truncation`): a fake applies it with a tokenizer of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from ..chunking import ChunkingOptions
from ..request_builder import ScoringRequest
from ..results import ScoredDocument
from ..truncation import Truncation


class RerankModel(Protocol):
    """Tokenize one request (:meth:`prepare`) and score many at once (:meth:`score_requests_with_best_chunks`)."""

    @property
    def max_length(self) -> int: ...

    def prepare(
        self,
        query: str,
        documents: Sequence[str],
        *,
        instruction: str | None = None,
        chunking: str | ChunkingOptions | None = None,
        truncation: Truncation | None = None,
    ) -> ScoringRequest: ...

    def score_requests_with_best_chunks(
        self,
        requests: Sequence[ScoringRequest],
        *,
        raw: bool = False,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[list[ScoredDocument]]:
        """Scores per request; raises :class:`~qwen3_rerank.ScoringCancelled` once ``should_stop``
        (asked between model batches) is true."""
        ...
