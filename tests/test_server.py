"""``qwen3-rerank serve`` tested as a real process on 127.0.0.1, with real clients.

Each server is ``python -m qwen3_rerank serve`` on the tiny random model of the fixtures, on a
free loopback port; every wait is bounded and every process is killed in teardown.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

API_KEY = "test-key-123"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
MAX_DOCUMENTS = 16
MAX_BODY_BYTES = 20_000
MAX_TOKENS_PER_DOC = 64
START_TIMEOUT = 120.0
SLOW_SERVER = Path(__file__).with_name("slow_server.py")

QUERY = "what do cats eat"
DOCS = [
    "Cats are carnivores and eat mostly meat.",
    "The stock market closed higher today.",
    "Kittens need milk and later wet food.",
    "Paris is the capital of France.",
    "Dry cat food contains protein and fat.",
]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A ``qwen3-rerank serve`` child process; stderr goes to a log file."""

    def __init__(
        self, model_dir: Path, log_path: Path, *args: str, env: dict | None = None, step_delay: float | None = None
    ) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("QWEN3_RERANK_")}
        full_env.update(env or {})
        # step_delay: the real model behind a wrapper that sleeps before each step (tests/slow_server.py)
        launcher = ["-m", "qwen3_rerank"] if step_delay is None else [str(SLOW_SERVER), str(step_delay)]
        command = [
            sys.executable,
            *launcher,
            "serve",
            "--model",
            str(model_dir),
            "--dtype",
            "fp32",
            "--port",
            str(self.port),
            "--threads",
            "1",
            *args,
        ]
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, env=full_env)
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"server not ready after {START_TIMEOUT} s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def metric(self, name: str) -> float:
        text = httpx.get(self.url + "/metrics", timeout=10).text
        values = re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M)  # summed over labels
        assert values, f"metric {name} not found"
        return sum(float(v) for v in values)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover
                pass
        self._log.close()


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    proc = ServerProcess(
        tiny_model_dir,
        tmp_path_factory.mktemp("server") / "server.log",
        "--max-documents",
        str(MAX_DOCUMENTS),
        "--max-body-bytes",
        str(MAX_BODY_BYTES),
        "--max-tokens-per-doc",
        str(MAX_TOKENS_PER_DOC),
        "--max-batch-tokens",
        "1024",
        "--max-batch-wait-ms",
        "50",
        env={"QWEN3_RERANK_API_KEY": f"other-key,{API_KEY}"},  # keys from the environment
    )
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as c:
        yield c


def _approx(values):
    return pytest.approx(values, rel=1e-5, abs=1e-6)


# -- endpoints, schemas, ordering, scores equal the library's -----------------------------------


def test_service_endpoints(server, client, tiny_model_dir):
    assert httpx.get(server.url + "/health", timeout=10).json() == {"status": "ok"}
    assert httpx.get(server.url + "/ready", timeout=10).json() == {"status": "ready"}
    models = client.get("/v1/models").json()
    assert models["object"] == "list" and models["data"][0]["id"] == tiny_model_dir.name
    assert models["data"][0]["object"] == "model"
    spec = httpx.get(server.url + "/openapi.json", timeout=10).json()
    for path in ("/v1/rerank", "/v2/rerank", "/rerank", "/health", "/ready", "/metrics", "/v1/models"):
        assert path in spec["paths"]
    assert httpx.get(server.url + "/docs", timeout=10).status_code == 200
    metrics = httpx.get(server.url + "/metrics", timeout=10)
    assert metrics.status_code == 200
    for name in (
        "qwen3_rerank_requests_total",
        "qwen3_rerank_request_duration_seconds_bucket",
        "qwen3_rerank_batch_documents_bucket",
        "qwen3_rerank_queue_depth",
        "qwen3_rerank_tokens_total",
        "qwen3_rerank_model_calls_total",
    ):
        assert name in metrics.text


