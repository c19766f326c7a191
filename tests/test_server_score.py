"""vLLM's score API (``/score``, ``/v1/score``), one ``/rerank`` for TEI and Jina / Cohere bodies,
and unknown fields ignored on every route (issue 13, items 1 and 2).

The vLLM requests are the examples of vLLM's documentation ("Score API" in its OpenAI-compatible
server page), written out by hand with the responses it shows; the scores here are checked against
:meth:`Reranker.score` / :meth:`Reranker.score_pairs` on the tiny model, the shape against the
recorded response and, where the ``vllm`` package imports (it needs no GPU for its protocol
module, but is not a test dependency: a 336 MB wheel pinning its own torch), its pydantic models.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from live_server import serving_in_thread
from server_fakes import FakeReranker

from qwen3_rerank.server.app import create_app
from qwen3_rerank.server.settings import ServerSettings
from qwen3_rerank.server.state import ServerState

# -- vLLM's documented examples ------------------------------------------------------------------

DOC_MODEL = "BAAI/bge-reranker-v2-m3"

#: "Single inference": a string for both; vLLM's example also sends encoding_format (ignored here).
SINGLE_REQUEST = {
    "model": DOC_MODEL,
    "encoding_format": "float",
    "text_1": "What is the capital of France?",
    "text_2": "The capital of France is Paris.",
}
SINGLE_RESPONSE = {
    "id": "score-request-id",
    "object": "list",
    "created": 693447,
    "model": DOC_MODEL,
    "data": [{"index": 0, "object": "score", "score": 1}],
    "usage": {},
}

#: "Batch inference": one text_1, a list of text_2.
BATCH_REQUEST = {
    "model": DOC_MODEL,
    "text_1": "What is the capital of France?",
    "text_2": ["The capital of Brazil is Brasilia.", "The capital of France is Paris."],
}
BATCH_RESPONSE = {
    "id": "score-request-id",
    "object": "list",
    "created": 693570,
    "model": DOC_MODEL,
    "data": [
        {"index": 0, "object": "score", "score": 0.001094818115234375},
        {"index": 1, "object": "score", "score": 1},
    ],
    "usage": {},
}

#: Lists for both: pairs, zip-wise.
PAIRED_REQUEST = {
    "model": DOC_MODEL,
    "encoding_format": "float",
    "text_1": ["What is the capital of Brazil?", "What is the capital of France?"],
    "text_2": ["The capital of Brazil is Brasilia.", "The capital of France is Paris."],
}
PAIRED_RESPONSE = {
    "id": "score-request-id",
    "object": "list",
    "created": 693447,
    "model": DOC_MODEL,
    "data": [{"index": 0, "object": "score", "score": 1}, {"index": 1, "object": "score", "score": 1}],
    "usage": {},
}

DOC_EXAMPLES = [
    ("single", SINGLE_REQUEST, SINGLE_RESPONSE),
    ("batch", BATCH_REQUEST, BATCH_RESPONSE),
    ("paired", PAIRED_REQUEST, PAIRED_RESPONSE),
]


def _as_list(value: str | list[str]) -> list[str]:
    return value if isinstance(value, list) else [value]


def expected_scores(reranker, body: dict[str, Any]) -> list[float]:
    """What the library says for a score request: score (one text_1) or score_pairs (paired)."""
    queries, texts = _as_list(body["text_1"]), _as_list(body["text_2"])
    instruction = body.get("instruction")
    if len(queries) == 1:
        return reranker.score(queries[0], texts, instruction=instruction)
    return reranker.score_pairs(list(zip(queries, texts, strict=True)), instruction=instruction)


def _approx(values):
    return pytest.approx(values, rel=1e-5, abs=1e-6)


@pytest.fixture(scope="module")
def live(reranker):
    with serving_in_thread(reranker) as url:
        with httpx.Client(base_url=url, timeout=60) as client:
            yield client


@pytest.mark.parametrize("path", ["/score", "/v1/score"])
@pytest.mark.parametrize("name,request_body,documented", DOC_EXAMPLES, ids=[e[0] for e in DOC_EXAMPLES])
def test_vllm_documented_examples(live, reranker, path, name, request_body, documented):
    response = live.post(path, json=request_body)
    assert response.status_code == 200, response.text
    body = response.json()
    # The documented shape: the same keys, the same items in the same order ...
    assert set(body) == set(documented)
    assert body["object"] == documented["object"] == "list"
    assert [set(item) for item in body["data"]] == [set(item) for item in documented["data"]]
    assert [(d["index"], d["object"]) for d in body["data"]] == [(d["index"], d["object"]) for d in documented["data"]]
    assert body["id"].startswith("score-") and isinstance(body["created"], int)
    assert body["model"] == "qwen3-reranker"  # the served model's name, as vLLM answers
    # ... vLLM's usage filled in (its documentation leaves it out) ...
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0 and usage["total_tokens"] == usage["prompt_tokens"]
    # ... and the library's probabilities.
    assert [d["score"] for d in body["data"]] == _approx(expected_scores(reranker, request_body))


def test_paired_scores_with_repeated_queries_keep_input_order(live, reranker):
    request_body = {
        "text_1": ["what do cats eat", "capital of France", "what do cats eat"],
        "text_2": ["Cats eat meat.", "Paris is the capital.", "The stock market rose."],
    }
    body = live.post("/score", json=request_body).json()
    assert [d["index"] for d in body["data"]] == [0, 1, 2]
    assert [d["score"] for d in body["data"]] == _approx(expected_scores(reranker, request_body))


def test_instruction_extension(live, reranker):
    request_body = {**BATCH_REQUEST, "instruction": "Given a question, find the passage that answers it"}
    body = live.post("/score", json=request_body).json()
    scores = [d["score"] for d in body["data"]]
    assert scores == _approx(expected_scores(reranker, request_body))
    assert scores != _approx(expected_scores(reranker, BATCH_REQUEST))


def test_newer_vllm_names_queries_and_documents(live):
    renamed = {"queries": BATCH_REQUEST["text_1"], "documents": BATCH_REQUEST["text_2"]}
    assert live.post("/score", json=renamed).json()["data"] == live.post("/score", json=BATCH_REQUEST).json()["data"]


def test_truncate_prompt_tokens_cuts_each_pair_to_fit(live, reranker):
    long_text = " ".join(f"word{i}" for i in range(200))
    request_body = {"text_1": "what is word 7", "text_2": [long_text, "short text"]}
    full = live.post("/score", json=request_body).json()
    for budget in (120, 200):  # the prompt around a text takes about 80 tokens of the tiny model
        cut = live.post("/score", json={**request_body, "truncate_prompt_tokens": budget}).json()
        assert cut["usage"]["prompt_tokens"] <= 2 * budget
        assert cut["usage"]["prompt_tokens"] < full["usage"]["prompt_tokens"]
        assert cut["data"][1]["score"] == pytest.approx(full["data"][1]["score"], rel=1e-5, abs=1e-6)  # fits already
    unlimited = live.post("/score", json={**request_body, "truncate_prompt_tokens": -1}).json()
    assert unlimited["usage"] == full["usage"]
    assert [d["score"] for d in unlimited["data"]] == _approx([d["score"] for d in full["data"]])


BAD_SCORE_REQUESTS = [
    (
        "N text_1 with M text_2",
        {"text_1": ["a", "b"], "text_2": ["x", "y", "z"]},
        "text_1 has 2 texts and text_2 has 3",
    ),
    ("no text_1", {"text_2": ["x"]}, "text_1: Field required"),
    ("empty text_2 list", {"text_1": "q", "text_2": []}, "text_2"),
    ("text_2 not text", {"text_1": "q", "text_2": 5}, "text_2"),
    ("blank text_1", {"text_1": " ", "text_2": "x"}, "text_1"),
    ("truncate_prompt_tokens -2", {"text_1": "q", "text_2": "x", "truncate_prompt_tokens": -2}, "truncate_prompt"),
    ("truncate_prompt_tokens too small", {"text_1": "q", "text_2": "x", "truncate_prompt_tokens": 2}, "no room"),
    ("truncate_prompt_tokens a string", {"text_1": "q", "text_2": "x", "truncate_prompt_tokens": "9"}, "truncate"),
]


@pytest.mark.parametrize("name,request_body,says", BAD_SCORE_REQUESTS, ids=[b[0] for b in BAD_SCORE_REQUESTS])
def test_bad_score_requests_are_one_line_422s(live, name, request_body, says):
    response = live.post("/score", json=request_body)
    assert response.status_code == 422, response.text
    message = response.json()["error"]["message"]
    assert says in message and "\n" not in message and "Traceback" not in response.text


def test_vllm_pydantic_models_accept_our_requests_and_responses(live):
    """vLLM's own protocol models, where the package imports (it is not installed by the test extra)."""
    try:
        from vllm.entrypoints.pooling.scoring.protocol import ScoreResponse, ScoreTextRequest
    except Exception as exc:  # not installed, or its imports need what is not here
        pytest.skip(f"vllm's protocol models do not import: {exc!r}")
    for _, request_body, documented in DOC_EXAMPLES:
        request = ScoreTextRequest.model_validate(request_body)  # the examples are valid vLLM requests
        ours = live.post("/score", json=request.model_dump(mode="json", exclude_none=True)).json()
        parsed = ScoreResponse.model_validate(ours)
        assert [d.score for d in parsed.data] == [d["score"] for d in ours["data"]]
        assert parsed.usage.prompt_tokens == ours["usage"]["prompt_tokens"]
        ScoreResponse.model_validate(documented)


