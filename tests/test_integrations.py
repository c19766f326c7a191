"""LangChain and LlamaIndex adapters, with the real packages' objects, against Reranker.rerank."""

from __future__ import annotations

import asyncio

import pytest

QUERY = "how do plants make energy from light"
TEXTS = [
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen.",
    "The stock market closed higher on Friday.",
    "Chlorophyll absorbs red and blue light in the leaves of plants.",
    "A recipe for pancakes needs flour, eggs and milk.",
    "Solar panels convert sunlight into electricity.",
]


def expected(reranker, texts, top_k=None, instruction=None):
    return [(r.index, r.score) for r in reranker.rerank(QUERY, texts, top_k=top_k, instruction=instruction)]


# -- LangChain ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lc_documents():
    pytest.importorskip("langchain_core")
    from langchain_core.documents import Document

    return [Document(page_content=t, metadata={"source": f"s{i}"}, id=f"doc-{i}") for i, t in enumerate(TEXTS)]


@pytest.mark.parametrize("top_n", [None, 1, 3, 10])
def test_langchain_compressor_order_scores_and_top_n(reranker, lc_documents, top_n):
    from langchain_core.documents import BaseDocumentCompressor

    from qwen3_rerank.integrations.langchain import Qwen3RerankCompressor

    compressor = Qwen3RerankCompressor(reranker=reranker, top_n=top_n)
    assert isinstance(compressor, BaseDocumentCompressor)
    out = compressor.compress_documents(lc_documents, QUERY)
    want = expected(reranker, TEXTS, top_k=top_n)
    assert len(out) == min(top_n or len(TEXTS), len(TEXTS))
    assert [d.id for d in out] == [f"doc-{i}" for i, _ in want]
    assert [d.page_content for d in out] == [TEXTS[i] for i, _ in want]
    assert [d.metadata["relevance_score"] for d in out] == pytest.approx([s for _, s in want], abs=1e-9)
    assert [d.metadata["source"] for d in out] == [f"s{i}" for i, _ in want]
    assert all("relevance_score" not in d.metadata for d in lc_documents)  # inputs are not changed


def test_langchain_compressor_instruction_async_and_empty(reranker, lc_documents):
    from qwen3_rerank.integrations.langchain import Qwen3RerankCompressor

    instruction = "Given a question, find passages about biology"
    compressor = Qwen3RerankCompressor(reranker=reranker, top_n=2, instruction=instruction)
    out = asyncio.run(compressor.acompress_documents(lc_documents, QUERY))
    want = expected(reranker, TEXTS, top_k=2, instruction=instruction)
    assert [d.id for d in out] == [f"doc-{i}" for i, _ in want]
    assert [d.metadata["relevance_score"] for d in out] == pytest.approx([s for _, s in want], abs=1e-9)
    assert compressor.compress_documents([], QUERY) == []


def test_langchain_compressor_rejects_bad_top_n(reranker):
    from pydantic import ValidationError

    from qwen3_rerank.integrations.langchain import Qwen3RerankCompressor

    with pytest.raises(ValidationError):
        Qwen3RerankCompressor(reranker=reranker, top_n=0)


def test_langchain_compressor_from_pretrained(tiny_model_dir, lc_documents, reranker):
    from qwen3_rerank.integrations.langchain import Qwen3RerankCompressor

    compressor = Qwen3RerankCompressor.from_pretrained(str(tiny_model_dir), top_n=2, dtype="fp32", threads=1)
    out = compressor.compress_documents(lc_documents, QUERY)
    want = expected(reranker, TEXTS, top_k=2)
    assert [d.id for d in out] == [f"doc-{i}" for i, _ in want]
    assert [d.metadata["relevance_score"] for d in out] == pytest.approx([s for _, s in want], abs=1e-6)


# -- LlamaIndex --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def li_nodes():
    pytest.importorskip("llama_index.core")
    from llama_index.core.schema import NodeWithScore, TextNode

    return [NodeWithScore(node=TextNode(text=t, id_=f"node-{i}"), score=float(i)) for i, t in enumerate(TEXTS)]


