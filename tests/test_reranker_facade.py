"""The Reranker facade on a fake engine (no model): public verbs, option objects, results, ``__all__``."""

from __future__ import annotations

import dataclasses
import inspect
import typing

import numpy as np
import pytest
from fake_engine import FakeEngine, expected_gap

import qwen3_rerank
from qwen3_rerank import Chunk, ChunkingOptions, InputError, Reranker, ScoredDocument, ScoringRequest, Truncation
from qwen3_rerank.prompt_tokenizer import PromptTokenizer
from qwen3_rerank.results import best_first, scored_documents, sigmoid

QUERY = "What is the capital of France?"
DOCS = ["Paris is the capital of France.", "Berlin.", "", "Rome is in Italy. " * 3]
LONG_DOC = "The committee met on Tuesday to discuss the budget. " * 12


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir) -> PromptTokenizer:
    return PromptTokenizer.from_file(tokenizer_dir / "tokenizer.json")


@pytest.fixture
def rr(tokenizer) -> Reranker:
    return Reranker(FakeEngine(), tokenizer)


def gaps_of(request: ScoringRequest) -> list[float]:
    return [expected_gap(s) for s in request.sequences]


def test_score_is_the_sigmoid_of_each_documents_gap(rr):
    request = rr.prepare(QUERY, DOCS)
    assert rr.score(QUERY, DOCS, raw=True) == gaps_of(request)
    assert rr.score(QUERY, DOCS) == list(sigmoid(gaps_of(request)))
    assert len(rr.engine.prefixes) == 2  # the prefix pass ran (once per call)


def test_score_pairs_puts_each_score_back_at_its_pair(rr):
    pairs = [("q1", "a"), ("q2", "bb b"), ("q1", "ccc")]
    got = rr.score_pairs(pairs, raw=True)
    assert got == [rr.score(q, [d], raw=True)[0] for q, d in pairs]


def test_rerank_is_best_first_with_top_k(rr):
    scores = rr.score(QUERY, DOCS)
    results = rr.rerank(QUERY, DOCS, top_k=3)
    assert [r.index for r in results] == best_first(scores, 3)
    assert [r.score for r in results] == sorted(scores, reverse=True)[:3]
    assert results[0].document == DOCS[results[0].index] and results[0].best_chunk is None
    assert all(r.document is None for r in rr.rerank(QUERY, DOCS, return_documents=False))
    with pytest.raises(InputError, match="top_k"):
        rr.rerank(QUERY, DOCS, top_k=0)


def test_chunking_as_one_value_equals_the_three_keywords(rr):
    by_keywords = rr.rerank(QUERY, [LONG_DOC, "short"], chunking="max", chunk_tokens=32, chunk_overlap=4)
    by_value = rr.rerank(QUERY, [LONG_DOC, "short"], chunking=ChunkingOptions("max", 32, 4))
    assert by_keywords == by_value
    long_result = next(r for r in by_value if r.index == 0)
    assert isinstance(long_result.best_chunk, Chunk)
    request = rr.prepare(QUERY, [LONG_DOC], chunking=ChunkingOptions("max", 32, 4))
    window_scores = sigmoid(gaps_of(request))
    assert long_result.score == max(window_scores)
    assert long_result.best_chunk == request.chunks[int(np.argmax(window_scores))]
    with pytest.raises(InputError, match="inside ChunkingOptions"):
        rr.score(QUERY, DOCS, chunking=ChunkingOptions("max", 32, 4), chunk_tokens=16)


def test_truncation_value_is_the_servers_policy_and_the_keywords_keep_their_meaning(rr):
    text = "cats eat fish and meat every day " * 10
    # keywords, as documented: max_doc_tokens cuts first, whatever truncate says
    legacy = rr.prepare(QUERY, [text], truncate=False, max_doc_tokens=8)
    assert legacy.sequences == rr.prepare(QUERY, [rr.tokenizer.cut_text(text, 8)]).sequences
    # the policy value refuses instead
    with pytest.raises(InputError, match="document 0 is longer than 8 tokens"):
        rr.prepare(QUERY, [text], truncation=Truncation(enabled=False, max_doc_tokens=8))
    left = rr.prepare(QUERY, [text], truncation=Truncation(direction="left", max_doc_tokens=8))
    assert left.sequences == rr.prepare(QUERY, [rr.tokenizer.cut_text_start(text, 8)]).sequences
    with pytest.raises(InputError, match="either truncation or"):
        rr.prepare(QUERY, [text], truncation=Truncation(), max_doc_tokens=8)


def test_old_name_of_score_requests_with_best_chunks_warns_and_gives_the_same(rr):
    requests = [rr.prepare(QUERY, DOCS), rr.prepare("other", ["x"])]
    with pytest.warns(DeprecationWarning, match="score_requests_with_best_chunks"):
        old = rr.score_requests_detailed(requests, raw=True)
    assert old == rr.score_requests_with_best_chunks(requests, raw=True)


def test_settings_changed_on_the_reranker_apply_to_the_next_call(rr):
    rr.batch_size = 1
    rr.prefix_reuse = False
    rr.score(QUERY, DOCS)
    assert rr.engine.prefixes == [] and {rows for rows, *_ in rr.engine.batches} == {1}


def test_scored_documents_aggregate_windows_per_document():
    chunks = tuple(Chunk(i, 0, 1, 0, 1) for i in range(5))
    request = ScoringRequest(((1,),) * 5, (False,) * 5, chunks=chunks, window_counts=(2, 3), aggregation="mean")
    docs = scored_documents(request, np.array([0.1, 0.3, 0.9, 0.2, 0.9]))
    assert docs[0] == ScoredDocument(pytest.approx(0.2), chunks[1])
    assert docs[1] == ScoredDocument(pytest.approx(2.0 / 3), chunks[2])  # the first of two equal best windows


def test_sigmoid_does_not_overflow_and_best_first_keeps_ties_in_input_order():
    assert list(sigmoid([-1000.0, 0.0, 1000.0])) == [0.0, 0.5, 1.0]
    assert best_first([0.5, 0.9, 0.5, 0.1]) == [1, 0, 2, 3]
    assert best_first([0.5, 0.9, 0.5, 0.1], 2) == [1, 0]


def _package_classes(annotation: object) -> set[type]:
    """Classes of this package that an annotation names, and those their dataclass fields name."""
    found: set[type] = set()
    stack = [annotation]
    while stack:
        item = stack.pop()
        stack.extend(typing.get_args(item))
        if isinstance(item, type) and item.__module__.startswith("qwen3_rerank") and item not in found:
            found.add(item)
            if dataclasses.is_dataclass(item):
                stack.extend(typing.get_type_hints(item).values())
    return found


def test_all_names_every_type_the_public_calls_take_or_return():
    public = [m for name, m in inspect.getmembers(Reranker, inspect.isfunction) if not name.startswith("_")]
    public.append(Reranker.from_pretrained)
    classes: set[type] = set()
    for method in public:
        classes |= set().union(*map(_package_classes, typing.get_type_hints(method).values()))
    classes |= _package_classes(typing.get_type_hints(Reranker.template.fget)["return"])
    wanted = {c.__name__ for c in classes} - {"OnnxEngine", "ModelFiles", "PromptTokenizer"}  # its parts
    assert {"RerankResult", "ScoredDocument", "ScoringRequest", "Chunk", "ChunkingOptions", "Truncation"} <= wanted
    assert wanted <= set(qwen3_rerank.__all__), wanted - set(qwen3_rerank.__all__)
    for name in qwen3_rerank.__all__:
        assert hasattr(qwen3_rerank, name), name
