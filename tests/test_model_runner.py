"""The model runner on a fake engine: order, batch limits, padding side, prefix passes, stop, progress."""

from __future__ import annotations

import numpy as np
import pytest
from fake_engine import FakeEngine, expected_gap
from hypothesis import given, settings
from hypothesis import strategies as st

from qwen3_rerank import ScoringCancelled, ScoringRequest
from qwen3_rerank.model_runner import ModelRunner, prefix_pass_rows

PAD, YES, NO = 0, 1, 2
PREFIX = (11, 12, 13, 14, 15)


def request(*tails: tuple[int, ...], reuses: tuple[bool, ...] | None = None) -> ScoringRequest:
    """A request whose sequences are PREFIX + each tail (all eligible for reuse unless said)."""
    sequences = tuple(PREFIX + tail for tail in tails)
    marks = reuses if reuses is not None else (True,) * len(tails)
    return ScoringRequest(sequences, (False,) * len(tails), shared_prefix=len(PREFIX), reuses_prefix=marks)


def runner(engine: FakeEngine, *, batch_size: int = 32, max_batch_tokens: int = 4096, prefix_reuse: bool = True):
    return ModelRunner(
        engine,
        pad_id=PAD,
        yes_id=YES,
        no_id=NO,
        batch_size=batch_size,
        max_batch_tokens=max_batch_tokens,
        prefix_reuse=prefix_reuse,
    )


def expected(requests: list[ScoringRequest]) -> list[list[float]]:
    return [[expected_gap(s) for s in r.sequences] for r in requests]


REQUESTS = [
    request((21, 22), (31,), (41, 42, 43, 44, 45, 46)),
    request((51,), reuses=(False,)),
    request((61, 62, 63), (71, 72), reuses=(True, False)),
]


@pytest.mark.parametrize("prefix_reuse", [True, False])
@pytest.mark.parametrize("score_graph", [True, False])
def test_gaps_come_back_per_request_in_input_order(prefix_reuse, score_graph):
    engine = FakeEngine(is_score_graph=score_graph)
    got = runner(engine, batch_size=2, max_batch_tokens=20, prefix_reuse=prefix_reuse and score_graph).gaps(REQUESTS)
    assert [list(g) for g in got] == expected(REQUESTS)
    # the full graph gets left padding, the score graph right padding
    sides = {side for *_, side in engine.batches} - {"none"}
    assert sides <= ({"right"} if score_graph else {"left"})


def test_prefix_pass_runs_the_prefix_once_for_the_eligible_rows_only():
    engine = FakeEngine()
    runner(engine).gaps(REQUESTS)
    # only the first request has two or more eligible rows
    assert engine.prefixes == [list(PREFIX)]
    with_past = [b for b in engine.batches if b[2]]
    assert sum(rows for rows, *_ in with_past) == 3
    # the rest (1 + 2 sequences) goes the plain way, whole
    plain = [b for b in engine.batches if not b[2]]
    assert sum(rows for rows, *_ in plain) == 3 and all(width > len(PREFIX) for _, width, *_ in plain)


def test_prefix_batches_respect_the_engines_limit_with_a_past():
    engine = FakeEngine(max_batch_with_past=1)
    got = runner(engine).gaps(REQUESTS[:1])
    assert [rows for rows, _, past, _ in engine.batches if past] == [1, 1, 1]
    assert list(got[0]) == expected(REQUESTS[:1])[0]


@settings(max_examples=40, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 30), min_size=1, max_size=12),
    batch_size=st.integers(1, 5),
    max_batch_tokens=st.integers(1, 80),
)
def test_plain_batches_keep_the_limits(lengths, batch_size, max_batch_tokens):
    engine = FakeEngine()
    requests = [ScoringRequest((tuple(range(100, 100 + n)),), (False,)) for n in lengths]
    got = runner(engine, batch_size=batch_size, max_batch_tokens=max_batch_tokens).gaps(requests)
    assert [list(g) for g in got] == expected(requests)
    for rows, width, _, _ in engine.batches:
        assert rows <= batch_size
        assert rows == 1 or rows * width <= max_batch_tokens  # one long sequence may pass the budget alone