@pytest.mark.parametrize("top_n", [None, 1, 3, 10])
def test_llamaindex_postprocessor_order_scores_and_top_n(reranker, li_nodes, top_n):
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from llama_index.core.schema import QueryBundle

    from qwen3_rerank.integrations.llamaindex import Qwen3RerankPostprocessor

    post = Qwen3RerankPostprocessor(reranker, top_n=top_n)
    assert isinstance(post, BaseNodePostprocessor)
    out = post.postprocess_nodes(li_nodes, QueryBundle(QUERY))
    want = expected(reranker, TEXTS, top_k=top_n)
    assert len(out) == min(top_n or len(TEXTS), len(TEXTS))
    assert [n.node.node_id for n in out] == [f"node-{i}" for i, _ in want]
    assert [n.score for n in out] == pytest.approx([s for _, s in want], abs=1e-9)
    assert [n.score for n in li_nodes] == [float(i) for i in range(len(TEXTS))]  # inputs are not changed
    # the same with a plain query string
    again = post.postprocess_nodes(li_nodes, query_str=QUERY)
    assert [n.node.node_id for n in again] == [n.node.node_id for n in out]


def test_llamaindex_postprocessor_metadata_mode_and_errors(reranker):
    pytest.importorskip("llama_index.core")
    from llama_index.core.schema import MetadataMode, NodeWithScore, TextNode

    from qwen3_rerank.integrations.llamaindex import Qwen3RerankPostprocessor

    nodes = [NodeWithScore(node=TextNode(text=t, metadata={"topic": f"topic {i}"})) for i, t in enumerate(TEXTS)]
    post = Qwen3RerankPostprocessor(reranker, top_n=2)  # default: metadata the embedding sees goes in
    texts = [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]
    assert texts[0] != TEXTS[0] and "topic 0" in texts[0]
    out = post.postprocess_nodes(nodes, query_str=QUERY)
    want = expected(reranker, texts, top_k=2)
    assert [n.node.node_id for n in out] == [nodes[i].node.node_id for i, _ in want]
    assert [n.score for n in out] == pytest.approx([s for _, s in want], abs=1e-9)

    plain = Qwen3RerankPostprocessor(reranker, top_n=2, metadata_mode=MetadataMode.NONE)
    out = plain.postprocess_nodes(nodes, query_str=QUERY)
    assert [n.score for n in out] == pytest.approx([s for _, s in expected(reranker, TEXTS, top_k=2)], abs=1e-9)

    assert post.postprocess_nodes([], query_str=QUERY) == []
    with pytest.raises(ValueError, match="needs the query"):
        post.postprocess_nodes(nodes)
    with pytest.raises(TypeError):
        Qwen3RerankPostprocessor("not a reranker")


def test_llamaindex_postprocessor_async_and_from_pretrained(tiny_model_dir, li_nodes, reranker):
    from qwen3_rerank.integrations.llamaindex import Qwen3RerankPostprocessor

    post = Qwen3RerankPostprocessor.from_pretrained(str(tiny_model_dir), top_n=3, dtype="fp32", threads=1)
    assert post.class_name() == "Qwen3RerankPostprocessor"
    out = asyncio.run(post.apostprocess_nodes(li_nodes, query_str=QUERY))
    want = expected(reranker, TEXTS, top_k=3)
    assert [n.node.node_id for n in out] == [f"node-{i}" for i, _ in want]
    assert [n.score for n in out] == pytest.approx([s for _, s in want], abs=1e-6)


def test_missing_extra_is_one_clear_error(monkeypatch):
    import importlib
    import sys

    from qwen3_rerank._extras import MissingExtraError

    for module, extra, adapter in [
        ("langchain_core", "langchain", "qwen3_rerank.integrations.langchain"),
        ("llama_index.core", "llamaindex", "qwen3_rerank.integrations.llamaindex"),
    ]:
        monkeypatch.setitem(sys.modules, module, None)
        monkeypatch.delitem(sys.modules, adapter, raising=False)
        with pytest.raises(MissingExtraError, match=rf"pip install 'qwen3-rerank\[{extra}\]'"):
            importlib.import_module(adapter)
