"""Running prepared requests through the model: batch plans, prefix passes, progress, stop checks.

:class:`ModelRunner` takes :class:`~qwen3_rerank.request_builder.ScoringRequest` values and
returns one yes − no logit gap per token sequence; it knows nothing of text, templates or
chunking. Two paths:

* plain: every sequence of every request, batched together under a token budget
  (:func:`~qwen3_rerank.batching.plan_batches`), padded on the side the graph needs;
* prefix pass: when a request has two or more sequences that start with its shared prefix (and
  the graph returns its KV cache), the prefix runs once and its cache is fed with the rest of each
  sequence (:func:`prefix_pass_rows` says which).

On either path a row longer than the engine's ``slice_tokens`` gets a batch of its own, which the
engine feeds through in slices (:mod:`qwen3_rerank.layered`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from .batching import pad, plan_batches
from .errors import ScoringCancelled
from .request_builder import ScoringRequest

Gaps = npt.NDArray[np.float64]


class ScoringEngine(Protocol):
    """What the runner needs of :class:`~qwen3_rerank.engine.OnnxEngine` (a test passes a fake)."""

    @property
    def is_score_graph(self) -> bool:
        """True for the score graph (right padding, KV-cache prefix), False for a full graph (left padding)."""
        ...

    @property
    def slice_tokens(self) -> int | None:
        """A row with more new tokens than this runs alone, in slices (None: no slicing)."""
        ...

    @property
    def max_batch_with_past(self) -> int | None:
        """The most rows a batch fed with a KV-cache prefix may hold (None: no limit of its own)."""
        ...

    def gaps(
        self,
        input_ids: npt.NDArray[np.int64],
        attention_mask: npt.NDArray[np.int64],
        yes_id: int,
        no_id: int,
        past: Mapping[str, Any] | None = None,
    ) -> Gaps:
        """``[batch]`` yes − no gaps at each row's last token."""
        ...

    def prefix_cache(self, prefix_ids: Sequence[int]) -> dict[str, npt.NDArray[np.floating[Any]]]:
        """The KV cache of one token sequence (batch of 1), per past input name."""
        ...

    def to_device(self, array: npt.NDArray[np.floating[Any]]) -> Any:
        """``array`` where the session computes."""
        ...


class Progress(Protocol):
    """A progress bar (tqdm's interface): advanced by rows scored, closed at the end."""

    def update(self, n: int) -> object:
        """Count ``n`` more rows done."""
        ...

    def close(self) -> None:
        """End the bar."""
        ...


def prefix_pass_rows(request: ScoringRequest, prefix_reuse: bool) -> list[int]:
    """The sequences of ``request`` that run through a prefix pass, by index.

    A prefix pass pays off only when two or more sequences share the prefix; with fewer (or with
    ``prefix_reuse`` off) every sequence takes the plain path and this is empty.

    Args:
        request: the prepared request (its ``reuses_prefix`` marks).
        prefix_reuse: whether the model and the caller allow prefix reuse at all.

    Returns:
        Sequence indices, ascending.
    """
    rows = [i for i, ok in enumerate(request.reuses_prefix) if ok] if prefix_reuse else []
    return rows if len(rows) >= 2 else []


class StopCheck:
    """Asks ``should_stop`` before each model batch and counts the sequences still unscored.

    Args:
        should_stop: the caller's check (called from the scoring thread).
        total: the sequences of the whole call.
    """

    def __init__(self, should_stop: Callable[[], bool], total: int) -> None:
        self.should_stop = should_stop
        self.total = total
        self.left = total

    def check(self, rows: int) -> None:
        """Before a batch of ``rows`` sequences: raise :class:`ScoringCancelled`, or count them done."""
        if self.should_stop():
            raise ScoringCancelled(self.left, self.total)
        self.left -= rows


def tqdm_progress(total: int, enabled: bool) -> Progress | None:
    """A tqdm bar over ``total`` pairs when ``enabled`` and there is more than one, else None."""
    if not enabled or total < 2:
        return None
    from tqdm.auto import tqdm

    bar: Progress = tqdm(total=total, desc="reranking", unit="pair")
    return bar


