"""Scores equal the official PyTorch recipe run on the same checkpoint (fp32)."""

from __future__ import annotations

import numpy as np
import pytest

from qwen3_rerank import InputError, Reranker

GAP_TOLERANCE = 1e-5
QUERY = "What is the capital of France?"
DOCS = [
    "Paris is the capital of France.",
    "Berlin is the capital of Germany, and it has been the seat of government since 1999. " * 3,
    "",
    "東京は日本の首都です。 Ünïcödé façade 🙂👍🏽 👨‍👩‍👧",
    "first line\nsecond line\r\n\n  indented\tTabbed",
    "short",
    "The Eiffel Tower stands on the Champ de Mars in Paris. " * 12,
]


def assert_gaps_close(ours, reference):
    ours, reference = np.asarray(ours), np.asarray(reference)
    assert ours.shape == reference.shape
    # The test must be able to fail: the gaps of different documents really differ.
    assert np.std(reference) > 0.05
    np.testing.assert_allclose(ours, reference, rtol=0, atol=GAP_TOLERANCE)


def test_gaps_equal_official_mixed_batch(reranker, official):
    assert_gaps_close(reranker.score(QUERY, DOCS, raw=True), official.gaps(QUERY, DOCS))


def test_probabilities_equal_official(reranker, official):
    np.testing.assert_allclose(reranker.score(QUERY, DOCS), official.scores(QUERY, DOCS), rtol=0, atol=1e-6)


def test_custom_instruction(reranker, official):
    instruction = "Given a trivia question, find the sentence that answers it"
    ours = reranker.score(QUERY, DOCS, instruction=instruction, raw=True)
    assert_gaps_close(ours, official.gaps(QUERY, DOCS, instruction))
    assert not np.allclose(ours, reranker.score(QUERY, DOCS, raw=True), atol=1e-3)


def test_document_cut_by_max_length(tiny_model_dir, tiny_checkpoint):
    from reference import OfficialRecipe

    max_length = 90
    ours = Reranker.from_pretrained(tiny_model_dir, dtype="fp32", max_length=max_length)
    ref = OfficialRecipe(tiny_checkpoint, max_length=max_length)
    assert_gaps_close(ours.score(QUERY, DOCS, raw=True), ref.gaps(QUERY, DOCS))


def test_batch_invariance(tiny_model_dir, reranker):
    batched = reranker.score(QUERY, DOCS, raw=True)
    single = Reranker.from_pretrained(tiny_model_dir, dtype="fp32", batch_size=1)
    one_by_one = [single.score(QUERY, [d], raw=True)[0] for d in DOCS]
    np.testing.assert_allclose(batched, one_by_one, rtol=0, atol=GAP_TOLERANCE)
    # The same document next to different neighbours scores the same.
    mixed = reranker.score(QUERY, [DOCS[0], "x" * 500, DOCS[3]], raw=True)
    np.testing.assert_allclose(mixed[0], batched[0], atol=GAP_TOLERANCE)
    np.testing.assert_allclose(mixed[2], batched[3], atol=GAP_TOLERANCE)


def test_small_token_budget_same_scores(tiny_model_dir, reranker):
    small = Reranker.from_pretrained(tiny_model_dir, dtype="fp32", max_batch_tokens=200, batch_size=3)
    np.testing.assert_allclose(
        small.score(QUERY, DOCS, raw=True), reranker.score(QUERY, DOCS, raw=True), atol=GAP_TOLERANCE
    )


@pytest.mark.slow  # a second export of the checkpoint, without past inputs
def test_graph_without_past_inputs(tiny_model_nopast_dir, official):
    rr = Reranker.from_pretrained(tiny_model_nopast_dir, dtype="fp32")
    assert rr.engine.past_inputs == []
    assert_gaps_close(rr.score(QUERY, DOCS, raw=True), official.gaps(QUERY, DOCS))


def test_score_pairs_and_requests_match_per_query_calls(reranker):
    queries = [QUERY, "Where is the Eiffel Tower?"]
    pairs = [(q, d) for q in queries for d in DOCS[:3]]
    flat = reranker.score_pairs(pairs, raw=True)
    per_query = [g for q in queries for g in reranker.score(q, DOCS[:3], raw=True)]
    np.testing.assert_allclose(flat, per_query, atol=GAP_TOLERANCE)
    requests = [reranker.prepare(q, DOCS[:3]) for q in queries]
    together = reranker.score_requests(requests, raw=True)
    np.testing.assert_allclose([g for r in together for g in r], per_query, atol=GAP_TOLERANCE)


def test_rerank_orders_best_first_and_is_stable(reranker):
    docs = DOCS + [DOCS[0]]  # a tie: the duplicate must come after the original
    scores = reranker.score(QUERY, docs)
    results = reranker.rerank(QUERY, docs)
    assert [r.index for r in results] == sorted(range(len(docs)), key=lambda i: (-scores[i], i))
    assert [r.score for r in results] == sorted(scores, reverse=True)
    assert all(r.document == docs[r.index] for r in results)
    tie = [r.index for r in results if r.index in (0, len(docs) - 1)]
    assert tie == [0, len(docs) - 1]
    top = reranker.rerank(QUERY, docs, top_k=2, return_documents=False)
    assert [r.index for r in top] == [r.index for r in results[:2]]
    assert all(r.document is None for r in top)
    assert all(0.0 <= s <= 1.0 for s in scores)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda rr: rr.score(QUERY, []), "no documents"),
        (lambda rr: rr.score(QUERY, "a single string"), "not one string"),
        (lambda rr: rr.score(QUERY, ["ok", 3]), "document 1 must be a string"),
        (lambda rr: rr.score(None, ["ok"]), "query must be a string"),
        (lambda rr: rr.rerank(QUERY, ["ok"], top_k=0), "top_k"),
        (lambda rr: rr.score_pairs([]), "no \\(query, document\\) pairs"),
        (lambda rr: rr.score_pairs([("q",)]), "pair 0"),
        (lambda rr: rr.score(QUERY, ["ok"], instruction=5), "instruction must be a string"),
    ],
)
def test_bad_input_is_a_clear_error(reranker, call, message):
    with pytest.raises(InputError, match=message):
        call(reranker)
