"""The Haystack component, in a real Pipeline (in-memory store, BM25 retriever), against Reranker.rerank/score."""

from __future__ import annotations

import inspect

import pytest

pytest.importorskip("haystack")

from haystack import Document, Pipeline  # noqa: E402
from haystack.components.retrievers.in_memory import InMemoryBM25Retriever  # noqa: E402
from haystack.document_stores.in_memory import InMemoryDocumentStore  # noqa: E402
from haystack.utils import Secret  # noqa: E402

from qwen3_rerank.integrations.haystack import Qwen3Ranker  # noqa: E402

QUERY = "how do plants make energy from light"
TEXTS = [
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen.",
    "The stock market closed higher on Friday, in light trading.",
    "Chlorophyll absorbs red and blue light in the leaves of plants.",
    "A recipe for pancakes needs flour, eggs and milk.",
    "Solar panels convert light into electrical energy.",
    "Plants grow toward light, and their leaves make energy from it.",
]


def make_documents() -> list[Document]:
    return [Document(id=f"doc-{i}", content=t, meta={"source": f"s{i}"}) for i, t in enumerate(TEXTS)]


@pytest.fixture(scope="module")
def ranker(tiny_model_dir):
    r = Qwen3Ranker(str(tiny_model_dir), dtype="fp32", threads=2, top_k=None)
    r.warm_up()
    return r


@pytest.fixture(scope="module")
def pipeline(tiny_model_dir):
    """retriever (BM25 over TEXTS, every document) → ranker (top 3)."""
    store = InMemoryDocumentStore()
    store.write_documents(make_documents())
    p = Pipeline()
    p.add_component("retriever", InMemoryBM25Retriever(document_store=store, top_k=len(TEXTS)))
    p.add_component("ranker", Qwen3Ranker(str(tiny_model_dir), dtype="fp32", threads=2, top_k=3))
    p.connect("retriever.documents", "ranker.documents")
    return p


def run_pipeline(p: Pipeline, **ranker_inputs):
    out = p.run(
        {"retriever": {"query": QUERY}, "ranker": {"query": QUERY, **ranker_inputs}},
        include_outputs_from={"retriever"},
    )
    return out["retriever"]["documents"], out["ranker"]["documents"]


def load_pipeline(text: str) -> Pipeline:
    """``Pipeline.loads``; Haystack 3 loads only allowlisted modules, so the README's allowlist goes with it."""
    if "allowed_modules" in inspect.signature(Pipeline.loads).parameters:
        return Pipeline.loads(text, allowed_modules=["qwen3_rerank.integrations.haystack"])
    return Pipeline.loads(text)


def check_against_reranker(reranker, candidates: list[Document], ranked: list[Document], top_k: int | None) -> None:
    """``ranked`` is Reranker.rerank's order of ``candidates``, with Reranker.score's scores."""
    texts = [d.content for d in candidates]
    want = reranker.rerank(QUERY, texts, top_k=top_k)
    assert [d.id for d in ranked] == [candidates[r.index].id for r in want]
    scores = reranker.score(QUERY, texts)
    assert [d.score for d in ranked] == pytest.approx([scores[r.index] for r in want], abs=1e-6)


def test_pipeline_ranks_as_reranker_and_reloads(pipeline, reranker):
    candidates, ranked = run_pipeline(pipeline)
    # BM25 finds the five documents that share a word with the query (Haystack 2 also returns the
    # pancakes, at score 0; Haystack 3 drops it), more than the ranker keeps
    assert {"doc-0", "doc-1", "doc-2", "doc-4", "doc-5"} <= {d.id for d in candidates}
    assert len(ranked) == 3
    check_against_reranker(reranker, candidates, ranked, top_k=3)
    assert [d.meta["source"] for d in ranked] == [f"s{d.id.split('-')[1]}" for d in ranked]
    # scores are the ranker's, not BM25's (the retriever's documents are not changed)
    bm25 = {d.id: d.score for d in candidates}
    assert all(d.score != bm25[d.id] for d in ranked)
    assert [d.score for d in ranked] == sorted((d.score for d in ranked), reverse=True)

    text = pipeline.dumps()
    assert "qwen3_rerank.integrations.haystack.Qwen3Ranker" in text
    reloaded = load_pipeline(text)
    loaded = reloaded.get_component("ranker")
    assert isinstance(loaded, Qwen3Ranker) and loaded.reranker is None  # loading a YAML loads no model
    candidates2, ranked2 = run_pipeline(reloaded)
    assert [d.id for d in candidates2] == [d.id for d in candidates]
    assert [d.id for d in ranked2] == [d.id for d in ranked]
    assert [d.score for d in ranked2] == pytest.approx([d.score for d in ranked], abs=1e-6)


def test_pipeline_top_k_override(pipeline, reranker):
    candidates, ranked = run_pipeline(pipeline, top_k=1)
    assert len(ranked) == 1
    check_against_reranker(reranker, candidates, ranked, top_k=1)
    candidates, ranked = run_pipeline(pipeline, top_k=100)
    assert len(ranked) == len(candidates) >= 5
    check_against_reranker(reranker, candidates, ranked, top_k=None)


@pytest.mark.parametrize("top_k", [None, 1, 2, 4, 100])
def test_run_order_scores_top_k_and_copies(ranker, reranker, top_k):
    docs = make_documents()
    out = ranker.run(QUERY, docs, top_k=top_k)["documents"]
    assert len(out) == min(top_k or len(TEXTS), len(TEXTS))
    check_against_reranker(reranker, docs, out, top_k=top_k)
    assert all(d.score is None for d in docs)  # the inputs are not changed
    assert all(a is not b for a in out for b in docs)
    by_id = {d.id: d for d in docs}
    assert all(d.content == by_id[d.id].content and d.meta == by_id[d.id].meta for d in out)


