"""What the public calls return, and how token-sequence gaps become per-document results.

The model runner (:mod:`~qwen3_rerank.model_runner`) gives one yes − no gap per token sequence;
here those gaps become probabilities (or stay gaps with ``raw``), a chunked document's windows
become one score and its best window, and scores become a best-first order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .chunking import Chunk, aggregate
from .request_builder import ScoringRequest


@dataclass(frozen=True)
class RerankResult:
    """One ranked document (what :meth:`Reranker.rerank <qwen3_rerank.Reranker.rerank>` returns).

    Attributes:
        index: the document's position in the input.
        score: its relevance score.
        document: its text, unless the call asked for none.
        best_chunk: with chunking, the window of the document that scored best.
    """

    index: int
    score: float
    document: str | None = None
    #: With chunking: the window of the document that scored best.
    best_chunk: Chunk | None = None

    def to_dict(self) -> dict[str, Any]:
        """The result as a JSON-ready dict; ``document`` and ``best_chunk`` only when set."""
        data: dict[str, Any] = {"index": self.index, "score": self.score}
        if self.document is not None:
            data["document"] = self.document
        if self.best_chunk is not None:
            data["best_chunk"] = self.best_chunk.to_dict()
        return data


@dataclass(frozen=True)
class ScoredDocument:
    """A document's score and, with chunking, its best window.

    What :meth:`Reranker.score_requests_with_best_chunks
    <qwen3_rerank.Reranker.score_requests_with_best_chunks>` returns per document.
    """

    score: float
    best_chunk: Chunk | None = None


def sigmoid(gap: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """``softmax([yes, no])[0]`` from the gap ``yes - no``, in float64 without overflow.

    Args:
        gap: yes − no logit gaps.

    Returns:
        The probabilities of "yes", float64, the shape of ``gap``.
    """
    gap = np.asarray(gap, dtype=np.float64)
    result: npt.NDArray[np.float64] = np.exp(-np.logaddexp(0.0, -gap))
    return result


def scored_documents(request: ScoringRequest, values: npt.NDArray[np.float64]) -> list[ScoredDocument]:
    """One result per document of ``request`` from one value per token sequence.

    Args:
        request: the prepared request (its windows and aggregation, with chunking).
        values: one score per sequence of ``request``, in order.

    Returns:
        Per document, its score; with chunking, its windows' aggregated score and the window that
        scored highest (the first of equals).
    """
    if request.window_counts is None or request.chunks is None:
        return [ScoredDocument(float(v)) for v in values]
    docs: list[ScoredDocument] = []
    start = 0
    for count in request.window_counts:
        window_values = values[start : start + count]
        best = start + int(np.argmax(window_values))
        docs.append(ScoredDocument(aggregate(window_values, request.aggregation), request.chunks[best]))
        start += count
    return docs


def best_first(scores: Sequence[float], top_k: int | None = None) -> list[int]:
    """Indices of ``scores``, highest first; ties keep input order; at most ``top_k`` of them.

    Args:
        scores: one score per document.
        top_k: how many to keep (None: all).

    Returns:
        Document indices, best first.
    """
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    return order if top_k is None else order[:top_k]