@pytest.mark.parametrize("path", ["/v1/rerank", "/v2/rerank"])
def test_cohere_shape_matches_library(client, reranker, path):
    expected = reranker.score(QUERY, DOCS)
    response = client.post(path, json={"model": "any", "query": QUERY, "documents": DOCS, "return_documents": True})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"id", "model", "results", "usage", "meta"}
    assert body["id"] == response.headers["x-request-id"]
    results = body["results"]
    assert sorted(r["index"] for r in results) == list(range(len(DOCS)))
    scores = [r["relevance_score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    by_index = {r["index"]: r["relevance_score"] for r in results}
    assert [by_index[i] for i in range(len(DOCS))] == _approx(expected)
    assert all(r["document"] == {"text": DOCS[r["index"]]} for r in results)
    tokens = reranker.prepare(QUERY, DOCS).num_tokens
    assert body["usage"] == {"total_tokens": tokens}
    assert body["meta"]["tokens"]["input_tokens"] == tokens


def test_cohere_options(client, reranker):
    docs = [{"text": d} for d in DOCS]
    expected = reranker.score(QUERY, DOCS, instruction="Find pet food facts")
    best = sorted(range(len(DOCS)), key=lambda i: -expected[i])[:2]
    body = client.post(
        "/v2/rerank", json={"query": QUERY, "documents": docs, "top_n": 2, "instruction": "Find pet food facts"}
    ).json()
    assert [r["index"] for r in body["results"]] == best
    assert [r["relevance_score"] for r in body["results"]] == _approx([expected[i] for i in best])
    assert all("document" not in r for r in body["results"])  # v2: documents only when asked
    # v1 returns documents by default (Jina); top_n above the number of documents returns all.
    body = client.post("/v1/rerank", json={"query": QUERY, "documents": DOCS, "top_n": 10}).json()
    assert len(body["results"]) == len(DOCS) and all("document" in r for r in body["results"])
    # max_tokens_per_doc cuts each document as the library's prepare(max_doc_tokens=...) does.
    long_doc = "cats eat fish and meat " * 40
    request = reranker.prepare(QUERY, [long_doc, DOCS[0]], max_doc_tokens=8)
    expected = reranker.score_requests([request])[0]
    body = client.post(
        "/v2/rerank", json={"query": QUERY, "documents": [long_doc, DOCS[0]], "max_tokens_per_doc": 8}
    ).json()
    assert {r["index"]: r["relevance_score"] for r in body["results"]} == {
        0: _approx(expected[0]),
        1: _approx(expected[1]),
    }
    assert body["usage"]["total_tokens"] == request.num_tokens


def test_chunking_extension(client, reranker):
    long_doc = "cats eat fish and meat, and dogs eat almost anything they find. " * 30
    docs = [long_doc, DOCS[0]]
    options = {"chunking": "max", "chunk_tokens": 64, "chunk_overlap": 8}
    expected = reranker.rerank(QUERY, docs, **options)
    body = client.post("/v2/rerank", json={"query": QUERY, "documents": docs, **options}).json()
    assert [r["index"] for r in body["results"]] == [r.index for r in expected]
    assert [r["relevance_score"] for r in body["results"]] == _approx([r.score for r in expected])
    chunks = {r["index"]: r["best_chunk"] for r in body["results"]}
    assert chunks == {r.index: r.best_chunk.to_dict() for r in expected}
    assert chunks[0]["token_end"] - chunks[0]["token_start"] <= 64
    bad = client.post(
        "/v2/rerank", json={"query": QUERY, "documents": docs, "chunking": "max", "chunk_tokens": 8, "chunk_overlap": 8}
    )
    assert bad.status_code == 422 and bad.json()["error"]["type"] == "invalid_request"


def test_tei_shape_with_plain_httpx(server, reranker):
    with httpx.Client(timeout=60) as plain:
        response = plain.post(
            server.url + "/rerank", json={"query": QUERY, "texts": DOCS, "return_text": True}, headers=AUTH
        )
    assert response.status_code == 200, response.text
    ranks = response.json()
    expected = reranker.score(QUERY, DOCS)
    assert [r["index"] for r in ranks] == sorted(range(len(DOCS)), key=lambda i: (-expected[i], i))
    assert [r["score"] for r in ranks] == _approx([expected[r["index"]] for r in ranks])
    assert all(r["text"] == DOCS[r["index"]] for r in ranks)
    raw = httpx.post(
        server.url + "/rerank", json={"query": QUERY, "texts": DOCS, "raw_scores": True}, headers=AUTH, timeout=60
    ).json()
    expected_raw = reranker.score(QUERY, DOCS, raw=True)
    assert all("text" not in r for r in raw)
    assert {r["index"]: r["score"] for r in raw} == {i: _approx(v) for i, v in enumerate(expected_raw)}


def test_tei_truncation(client, reranker):
    long_text = "cats eat fish and meat every day " * 30  # well over MAX_TOKENS_PER_DOC tokens
    refused = client.post("/rerank", json={"query": QUERY, "texts": [DOCS[0], long_text], "truncate": False})
    assert refused.status_code == 422
    assert refused.json()["error"]["type"] == "invalid_request" and "document 1" in refused.json()["error"]["message"]
    # Default and right: the start is kept; left: the end is kept.
    tok = reranker.tokenizer
    right = reranker.score(QUERY, [tok.cut_text(long_text, MAX_TOKENS_PER_DOC)])
    left = reranker.score(QUERY, [tok.cut_text_start(long_text, MAX_TOKENS_PER_DOC)])
    got = client.post("/rerank", json={"query": QUERY, "texts": [long_text]}).json()
    assert got[0]["score"] == _approx(right[0])
    got = client.post("/rerank", json={"query": QUERY, "texts": [long_text], "truncation_direction": "left"}).json()
    assert got[0]["score"] == _approx(left[0])


def test_cut_text_start(reranker):
    tok = reranker.tokenizer
    text = "one two three four five six seven eight nine ten"
    assert tok.cut_text_start(text, 1000) == text
    kept = tok.cut_text_start(text, 3)
    assert kept and text.endswith(kept) and len(kept) < len(text)
    assert len(tok.tokenizer.encode(kept, add_special_tokens=False).ids) <= 4  # "about" 3: a re-tokenized edge
    with pytest.raises(ValueError):
        tok.cut_text_start(text, 0)


# -- real clients nobody here wrote ------------------------------------------------------------


def test_official_cohere_sdk(server, reranker):
    cohere = pytest.importorskip("cohere")
    expected = reranker.score(QUERY, DOCS)
    best = sorted(range(len(DOCS)), key=lambda i: (-expected[i], i))
    co = cohere.ClientV2(api_key=API_KEY, base_url=server.url, timeout=60)
    response = co.rerank(model="rerank-v3.5", query=QUERY, documents=DOCS, top_n=3)
    assert [r.index for r in response.results] == best[:3]
    assert [r.relevance_score for r in response.results] == _approx([expected[i] for i in best[:3]])
    # The v1 client (POST /v1/rerank) too, with its own fields.
    co1 = cohere.Client(api_key=API_KEY, base_url=server.url, timeout=60)
    response = co1.rerank(model="rerank-v3.5", query=QUERY, documents=DOCS, top_n=2, return_documents=True)
    assert [r.index for r in response.results] == best[:2]
    assert [r.document.text for r in response.results] == [DOCS[i] for i in best[:2]]
    # A wrong key is the SDK's own UnauthorizedError.
    with pytest.raises(cohere.errors.UnauthorizedError):
        cohere.ClientV2(api_key="wrong", base_url=server.url, timeout=60).rerank(model="m", query=QUERY, documents=DOCS)


# -- batching across requests ------------------------------------------------------------------


def test_concurrent_requests_are_batched(server, client):
    n = 8
    requests = [
        {"query": f"{QUERY} {i}", "documents": [DOCS[i % len(DOCS)], DOCS[(i + 1) % len(DOCS)]]} for i in range(n)
    ]
    serial = [client.post("/v2/rerank", json=r).json()["results"] for r in requests]
    calls_before = server.metric("qwen3_rerank_model_calls_total")

    def one(body):
        with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as c:
            return c.post("/v2/rerank", json=body)

    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        responses = list(pool.map(one, requests))
    calls = server.metric("qwen3_rerank_model_calls_total") - calls_before
    assert all(r.status_code == 200 for r in responses)
    assert calls < n, f"{n} concurrent requests took {calls} model calls"
    for got, want in zip(responses, serial, strict=True):
        got = got.json()["results"]
        assert [r["index"] for r in got] == [r["index"] for r in want]
        assert [r["relevance_score"] for r in got] == _approx([r["relevance_score"] for r in want])


# -- bad input ---------------------------------------------------------------------------------

_GOOD = {"query": QUERY, "documents": DOCS[:2]}
BAD_REQUESTS = [
    ("malformed JSON", "/v2/rerank", b'{"query": "q", "documents": [', AUTH, 400),
    ("not an object", "/v2/rerank", b"[1, 2]", AUTH, 422),
    ("invalid UTF-8", "/rerank", b'{"query": "\xff\xfe", "texts": ["a"]}', AUTH, 400),
    ("lone surrogate", "/rerank", b'{"query": "\\ud800", "texts": ["a"]}', AUTH, 422),
    ("query not a string", "/v2/rerank", {"query": 5, "documents": ["a"]}, AUTH, 422),
    ("documents not a list", "/v2/rerank", {"query": "q", "documents": "a"}, AUTH, 422),
    ("document not a string", "/v2/rerank", {"query": "q", "documents": ["a", 3]}, AUTH, 422),
    ("document object without text", "/v1/rerank", {"query": "q", "documents": [{"title": "a"}]}, AUTH, 422),
    ("top_n a string", "/v2/rerank", {**_GOOD, "top_n": "2"}, AUTH, 422),
    ("return_documents not a bool", "/v2/rerank", {**_GOOD, "return_documents": "yes"}, AUTH, 422),
    ("empty query", "/v2/rerank", {"query": "", "documents": ["a"]}, AUTH, 422),
    ("blank query", "/rerank", {"query": "  ", "texts": ["a"]}, AUTH, 422),
    ("missing query", "/v2/rerank", {"documents": ["a"]}, AUTH, 422),
    ("zero documents", "/v2/rerank", {"query": "q", "documents": []}, AUTH, 422),
    ("zero texts", "/rerank", {"query": "q", "texts": []}, AUTH, 422),
    ("too many documents", "/v2/rerank", {"query": "q", "documents": ["a"] * (MAX_DOCUMENTS + 1)}, AUTH, 422),
    ("too many texts", "/rerank", {"query": "q", "texts": ["a"] * (MAX_DOCUMENTS + 1)}, AUTH, 422),
    ("body over the limit", "/v2/rerank", {"query": "q", "documents": ["x" * MAX_BODY_BYTES]}, AUTH, 413),
    ("negative top_n", "/v2/rerank", {**_GOOD, "top_n": -1}, AUTH, 422),
    ("zero top_n", "/v2/rerank", {**_GOOD, "top_n": 0}, AUTH, 422),
    ("huge top_n", "/v2/rerank", {**_GOOD, "top_n": 10**30}, AUTH, 422),
    ("top_n over the document limit", "/v2/rerank", {**_GOOD, "top_n": MAX_DOCUMENTS + 1}, AUTH, 422),
    ("zero max_tokens_per_doc", "/v2/rerank", {**_GOOD, "max_tokens_per_doc": 0}, AUTH, 422),
    # Unknown fields are ignored, as TEI, Cohere, Jina and vLLM ignore them: tests/test_server_score.py
    ("texts and documents both", "/rerank", {"query": "q", "texts": ["a"], "documents": ["a"]}, AUTH, 422),
    ("score: N text_1 with M text_2", "/score", {"text_1": ["a", "b"], "text_2": ["a"]}, AUTH, 422),
    ("score: text_2 not text", "/v1/score", {"text_1": "q", "text_2": [1]}, AUTH, 422),
    ("score without key", "/score", {"text_1": "q", "text_2": "a"}, {}, 401),
    ("bad truncation_direction", "/rerank", {"query": "q", "texts": ["a"], "truncation_direction": "up"}, AUTH, 422),
    ("relevant spans asked for", "/v2/rerank", {**_GOOD, "relevant_spans": {"mode": "enabled"}}, AUTH, 422),
    ("missing API key", "/v2/rerank", _GOOD, {}, 401),
    ("wrong API key", "/v2/rerank", _GOOD, {"Authorization": "Bearer wrong"}, 401),
    ("key without Bearer", "/rerank", {"query": "q", "texts": ["a"]}, {"Authorization": API_KEY}, 401),
    ("models without key", "/v1/models", None, {}, 401),
    ("unknown path", "/v3/rerank", _GOOD, AUTH, 404),
]


@pytest.mark.parametrize("name,path,body,headers,status", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_input_is_a_json_4xx(server, name, path, body, headers, status):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        if body is None:
            response = c.get(path, headers=headers)
        elif isinstance(body, bytes):
            response = c.post(path, content=body, headers={**headers, "Content-Type": "application/json"})
        else:
            response = c.post(path, json=body, headers=headers)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"type", "message"} and error["type"] and error["message"]
    assert "Traceback" not in response.text and 'File "' not in response.text
    assert response.headers["x-request-id"]
    if status == 401:
        assert response.headers.get("www-authenticate") == "Bearer"
    # ... and the server still answers.
    ok = httpx.post(server.url + "/rerank", json={"query": "q", "texts": ["a"]}, headers=AUTH, timeout=30)
    assert ok.status_code == 200


def test_request_id_is_echoed_and_logged(server, client):
    response = client.get("/v1/models", headers={"X-Request-ID": "my-trace-42"})
    assert response.headers["x-request-id"] == "my-trace-42"
    generated = client.post("/rerank", json={"query": "q", "texts": ["a"]}).headers["x-request-id"]
    deadline = time.monotonic() + 10
    while "my-trace-42" not in server.log() or generated not in server.log():
        assert time.monotonic() < deadline, "request ids not in the log"
        time.sleep(0.1)
    lines = [line for line in server.log().splitlines() if line.strip()]
    assert lines and all(re.match(r"^\S+ \S+ \w+ \[[^\]]+\] ", line) for line in lines), "a log line lacks its id"


@pytest.mark.slow
def test_schemathesis_finds_no_5xx_and_no_schema_violation(server, tmp_path):
    """Property-based fuzzing of every operation in /openapi.json, bounded in examples and time."""
    pytest.importorskip("schemathesis")
    st = Path(sys.executable).with_name("st")
    command = [str(st)] if st.exists() else [sys.executable, "-m", "schemathesis.cli"]
    command += [
        "run",
        server.url + "/openapi.json",
        "--checks",
        "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance",
        "--max-examples",
        "8",
        "--generation-deterministic",
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--max-time",
        "60",
        "--no-color",
        "-H",
        f"Authorization: Bearer {API_KEY}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=150, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert re.search(r"\d+ generated, \d+ passed", result.stdout), result.stdout[-3000:]
    assert httpx.get(server.url + "/ready", timeout=10).status_code == 200


# -- limits: 429 and 504 are tested in-process, over a slow fake model: tests/test_server_app.py


# -- lifecycle ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_finishes_requests_in_flight(tiny_model_dir, tmp_path, reranker):
    proc = ServerProcess(
        tiny_model_dir,
        tmp_path / "sigterm.log",
        "--max-batch-tokens",
        "128",
        "--max-batch-wait-ms",
        "0",
        # Each model step waits 1.5 s, so all six requests are admitted (and in flight) long
        # before the first can finish, even on a loaded machine.
        step_delay=1.5,
    )
    n = 6
    try:
        bodies = [{"query": QUERY, "texts": [DOCS[i % len(DOCS)]]} for i in range(n)]
        with concurrent.futures.ThreadPoolExecutor(n) as pool:
            futures = [pool.submit(httpx.post, proc.url + "/rerank", json=b, timeout=60) for b in bodies]
            deadline = time.monotonic() + 30
            while proc.metric("qwen3_rerank_queue_depth") < n:
                assert time.monotonic() < deadline, "requests were never all admitted"
                time.sleep(0.02)
            proc.process.send_signal(signal.SIGTERM)
            responses = [f.result(timeout=60) for f in futures]
        assert [r.status_code for r in responses] == [200] * n
        for body, response in zip(bodies, responses, strict=True):
            assert response.json()[0]["score"] == _approx(reranker.score(body["query"], body["texts"])[0])
        assert proc.process.wait(timeout=30) == 0
        with pytest.raises(httpx.HTTPError):
            httpx.get(proc.url + "/health", timeout=2)
    finally:
        proc.stop()


# -- command line and settings -----------------------------------------------------------------


def test_settings_flags_beat_environment():
    from qwen3_rerank.cli import build_parser
    from qwen3_rerank.cli.serve import resolve

    args = build_parser().parse_args(["serve", "--model", "m", "--max-documents", "7"])
    environ = {
        "QWEN3_RERANK_MAX_DOCUMENTS": "9",
        "QWEN3_RERANK_REQUEST_TIMEOUT": "2.5",
        "QWEN3_RERANK_API_KEY": "a, b",
        "QWEN3_RERANK_MAX_BATCH_WAIT_MS": "10",
    }
    settings, specs = resolve(args, environ)
    assert settings.max_documents == 7 and settings.request_timeout == 2.5
    assert settings.api_keys == ("a", "b") and settings.max_batch_wait == 0.01
    assert settings.host == "127.0.0.1" and settings.cors_origins == ()
    assert [(spec.name, spec.source, spec.dtype) for spec in specs] == [("m", "m", "q8")]


def test_serve_rejects_bad_settings_in_one_line(capsys):
    from qwen3_rerank.cli import main

    assert main(["serve", "--max-queued-requests", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--max-queued-requests" in err


def test_serve_without_the_server_extra(monkeypatch, capsys):
    from qwen3_rerank.cli import main

    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import fails as when not installed
    assert main(["serve", "--model", "nowhere"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "qwen3-rerank[server]" in err


def test_cors_is_off_unless_configured(server):
    response = httpx.options(
        server.url + "/v2/rerank",
        headers={"Origin": "https://example.com", "Access-Control-Request-Method": "POST"},
        timeout=10,
    )
    assert "access-control-allow-origin" not in response.headers
    assert json.loads(response.text)["error"]