def test_empty_documents(ranker, tiny_model_dir):
    assert ranker.run(QUERY, []) == {"documents": []}
    cold = Qwen3Ranker(str(tiny_model_dir), dtype="fp32")
    assert cold.run(QUERY, []) == {"documents": []}
    assert cold.reranker is None  # nothing to rank: no model loaded


def test_run_warms_up_itself(tiny_model_dir, reranker):
    cold = Qwen3Ranker(str(tiny_model_dir), dtype="fp32", threads=1, top_k=2)
    assert cold.reranker is None
    docs = make_documents()
    out = cold.run(QUERY, docs)["documents"]
    assert cold.reranker is not None
    check_against_reranker(reranker, docs, out, top_k=2)
    loaded = cold.reranker
    cold.warm_up()  # once only
    assert cold.reranker is loaded


def test_instruction_meta_fields_and_threshold(tiny_model_dir, reranker):
    instruction = "Given a question, find passages about biology"
    docs = [Document(id=f"m-{i}", content=t, meta={"topic": f"topic {i}"}) for i, t in enumerate(TEXTS)]
    r = Qwen3Ranker(str(tiny_model_dir), dtype="fp32", threads=2, top_k=None, instruction=instruction)
    r._reranker = reranker  # the same model, already loaded
    out = r.run(QUERY, docs)["documents"]
    want = reranker.rerank(QUERY, TEXTS, instruction=instruction)
    assert [d.id for d in out] == [f"m-{x.index}" for x in want]
    assert [d.score for d in out] == pytest.approx([x.score for x in want], abs=1e-9)

    r = Qwen3Ranker(str(tiny_model_dir), top_k=None, meta_fields_to_embed=["topic", "missing"])
    r._reranker = reranker
    texts = [f"topic {i}\n{t}" for i, t in enumerate(TEXTS)]
    out = r.run(QUERY, docs)["documents"]
    want = reranker.rerank(QUERY, texts)
    assert [d.id for d in out] == [f"m-{x.index}" for x in want]
    assert [d.score for d in out] == pytest.approx([x.score for x in want], abs=1e-9)

    scores = sorted(reranker.score(QUERY, TEXTS), reverse=True)
    threshold = (scores[1] + scores[2]) / 2
    r = Qwen3Ranker(str(tiny_model_dir), top_k=None, score_threshold=threshold)
    r._reranker = reranker
    out = r.run(QUERY, make_documents())["documents"]
    assert [d.score for d in out] == pytest.approx(scores[:2], abs=1e-9)


def test_to_dict_from_dict(monkeypatch, tmp_path):
    r = Qwen3Ranker(
        tmp_path,
        dtype="q4",
        threads=3,
        top_k=5,
        instruction="find code",
        meta_fields_to_embed=["title"],
        score_threshold=0.1,
        token=Secret.from_env_var("MY_HF_TOKEN", strict=False),
        model_kwargs={"max_length": 1024},
    )
    data = r.to_dict()
    assert data == {
        "type": "qwen3_rerank.integrations.haystack.Qwen3Ranker",
        "init_parameters": {
            "model": str(tmp_path),
            "dtype": "q4",
            "device": "cpu",
            "threads": 3,
            "top_k": 5,
            "instruction": "find code",
            "meta_fields_to_embed": ["title"],
            "meta_data_separator": "\n",
            "score_threshold": 0.1,
            "token": {"type": "env_var", "env_vars": ["MY_HF_TOKEN"], "strict": False},
            "model_kwargs": {"max_length": 1024},
        },
    }
    back = Qwen3Ranker.from_dict(data)
    assert back.to_dict() == data
    assert data["init_parameters"]["token"]["type"] == "env_var"  # the caller's dict is left as it was
    monkeypatch.setenv("MY_HF_TOKEN", "hf_secret")
    assert back.token is not None and back.token.resolve_value() == "hf_secret"
    assert back.reranker is None

    from qwen3_rerank import DEFAULT_MODEL
    from qwen3_rerank.files import DEFAULT_DTYPE

    default = Qwen3Ranker().to_dict()["init_parameters"]
    assert (default["model"], default["dtype"], default["top_k"], default["token"]) == (
        DEFAULT_MODEL,
        DEFAULT_DTYPE,
        10,
        None,
    )
    assert Qwen3Ranker.from_dict(Qwen3Ranker().to_dict()).model == DEFAULT_MODEL


def test_bad_arguments(ranker):
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match="top_k"):
            Qwen3Ranker(top_k=bad)
        with pytest.raises(ValueError, match="top_k"):
            ranker.run(QUERY, make_documents(), top_k=bad)
    with pytest.raises(ValueError, match="dtype"):
        Qwen3Ranker(model_kwargs={"dtype": "fp32"})


def test_missing_extra_is_one_clear_error(monkeypatch):
    import importlib
    import sys

    from qwen3_rerank._extras import MissingExtraError

    monkeypatch.setitem(sys.modules, "haystack", None)
    monkeypatch.delitem(sys.modules, "qwen3_rerank.integrations.haystack", raising=False)
    with pytest.raises(MissingExtraError, match=r"pip install 'qwen3-rerank\[haystack\]'"):
        importlib.import_module("qwen3_rerank.integrations.haystack")