# -- one /rerank for TEI and Jina / Cohere bodies ------------------------------------------------

QUERY = "what do cats eat"
DOCS = ["Paris is the capital of France.", "Cats eat meat.", "The stock market rose."]


def test_rerank_with_texts_is_tei(live, reranker):
    body = live.post("/rerank", json={"query": QUERY, "texts": DOCS}).json()
    expected = reranker.score(QUERY, DOCS)
    assert isinstance(body, list) and set(body[0]) == {"index", "score"}
    assert {r["index"]: r["score"] for r in body} == {
        i: pytest.approx(s, rel=1e-5, abs=1e-6) for i, s in enumerate(expected)
    }


def test_rerank_with_documents_is_jina_cohere(live, reranker):
    request_body = {"query": QUERY, "documents": DOCS, "top_n": 2, "model": "any"}
    response = live.post("/rerank", json=request_body)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body == {**live.post("/v2/rerank", json=request_body).json(), "id": body["id"]}
    expected = reranker.score(QUERY, DOCS)
    best = sorted(range(len(DOCS)), key=lambda i: -expected[i])[:2]
    assert [r["index"] for r in body["results"]] == best
    assert all("document" not in r for r in body["results"])  # infinity's and Cohere v2's default
    asked = live.post("/rerank", json={**request_body, "return_documents": True}).json()
    assert [r["document"] for r in asked["results"]] == [{"text": DOCS[i]} for i in best]