class ModelRunner:
    """Scores the token sequences of prepared requests, batched across requests.

    Args:
        engine: the ONNX session (or a fake with the same calls).
        pad_id: the token id padded positions get (only ever seen under a zero mask).
        yes_id: the token id of "yes".
        no_id: the token id of "no".
        batch_size: most sequences in one model batch.
        max_batch_tokens: most tokens in one model batch once padded.
        prefix_reuse: run a request's shared prefix once for its sequences that start with it.
        make_progress: given the sequence count, a progress bar or None (default: none).
    """

    def __init__(
        self,
        engine: ScoringEngine,
        *,
        pad_id: int,
        yes_id: int,
        no_id: int,
        batch_size: int,
        max_batch_tokens: int,
        prefix_reuse: bool,
        make_progress: Callable[[int], Progress | None] | None = None,
    ) -> None:
        self.engine = engine
        self.pad_id = pad_id
        self.yes_id = yes_id
        self.no_id = no_id
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.prefix_reuse = prefix_reuse
        self.make_progress = make_progress

    def gaps(self, requests: Sequence[ScoringRequest], should_stop: Callable[[], bool] | None = None) -> list[Gaps]:
        """One yes − no gap per token sequence of each request, in order.

        Args:
            requests: the prepared requests.
            should_stop: asked before each model batch; once true the call stops.

        Returns:
            One float64 array per request, one gap per sequence.

        Raises:
            ScoringCancelled: ``should_stop`` returned True (``unscored`` counts what was left).
        """
        total = sum(len(r) for r in requests)
        stop = None if should_stop is None else StopCheck(should_stop, total)
        gaps = np.empty(total, dtype=np.float64)
        plain: list[int] = []
        offsets, start = [], 0
        for request in requests:
            offsets.append(start)
            start += len(request)
        progress = self.make_progress(total) if self.make_progress is not None else None
        try:
            for request, offset in zip(requests, offsets, strict=True):
                reuse = prefix_pass_rows(request, self.prefix_reuse)
                if reuse:
                    gaps[[offset + i for i in reuse]] = self._prefix_gaps(request, reuse, progress, stop)
                reused = set(reuse)
                plain.extend(offset + i for i in range(len(request)) if i not in reused)
            if plain:
                flat = [seq for request in requests for seq in request.sequences]
                gaps[plain] = self._plain_gaps([flat[i] for i in plain], progress, stop)
        finally:
            if progress is not None:
                progress.close()
        return [gaps[o : o + len(r)] for r, o in zip(requests, offsets, strict=True)]

    def _plain_gaps(
        self, sequences: Sequence[Sequence[int]], progress: Progress | None, stop: StopCheck | None
    ) -> Gaps:
        """``logit(yes) - logit(no)`` at the last position for each whole token sequence, float64."""
        gaps = np.empty(len(sequences), dtype=np.float64)
        batches = self._plan([len(s) for s in sequences], self.batch_size)
        # A full graph is read at its last column, so it needs left padding; the score graph finds
        # each row's last token and gets right padding, which every attention kernel supports.
        side = "right" if self.engine.is_score_graph else "left"
        for batch in batches:
            if stop is not None:
                stop.check(len(batch))
            ids, mask = pad([sequences[i] for i in batch], self.pad_id, side)
            gaps[batch] = self.engine.gaps(ids, mask, self.yes_id, self.no_id)
            if progress is not None:
                progress.update(len(batch))
        return gaps

    def _plan(self, lengths: list[int], max_batch_size: int) -> list[list[int]]:
        """Batches under the token budget; a row longer than the engine's slice runs alone, so
        that the engine can feed it through in slices (its memory then stays that of a slice)."""
        limit = self.engine.slice_tokens
        long = [i for i, n in enumerate(lengths) if limit is not None and n > limit]
        if not long:
            return plan_batches(lengths, max_batch_tokens=self.max_batch_tokens, max_batch_size=max_batch_size)
        short = [i for i, n in enumerate(lengths) if limit is None or n <= limit]
        batches = plan_batches(
            [lengths[i] for i in short], max_batch_tokens=self.max_batch_tokens, max_batch_size=max_batch_size
        )
        return [[i] for i in sorted(long, key=lambda i: -lengths[i])] + [[short[j] for j in b] for b in batches]

    def _prefix_gaps(
        self, request: ScoringRequest, indices: list[int], progress: Progress | None, stop: StopCheck | None
    ) -> Gaps:
        """Gaps of the sequences of one request at ``indices``, which share its prefix tokens.

        The prefix runs once (batch of 1); its KV cache is then fed, repeated per row, with the
        remaining tokens of each document. The attention mask covers prefix + document, and the
        positions continue after the prefix, so every token sees exactly what it sees in the
        whole prompt.
        """
        shared = request.shared_prefix
        if stop is not None:
            stop.check(0)
        cache = self.engine.prefix_cache(request.sequences[indices[0]][:shared])
        parts = [request.sequences[i][shared:] for i in indices]
        gaps = np.empty(len(parts), dtype=np.float64)
        batches = self._plan([len(p) for p in parts], self.engine.max_batch_with_past or self.batch_size)
        widest = max(len(b) for b in batches)
        # One contiguous copy per request; each batch takes its first rows (still contiguous).
        repeated = {
            name: np.ascontiguousarray(np.broadcast_to(value, (widest, *value.shape[1:])))
            for name, value in cache.items()
        }
        by_rows: dict[int, dict[str, Any]] = {}
        for batch in batches:
            if stop is not None:
                stop.check(len(batch))
            ids, mask = pad([parts[i] for i in batch], self.pad_id, "right")
            full_mask = np.concatenate([np.ones((len(batch), shared), dtype=np.int64), mask], axis=1)
            rows = len(batch)
            if rows not in by_rows:  # on CUDA: copied to the device once per batch size
                by_rows[rows] = {name: self.engine.to_device(value[:rows]) for name, value in repeated.items()}
            gaps[batch] = self.engine.gaps(ids, full_mask, self.yes_id, self.no_id, past=by_rows[rows])
            if progress is not None:
                progress.update(len(batch))
        return gaps
