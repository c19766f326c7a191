"""Long documents: overlapping token windows, scored one by one, and one score per document.

A document longer than the window is split on token boundaries of its own tokenization; each
window is scored like a document of its own (with the same query, so windows share the query's
prefix pass), and the document's score is the ``max`` (default), ``mean`` or ``first`` of its
windows' scores. The window that scored best is reported with its token and character offsets.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .errors import InputError

AGGREGATIONS = ("max", "mean", "first")
#: Default window length and overlap, in document tokens (library, CLI and server alike).
DEFAULT_CHUNK_TOKENS = 512
DEFAULT_CHUNK_OVERLAP = 64


@dataclass(frozen=True)
class Chunk:
    """One window of a document: its number and where it lies in tokens and characters."""

    index: int
    token_start: int
    token_end: int
    char_start: int
    char_end: int

    def to_dict(self) -> dict[str, int]:
        """The chunk as a JSON-ready dict of its five fields."""
        return asdict(self)


def check_chunking(aggregation: str, window_tokens: int, overlap: int) -> None:
    """Check the chunking options before any work.

    Args:
        aggregation: how window scores make a document's score, one of :data:`AGGREGATIONS`.
        window_tokens: document tokens per window (at least 1).
        overlap: tokens consecutive windows share (at least 0, less than ``window_tokens``).

    Raises:
        InputError: any of the three is out of its range.
    """
    if aggregation not in AGGREGATIONS:
        raise InputError(f"unknown chunking {aggregation!r}; choose one of: {', '.join(AGGREGATIONS)}")
    if not isinstance(window_tokens, int) or window_tokens < 1:
        raise InputError(f"chunk_tokens must be a positive integer, got {window_tokens!r}")
    if not isinstance(overlap, int) or not 0 <= overlap < window_tokens:
        raise InputError(f"chunk_overlap must be at least 0 and less than chunk_tokens, got {overlap!r}")


@dataclass(frozen=True)
class ChunkingOptions:
    """How long documents are split into windows and how the windows' scores make one score.

    One value instead of three keyword arguments passed along from call to call; checked once, when
    it is made. ``Reranker.score(..., chunking=ChunkingOptions("max", 256, 32))`` is the same as
    ``chunking="max", chunk_tokens=256, chunk_overlap=32``.

    Args:
        aggregation: ``"max"``, ``"mean"`` or ``"first"`` of the windows' scores.
        chunk_tokens: document tokens per window (at least 1).
        chunk_overlap: tokens consecutive windows share (at least 0, less than ``chunk_tokens``).

    Raises:
        InputError: any of the three is out of its range (see :func:`check_chunking`).
    """

    aggregation: str = "max"
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS
    chunk_overlap: int = DEFAULT_CHUNK_OVERLAP

    def __post_init__(self) -> None:
        check_chunking(self.aggregation, self.chunk_tokens, self.chunk_overlap)

    @classmethod
    def from_keywords(
        cls,
        chunking: str | ChunkingOptions | None,
        chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
        chunk_overlap: int = DEFAULT_CHUNK_OVERLAP,
    ) -> ChunkingOptions | None:
        """The options that the public keyword arguments ``chunking``, ``chunk_tokens``, ``chunk_overlap`` name.

        Args:
            chunking: None (no chunking), an aggregation name, or the options themselves.
            chunk_tokens: window length, with an aggregation name.
            chunk_overlap: window overlap, with an aggregation name.

        Returns:
            None without chunking, else the options.

        Raises:
            InputError: an out-of-range option, or ``chunking`` given as options together with a
                ``chunk_tokens`` or ``chunk_overlap`` other than the defaults (one of them would be
                ignored).
        """
        if chunking is None:
            return None
        if isinstance(chunking, ChunkingOptions):
            if (chunk_tokens, chunk_overlap) != (DEFAULT_CHUNK_TOKENS, DEFAULT_CHUNK_OVERLAP):
                raise InputError("give chunk_tokens and chunk_overlap inside ChunkingOptions, not next to it")
            return chunking
        return cls(chunking, chunk_tokens, chunk_overlap)


def split_windows(offsets: list[tuple[int, int]], text_length: int, window_tokens: int, overlap: int) -> list[Chunk]:
    """Windows over a text from its tokens' character ``offsets``.

    Each window but the last ends where the next token starts, so window texts are exact slices of
    the document; consecutive windows share ``overlap`` tokens.
    """
    count = len(offsets)
    if count <= window_tokens:
        return [Chunk(0, 0, count, 0, text_length)]
    stride = window_tokens - overlap
    chunks: list[Chunk] = []
    start = 0
    while True:
        end = min(start + window_tokens, count)
        char_start = offsets[start][0] if start else 0
        char_end = offsets[end][0] if end < count else text_length
        chunks.append(Chunk(len(chunks), start, end, char_start, char_end))
        if end == count:
            return chunks
        start += stride


def aggregate(values: np.ndarray, how: str) -> float:
    """A document's score from its windows' scores, in window order.

    Args:
        values: one score per window.
        how: ``"max"``, ``"mean"``, or anything else for the first window's score.

    Returns:
        The aggregated score.
    """
    if how == "max":
        return float(np.max(values))
    if how == "mean":
        return float(np.mean(values))
    return float(values[0])
