"""A fake ONNX engine for unit tests of the model runner and the Reranker facade: no model, no export.

Its "yes − no gap" for a row is a function of the row's real tokens only: the sum of
``(position + 1) * (token id % 97)`` over the whole prompt, so it depends on every token and on
its position. The prefix pass gives the same number as the plain path when (and only when) the
runner feeds the right cache, mask and tokens, so the tests can check the runner's bookkeeping
(order, padding, batch limits, prefix reuse) by the numbers it returns. Every call is recorded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def expected_gap(sequence: Sequence[int]) -> float:
    """The fake's gap for one whole token sequence (what any correct path must return)."""
    return float(sum((pos + 1) * (tok % 97) for pos, tok in enumerate(sequence))) / 1000.0


class FakeEngine:
    """The calls :class:`~qwen3_rerank.model_runner.ModelRunner` makes, on plain numpy."""

    def __init__(
        self,
        *,
        is_score_graph: bool = True,
        supports_prefix_cache: bool = True,
        max_batch_with_past: int | None = None,
        slice_tokens: int | None = None,
    ) -> None:
        self.is_score_graph = is_score_graph
        self.supports_prefix_cache = supports_prefix_cache
        self.max_batch_with_past = max_batch_with_past
        self.slice_tokens = slice_tokens
        #: (rows, width, with_past, padding side seen) of each gaps() call
        self.batches: list[tuple[int, int, bool, str]] = []
        #: the prefix token ids of each prefix_cache() call
        self.prefixes: list[list[int]] = []

    def prefix_cache(self, prefix_ids: Sequence[int]) -> dict[str, np.ndarray]:
        self.prefixes.append(list(prefix_ids))
        # The "cache" is the prefix itself, [1, 1, len, 1], as a KV tensor would be shaped.
        return {"past.0": np.asarray(prefix_ids, dtype=np.float64).reshape(1, 1, -1, 1)}

    def to_device(self, array: np.ndarray) -> np.ndarray:
        return array

    def gaps(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        yes_id: int,
        no_id: int,
        past: Mapping[str, Any] | None = None,
    ) -> np.ndarray:
        rows, new = input_ids.shape
        past_ids = None if past is None else past["past.0"][:, 0, :, 0].astype(np.int64)
        past_len = 0 if past_ids is None else past_ids.shape[1]
        assert attention_mask.shape == (rows, past_len + new)
        new_mask = attention_mask[:, past_len:]
        side = "left" if (new_mask[:, 0] == 0).any() else "right" if (new_mask[:, -1] == 0).any() else "none"
        self.batches.append((rows, new, past is not None, side))
        if past is None and not self.is_score_graph:
            # a full graph reads the last column: every row must end there (left padding)
            assert (attention_mask[:, -1] == 1).all(), "a full graph needs left padding"
        out = np.empty(rows, dtype=np.float64)
        for r in range(rows):
            tokens = [] if past_ids is None else list(past_ids[r])
            tokens += [int(t) for t, m in zip(input_ids[r], new_mask[r], strict=True) if m]
            out[r] = expected_gap(tokens)
        return out
