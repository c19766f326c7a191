"""``should_stop``: scoring stops between model batches and says how much was left unscored."""

from __future__ import annotations

import numpy as np
import pytest

from qwen3_rerank import Reranker, RerankError, ScoringCancelled

QUERY = "What is the capital of France?"
DOCS = [f"Document {i} says that city number {i} is a capital." for i in range(9)]


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "prefix-reuse"])
def small_batches(request, tiny_model_dir):
    """The tiny model with two documents per batch, prefix reuse off or on."""
    model = Reranker.from_pretrained(tiny_model_dir, dtype="fp32", threads=2, batch_size=2, prefix_reuse=request.param)
    assert model.prefix_reuse is request.param
    return model


def counting_batches(model: Reranker, monkeypatch) -> list[int]:
    """Rows of each model batch (``engine.gaps`` call) from now on."""
    rows: list[int] = []
    gaps = model.engine.gaps

    def counted(ids, *args, **kwargs):
        rows.append(len(ids))
        return gaps(ids, *args, **kwargs)

    monkeypatch.setattr(model.engine, "gaps", counted)
    return rows


def test_should_stop_never_true_changes_nothing(small_batches, reranker):
    request = small_batches.prepare(QUERY, DOCS)
    kept = small_batches.score_requests([request], raw=True, should_stop=lambda: False)[0]
    assert kept == small_batches.score_requests([request], raw=True)[0]
    np.testing.assert_allclose(kept, reranker.score(QUERY, DOCS, raw=True), rtol=0, atol=1e-4)


@pytest.mark.parametrize("allowed", [0, 1, 2])
def test_should_stop_stops_between_batches(small_batches, monkeypatch, allowed):
    request = small_batches.prepare(QUERY, DOCS)
    other = small_batches.prepare("another query", DOCS[:3])
    rows = counting_batches(small_batches, monkeypatch)

    def should_stop() -> bool:  # true once `allowed` model batches have run
        return len(rows) >= allowed

    with pytest.raises(ScoringCancelled) as stopped:
        small_batches.score_requests_with_best_chunks([request, other], should_stop=should_stop)
    total = len(DOCS) + 3
    assert len(rows) == allowed and all(r <= 2 for r in rows)  # not one batch more
    assert stopped.value.total == total
    assert stopped.value.unscored == total - sum(rows)
    assert isinstance(stopped.value, RerankError)
    assert f"{total - sum(rows)} of {total}" in str(stopped.value)


def test_should_stop_can_be_an_event(small_batches):
    import threading

    gone = threading.Event()
    gone.set()
    with pytest.raises(ScoringCancelled) as stopped:
        small_batches.score_requests([small_batches.prepare(QUERY, DOCS)], should_stop=gone.is_set)
    assert stopped.value.unscored == len(DOCS)
