"""Length-sorted, token-budgeted batches, padded on either side; results go back in input order."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def plan_batches(lengths: Sequence[int], *, max_batch_tokens: int, max_batch_size: int) -> list[list[int]]:
    """Group sequence indices into batches, longest first.

    A batch costs about ``len(batch) * longest`` tokens of compute once padded; it is closed when
    adding the next sequence would pass ``max_batch_tokens`` or ``max_batch_size``. A sequence
    longer than the budget gets a batch of its own. Sorting by length keeps padding small, and
    doing the longest first makes the peak memory show at the start of a job, not at its end.

    Args:
        lengths: the token count of each sequence.
        max_batch_tokens: the padded-token budget of one batch.
        max_batch_size: the most sequences in one batch.

    Returns:
        Batches of indices into ``lengths``; together they hold every index once.

    Raises:
        ValueError: ``max_batch_tokens`` or ``max_batch_size`` is below 1.
    """
    if max_batch_tokens < 1 or max_batch_size < 1:
        raise ValueError("max_batch_tokens and max_batch_size must be at least 1")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for index in order:
        length = lengths[index]
        grown = max(longest, length)
        if current and (len(current) + 1 > max_batch_size or grown * (len(current) + 1) > max_batch_tokens):
            batches.append(current)
            current, grown = [], length
        current.append(index)
        longest = grown
    if current:
        batches.append(current)
    return batches


def pad(sequences: Sequence[Sequence[int]], pad_id: int, side: str = "left") -> tuple[np.ndarray, np.ndarray]:
    """``input_ids`` and ``attention_mask`` (int64), padded to the longest sequence.

    Left padding puts every row's last token in the last column, which a graph that returns the
    last position's logits needs. Right padding keeps every row's tokens where they would be
    alone, which is what ONNX Runtime's GroupQueryAttention supports; the score graph finds each
    row's last token itself, so it takes either.

    Args:
        sequences: token ids, at least one sequence.
        pad_id: the id the padding positions get.
        side: ``"left"`` or ``"right"``.

    Returns:
        ``(input_ids, attention_mask)``, both ``[len(sequences), longest]``; the mask is 1 on tokens.

    Raises:
        ValueError: ``side`` is neither ``"left"`` nor ``"right"``.
    """
    if side not in ("left", "right"):
        raise ValueError(f"padding side must be 'left' or 'right', got {side!r}")
    width = max(len(s) for s in sequences)
    ids = np.full((len(sequences), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(sequences), width), dtype=np.int64)
    for row, seq in enumerate(sequences):
        if seq:
            cols = slice(width - len(seq), width) if side == "left" else slice(0, len(seq))
            ids[row, cols] = seq
            mask[row, cols] = 1
    return ids, mask
