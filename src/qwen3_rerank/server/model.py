"""What the server needs of a model: the part of :class:`~qwen3_rerank.Reranker` it calls.

Written as protocols so that every unit of the server (infer, worker, routes) can be driven in
tests by a small fake, for instance one that sleeps in ``score_requests_detailed``, instead of a
test-only hook in the production settings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from ..reranker import ScoredDocument, ScoringRequest


class TextCutter(Protocol):
    """The tokenizer's two ways of cutting a text to about ``max_tokens`` tokens."""

    def cut_text(self, text: str, max_tokens: int) -> str: ...

    def cut_text_start(self, text: str, max_tokens: int) -> str: ...


class RerankModel(Protocol):
    """Tokenize one request (:meth:`prepare`) and score many at once (:meth:`score_requests_detailed`)."""

    @property
    def tokenizer(self) -> TextCutter: ...

    @property
    def max_length(self) -> int: ...

    def prepare(
        self,
        query: str,
        documents: Sequence[str],
        *,
        instruction: str | None = None,
        truncate: bool = True,
        max_doc_tokens: int | None = None,
        chunking: str | None = None,
        chunk_tokens: int = 512,
        chunk_overlap: int = 64,
    ) -> ScoringRequest: ...

    def score_requests_detailed(
        self,
        requests: Sequence[ScoringRequest],
        *,
        raw: bool = False,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[list[ScoredDocument]]:
        """Scores per request; raises :class:`~qwen3_rerank.ScoringCancelled` once ``should_stop``
        (asked between model batches) is true."""
        ...
