"""LiteLLM's ``rerank`` against the server, for each provider whose wire format we speak.

``cohere`` and ``jina_ai`` POST to ``/v1/rerank``; ``infinity`` and ``hosted_vllm`` POST the
Jina shape to ``/rerank``; ``huggingface`` (TEI) POSTs ``texts`` to ``/rerank`` with a ``top_n``
that TEI itself ignores. Each answer is checked against :meth:`Reranker.score` on the tiny model.

One limit: LiteLLM's ``infinity`` provider asks for the documents back (``return_documents``
true) and reads each as a plain string, infinity's own format, while ``/rerank`` returns them as
``{"text": ...}`` objects, the Jina / Cohere / vLLM format that ``hosted_vllm`` reads (the two
providers send the same body, so the server cannot tell them apart). With ``infinity`` the test
passes ``return_documents=False``, as an infinity user would; scores and order are unaffected.
LiteLLM is in the ``test`` extra; the server runs in-process on a real uvicorn, and the providers
get dummy keys (none is checked: the server has no API key set).
"""

from __future__ import annotations

import pytest

litellm = pytest.importorskip("litellm")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from live_server import serving_in_thread

QUERY = "what do cats eat"
DOCS = [
    "Paris is the capital of France.",
    "Cats are carnivores and eat mostly meat.",
    "The stock market closed higher today.",
    "Kittens need milk and later wet food.",
]
PROVIDERS = ["cohere", "jina_ai", "infinity", "hosted_vllm", "huggingface"]
#: LiteLLM wants a key for some providers before it sends anything; these are never checked here.
DUMMY_KEYS = {
    "COHERE_API_KEY": "dummy",
    "JINA_AI_API_KEY": "dummy",
    "INFINITY_API_KEY": "dummy",
    "HOSTED_VLLM_API_KEY": "dummy",
    "HUGGINGFACE_API_KEY": "dummy",
    "HF_TOKEN": "dummy",
}


@pytest.fixture(scope="module")
def server_url(reranker):
    with serving_in_thread(reranker) as url:
        yield url


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("top_n", [None, 2])
def test_litellm_rerank(provider, top_n, server_url, reranker, monkeypatch):
    for name, value in DUMMY_KEYS.items():
        monkeypatch.setenv(name, value)
    kwargs: dict[str, object] = {} if top_n is None else {"top_n": top_n}
    if provider == "infinity":
        kwargs["return_documents"] = False
    response = litellm.rerank(
        model=f"{provider}/qwen3-reranker", query=QUERY, documents=DOCS, api_base=server_url, **kwargs
    )
    expected = reranker.score(QUERY, DOCS)
    results = response.results
    best_first = sorted(range(len(DOCS)), key=lambda i: -expected[i])
    # TEI answers all texts (it ignores top_n), the others the best top_n.
    want = best_first if top_n is None or provider == "huggingface" else best_first[:top_n]
    assert [r["index"] for r in results] == want
    for r in results:
        assert r["relevance_score"] == pytest.approx(expected[r["index"]], rel=1e-5, abs=1e-6)
        if provider in ("cohere", "jina_ai", "hosted_vllm"):  # they ask for the documents back
            assert r["document"]["text"] == DOCS[r["index"]]
