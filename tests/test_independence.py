"""A document's score depends on nothing but the document (and its query).

Not on the other documents of the request, not on how they are batched (padding, batch size,
token budget), and not on whether the shared prompt prefix ran in a separate pass whose KV cache
the document's pass reads. The reference is the same variant scoring the document alone through
the whole prompt (no prefix pass, batch of one): a property of our own pipeline, so it is checked
against itself, on every exported variant. q8 holds only because the score graph quantises
activations per row (see score_graph.py): with the file's per-tensor scheme it does not, and the
last test shows that this check would see it.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qwen3_rerank import Reranker

# Gap (yes - no) tolerance per variant: fp32/q4/q8 compute each row with float32 kernels whose
# results do not depend on the other rows (measured: exactly equal on the tiny model). fp16 does
# too because the score graph runs a float16 model's attention in float32 (score_graph.py,
# _float32_attention): before that, ONNX Runtime's CPU float16 MatMul gave a padded row other
# numbers than the same row unpadded (up to 1.2e-3 on gaps of about ±4).
TOLERANCE = {"fp32": 1e-6, "q4": 1e-6, "q8": 1e-5, "fp16": 1e-4}

words = st.sampled_from(
    ["Paris", "capital", "France", "the", "is", "of", "Berlin", "東京", "🙂", "river", "1889", "\n", "::", "tower"]
)
document = st.lists(words, max_size=60).map(" ".join) | st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), max_size=80
)


@pytest.fixture(scope="module")
def rerankers(exported):
    """Per variant: (alone, {prefix_reuse: batching reranker}). Small batches and token budgets
    so that a request's documents really are split into several padded batches."""
    made = {}

    def get(dtype: str):
        if dtype not in made:
            alone = Reranker.from_pretrained(exported, dtype=dtype, threads=2, prefix_reuse=False, batch_size=1)
            batching = {
                reuse: Reranker.from_pretrained(
                    exported, dtype=dtype, threads=2, prefix_reuse=reuse, batch_size=3, max_batch_tokens=360
                )
                for reuse in (False, True)
            }
            made[dtype] = alone, batching
        return made[dtype]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["fp32", "q4", "fp16", "q8"])
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    query=st.sampled_from(["What is the capital of France?", "tower", "東京 🙂"]),
    docs=st.lists(document, min_size=2, max_size=6),
    target=st.integers(min_value=0, max_value=5),
    reuse=st.booleans(),
)
def test_score_alone_equals_score_in_any_request(rerankers, dtype, query, docs, target, reuse):
    alone, batching = rerankers(dtype)
    target %= len(docs)
    reranker = batching[reuse]
    assert reranker.prefix_reuse == reuse  # every variant's score graph returns its KV cache
    together = reranker.score(query, docs, raw=True)
    single = alone.score(query, [docs[target]], raw=True)[0]
    assert abs(together[target] - single) <= TOLERANCE[dtype], (dtype, reuse, together[target], single)


def test_per_tensor_q8_depends_on_the_batch(exported):
    """The check above can fail: with the file's own per-tensor activation scale, one document's
    gap moves when its neighbours change (so the per-row rewrite is what makes q8 pass)."""
    query = "What is the capital of France?"
    doc = "Paris is the capital of France."
    neighbours = ["Berlin", "The Eiffel Tower stands on the Champ de Mars in Paris. " * 8, "東京は日本の首都です。 🙂"]
    moved = {}
    for mode in ("tensor", "auto", "row", "row-u8", "nbits8"):
        kw = dict(dtype="q8", threads=2, q8_activations=mode, prefix_reuse=False, batch_size=4)
        reranker = Reranker.from_pretrained(exported, **kw)
        alone = reranker.score(query, [doc], raw=True)[0]
        together = reranker.score(query, [doc, *neighbours], raw=True)[0]
        moved[mode] = abs(together - alone)
    assert moved["tensor"] > 1e-3, moved
    assert max(moved[mode] for mode in ("auto", "row", "row-u8", "nbits8")) <= TOLERANCE["q8"], moved
    assert np.isfinite(list(moved.values())).all()


@pytest.mark.slow
def test_fp16_documents_keep_their_gap_in_padded_batches(exported):
    """A fixed set where float16 attention showed the batch (before the score graph ran it in
    float32, 2-6 of these 40 documents moved by more than 1e-4, up to 1.2e-3)."""
    rng = np.random.default_rng(0)
    vocabulary = ["Paris", "capital", "France", "the", "is", "of", "Berlin", "東京", "🙂", "river", "1889", "\n", "::"]
    docs = [" ".join(rng.choice(vocabulary, int(rng.integers(0, 60)))) for _ in range(40)]
    query = "What is the capital of France?"
    alone = Reranker.from_pretrained(exported, dtype="fp16", threads=2, prefix_reuse=False, batch_size=1)
    single = np.array([alone.score(query, [doc], raw=True)[0] for doc in docs])
    for reuse in (False, True):
        batching = Reranker.from_pretrained(
            exported, dtype="fp16", threads=2, prefix_reuse=reuse, batch_size=3, max_batch_tokens=360
        )
        together = batching.score(query, docs, raw=True)
        assert np.abs(together - single).max() <= TOLERANCE["fp16"], (reuse, np.abs(together - single).max())