def test_should_stop_cancels_between_batches_and_counts_what_is_left():
    engine = FakeEngine()
    asked: list[int] = []

    def stop_after_first_batch() -> bool:
        asked.append(len(engine.batches))
        return len(engine.batches) >= 1

    requests = [ScoringRequest(((5, 6, 7),), (False,)) for _ in range(5)]
    with pytest.raises(ScoringCancelled) as cancelled:
        runner(engine, batch_size=2).gaps(requests, should_stop=stop_after_first_batch)
    assert (cancelled.value.unscored, cancelled.value.total) == (3, 5)
    assert len(engine.batches) == 1 and asked == [0, 1]


def test_should_stop_before_a_prefix_pass_stops_before_the_prefix_runs():
    engine = FakeEngine()
    with pytest.raises(ScoringCancelled) as cancelled:
        runner(engine).gaps(REQUESTS[:1], should_stop=lambda: True)
    assert engine.prefixes == [] and engine.batches == []
    assert cancelled.value.unscored == cancelled.value.total == 3


class Bar:
    def __init__(self) -> None:
        self.done = 0
        self.closed = False

    def update(self, n: int) -> None:
        self.done += n

    def close(self) -> None:
        self.closed = True


def test_progress_counts_every_sequence_once_and_is_closed():
    bars: list[Bar] = []

    def make(total: int) -> Bar:
        assert total == 6
        bars.append(Bar())
        return bars[-1]

    engine = FakeEngine()
    options = {"pad_id": PAD, "yes_id": YES, "no_id": NO, "batch_size": 2, "max_batch_tokens": 100}
    ModelRunner(engine, prefix_reuse=True, make_progress=make, **options).gaps(REQUESTS)
    assert len(bars) == 1 and bars[0].done == 6 and bars[0].closed


def test_prefix_pass_rows_needs_two_eligible_rows_and_reuse_on():
    assert prefix_pass_rows(REQUESTS[0], True) == [0, 1, 2]
    assert prefix_pass_rows(REQUESTS[0], False) == []
    assert prefix_pass_rows(REQUESTS[1], True) == []  # one row, not eligible
    assert prefix_pass_rows(REQUESTS[2], True) == []  # one eligible row: no pass
    assert prefix_pass_rows(request((1,), (2,), (3,), reuses=(True, False, True)), True) == [0, 2]


def test_gaps_are_float64_arrays():
    got = runner(FakeEngine()).gaps(REQUESTS)
    assert all(isinstance(g, np.ndarray) and g.dtype == np.float64 for g in got)


@pytest.mark.parametrize("prefix_reuse", [True, False])
def test_rows_longer_than_the_engines_slice_run_alone(prefix_reuse):
    """A row the engine feeds through in slices gets a batch of its own (on the plain path and
    after a shared prefix), the rest are batched as before, and every gap is unchanged."""
    long_tail = tuple(range(200, 230))  # 35 tokens with the prefix, 30 after it
    requests = [
        request((21, 22), long_tail, (31,), long_tail[:12], (41, 42, 43)),
        request(long_tail, reuses=(False,)),
        request((51,), (52, 53), reuses=(False, False)),
    ]
    engine = FakeEngine(slice_tokens=10)
    got = runner(engine, prefix_reuse=prefix_reuse).gaps(requests)
    assert [list(g) for g in got] == expected(requests)
    # every batch that holds a row of more than 10 new tokens holds that row alone
    assert all(rows == 1 for rows, width, *_ in engine.batches if width > 10)
    long_rows = [past for _, width, past, _ in engine.batches if width > 10]
    # with reuse: the 30- and 12-token tails after the prefix, and the lone 35-token row;
    # without: the 35- and 17-token rows of the first request and the lone 35-token row
    assert len(long_rows) == 3 and sum(long_rows) == (2 if prefix_reuse else 0)
    assert any(rows > 1 for rows, *_ in engine.batches)  # the short ones still share batches