def test_rerank_with_texts_and_documents_is_a_422_naming_both(live):
    response = live.post("/rerank", json={"query": QUERY, "texts": DOCS, "documents": DOCS})
    assert response.status_code == 422
    message = response.json()["error"]["message"]
    assert "texts" in message and "documents" in message and "not both" in message


def test_rerank_errors_name_the_field_without_union_noise(live):
    missing = live.post("/rerank", json={"query": QUERY}).json()["error"]["message"]
    assert missing == "texts: Field required"
    wrong = live.post("/rerank", json={"query": QUERY, "documents": "one"}).json()["error"]["message"]
    assert wrong.startswith("documents: ") and "jina_cohere" not in wrong


def test_openapi_documents_both_rerank_bodies(live):
    spec = live.get("/openapi.json").json()
    operation = spec["paths"]["/rerank"]["post"]
    content = operation["requestBody"]["content"]["application/json"]
    refs = {item["$ref"].rsplit("/", 1)[1] for item in content["schema"]["oneOf"]}
    assert refs == {"TeiRerankRequest", "RerankRequest"}
    assert {"texts"} <= set(content["examples"]["tei"]["value"])
    assert {"documents"} <= set(content["examples"]["jina_cohere"]["value"])
    answers = operation["responses"]["200"]["content"]["application/json"]["schema"]["anyOf"]
    assert len(answers) == 2
    for path in ("/score", "/v1/score"):
        assert spec["paths"][path]["post"]["responses"]["200"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ScoreResponse"
        }


# -- unknown fields: ignored everywhere, logged at debug level ------------------------------------


