"""Token-budget batching: every index once, budgets kept, padding on the left."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from qwen3_rerank.batching import pad, plan_batches


@given(
    lengths=st.lists(st.integers(min_value=1, max_value=600), min_size=1, max_size=80),
    budget=st.integers(min_value=1, max_value=3000),
    size=st.integers(min_value=1, max_value=40),
)
def test_plan_batches_properties(lengths, budget, size):
    batches = plan_batches(lengths, max_batch_tokens=budget, max_batch_size=size)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))  # every sequence exactly once
    for batch in batches:
        assert 1 <= len(batch) <= size
        longest = max(lengths[i] for i in batch)
        assert len(batch) == 1 or len(batch) * longest <= budget
        # sorted longest first within and across batches
        assert [lengths[i] for i in batch] == sorted((lengths[i] for i in batch), reverse=True)
    firsts = [lengths[b[0]] for b in batches]
    assert firsts == sorted(firsts, reverse=True)


def test_batches_are_not_needlessly_small():
    assert plan_batches([10] * 8, max_batch_tokens=40, max_batch_size=100) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert plan_batches([50, 10, 10], max_batch_tokens=40, max_batch_size=100) == [[0], [1, 2]]


def test_pad_left():
    ids, mask = pad([[1, 2, 3], [4], []], pad_id=9, side="left")
    np.testing.assert_array_equal(ids, [[1, 2, 3], [9, 9, 4], [9, 9, 9]])
    np.testing.assert_array_equal(mask, [[1, 1, 1], [0, 0, 1], [0, 0, 0]])
    assert ids.dtype == np.int64 and mask.dtype == np.int64


def test_pad_right():
    from qwen3_rerank.batching import pad

    ids, mask = pad([[1, 2, 3], [4]], pad_id=9, side="right")
    np.testing.assert_array_equal(ids, [[1, 2, 3], [4, 9, 9]])
    np.testing.assert_array_equal(mask, [[1, 1, 1], [1, 0, 0]])
    import pytest

    with pytest.raises(ValueError):
        pad([[1]], 0, side="middle")