@asynccontextmanager
async def serving(model: FakeReranker) -> AsyncIterator[tuple[httpx.AsyncClient, ServerState]]:
    app = create_app(ServerSettings(max_batch_wait=0.0), model)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as client:
            yield client, app.state.server


def run(coro) -> None:
    asyncio.run(asyncio.wait_for(coro, 30))


ROUTES_WITH_EXTRAS = [
    ("/v1/rerank", {"query": "q", "documents": ["a", {"text": "a b", "title": "t"}], "temperature": 0.5}),
    ("/v2/rerank", {"query": "q", "documents": ["a", "a b"], "temperature": 0.5}),
    ("/rerank", {"query": "q", "texts": ["a", "a b"], "top_n": 1, "temperature": 0.5}),  # LiteLLM's TEI top_n
    ("/rerank", {"query": "q", "documents": ["a", "a b"], "temperature": 0.5}),
    ("/score", {"text_1": "q", "text_2": ["a", "a b"], "encoding_format": "float", "temperature": 0.5}),
    ("/v1/score", {"text_1": "q", "text_2": ["a", "a b"], "temperature": 0.5}),
]


@pytest.mark.parametrize("path,body", ROUTES_WITH_EXTRAS, ids=[f"{p} {sorted(b)[-1]}" for p, b in ROUTES_WITH_EXTRAS])
def test_unknown_fields_are_ignored_and_logged_at_debug(path, body, caplog):
    async def scenario() -> None:
        async with serving(FakeReranker()) as (client, _):
            with caplog.at_level(logging.DEBUG, logger="qwen3_rerank.server"):
                response = await client.post(path, json=body)
                plain = {k: v for k, v in body.items() if k not in ("temperature", "encoding_format", "top_n")}
                if path == "/v1/rerank":
                    plain["documents"] = ["a", {"text": "a b"}]
                reference = await client.post(path, json=plain)
            assert response.status_code == 200, response.text
            strip = ("id", "created")
            answer, expected = response.json(), reference.json()
            if isinstance(answer, dict):
                answer = {k: v for k, v in answer.items() if k not in strip}
                expected = {k: v for k, v in expected.items() if k not in strip}
            assert answer == expected
            ignored = [r.getMessage() for r in caplog.records if "ignored unknown field" in r.getMessage()]
            assert ignored and all(r.levelno == logging.DEBUG for r in caplog.records if "ignored" in r.getMessage())
            assert any("temperature" in line for line in ignored)

    run(scenario())


def test_paired_score_request_times_out_whole_and_gives_its_permit_back():
    async def scenario() -> None:
        model = FakeReranker()
        app = create_app(ServerSettings(max_batch_wait=0.0, request_timeout=0.5), model)
        async with app.router.lifespan_context(app):
            state: ServerState = app.state.server
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as client:
                model.delay = 1.0
                slow = await client.post("/score", json={"text_1": ["q", "r"], "text_2": ["a", "b"]})
                assert slow.status_code == 504 and slow.json()["error"]["type"] == "timeout"
                assert state.default.admission.in_use == 0
                model.delay = 0.0
                while model.busy.is_set():
                    await asyncio.sleep(0.01)
                ok = await client.post("/score", json={"text_1": ["q", "r s"], "text_2": ["a", "b"]})
                assert [d["score"] for d in ok.json()["data"]] == [2.0, 3.0]  # the fake: words in the pair
                assert len(state.default.queue) == 0

    run(scenario())


def test_paired_queries_share_one_permit_and_one_model_step_and_fit_the_prompt_budget():
    async def scenario() -> None:
        model = FakeReranker()  # one token per word: a pair's prompt is its query's words plus its text's
        async with serving(model) as (client, state):
            body = {"text_1": ["q", "r s", "q"], "text_2": ["a b c d e f", "a", "b"], "truncate_prompt_tokens": 4}
            response = await client.post("/score", json=body)
            assert response.status_code == 200, response.text
            assert [d["score"] for d in response.json()["data"]] == [4.0, 3.0, 2.0]  # the first text cut to 3 words
            assert model.steps[-1] == ["q", "r s"]  # one queue entry per distinct query, scored together
            assert state.default.admission.in_use == 0

    run(scenario())
