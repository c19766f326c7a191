"""Several models in one server (issue 13, item 4): ``serve --model a=... --model b=...``.

In-process tests serve two fakes whose scores differ (one token per word, times the fake's own
factor), so a request routed to the wrong model shows at once; the last test serves two real
tiny checkpoints (different seeds) from ``qwen3-rerank serve`` and checks each route's scores
against each model's own :meth:`Reranker.score`. The ``--model`` spec rule is tested on its own.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from server_fakes import FakeReranker  # noqa: E402

from qwen3_rerank import ScoredDocument, ScoringRequest  # noqa: E402
from qwen3_rerank.cli import UsageError, build_parser, main  # noqa: E402
from qwen3_rerank.cli.serve import resolve  # noqa: E402
from qwen3_rerank.cli.served_models import env_specs, model_specs, parse_spec  # noqa: E402
from qwen3_rerank.server.app import create_app  # noqa: E402
from qwen3_rerank.server.memory import growth, resident_bytes  # noqa: E402
from qwen3_rerank.server.settings import ServerSettings  # noqa: E402
from qwen3_rerank.server.state import ServerState  # noqa: E402

QUERY = "what do cats eat"
DOCS = ["Cats eat meat.", "Paris is the capital of France.", "Kittens drink milk"]


class ScaledFake(FakeReranker):
    """The fake model with its scores multiplied by ``factor``: two of them score differently."""

    def __init__(self, factor: float, **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self.factor = factor

    def score_requests_with_best_chunks(
        self,
        requests: Sequence[ScoringRequest],
        *,
        raw: bool = False,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[list[ScoredDocument]]:
        scored = super().score_requests_with_best_chunks(requests, raw=raw, should_stop=should_stop)
        return [[ScoredDocument(self.factor * d.score) for d in docs] for docs in scored]


def expected(factor: float, query: str, docs: Sequence[str]) -> list[float]:
    """What a :class:`ScaledFake` scores, from the texts alone: its factor times the pair's words."""
    return [factor * (len(query.split()) + len(doc.split())) for doc in docs]


FACTORS = {"small": 1.0, "big": 10.0}


def two_fakes(**options: object) -> dict[str, ScaledFake]:
    return {name: ScaledFake(factor, **options) for name, factor in FACTORS.items()}


@asynccontextmanager
async def serving(models: object, **settings: object) -> AsyncIterator[tuple[httpx.AsyncClient, ServerState]]:
    """The app started (every model warmed up) and a client on it; drained afterwards."""
    app = create_app(ServerSettings(max_batch_wait=0.0, **settings), models)  # type: ignore[arg-type]
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as client:
            yield client, app.state.server


def run(coro) -> None:
    asyncio.run(asyncio.wait_for(coro, 30))


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never came true"
        await asyncio.sleep(0.01)


def body_for(path: str, model: str | None) -> dict[str, object]:
    """A request for ``path`` in its own shape, naming ``model`` (or none)."""
    if path in ("/score", "/v1/score"):
        body: dict[str, object] = {"text_1": QUERY, "text_2": DOCS}
    elif path == "/rerank tei":
        body = {"query": QUERY, "texts": DOCS}
    else:
        body = {"query": QUERY, "documents": DOCS}
    if model is not None:
        body["model"] = model
    return body


def scores_of(path: str, answer: object) -> list[float]:
    """Scores by input index, whichever shape the answer has."""
    if isinstance(answer, list):  # TEI
        return [r["score"] for r in sorted(answer, key=lambda r: r["index"])]
    assert isinstance(answer, dict)
    if "data" in answer:  # vLLM score
        return [d["score"] for d in answer["data"]]
    return [r["relevance_score"] for r in sorted(answer["results"], key=lambda r: r["index"])]


ROUTES = ["/v1/rerank", "/v2/rerank", "/rerank tei", "/rerank", "/score", "/v1/score"]


# -- routing by the request's `model` ------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES)
def test_each_request_is_scored_by_the_model_it_names(route: str):
    path = route.split()[0]

    async def scenario() -> None:
        models = two_fakes()
        async with serving(models) as (client, _):
            for name, sent in (("big", "big"), ("small", "small"), ("small", None)):  # none: the first model
                before = {n: len(m.steps) for n, m in models.items()}
                response = await client.post(path, json=body_for(route, sent))
                assert response.status_code == 200, response.text
                assert scores_of(path, response.json()) == expected(FACTORS[name], QUERY, DOCS)
                assert {n: len(m.steps) - before[n] for n, m in models.items()} == {n: int(n == name) for n in models}
                if isinstance(response.json(), dict):
                    assert response.json()["model"] == name

    run(scenario())


@pytest.mark.parametrize("route", ROUTES)
def test_an_unknown_model_is_a_404_that_lists_the_served_ones(route: str):
    async def scenario() -> None:
        models = two_fakes()
        async with serving(models) as (client, _):
            response = await client.post(route.split()[0], json=body_for(route, "rerank-english-v3.0"))
            assert response.status_code == 404
            error = response.json()["error"]
            assert error["type"] == "model_not_found"
            assert "'rerank-english-v3.0'" in error["message"] and "small, big" in error["message"]
        assert [m.seen() for m in models.values()] == [["warm-up query"]] * 2  # nothing reached a model

    run(scenario())


def test_one_model_takes_any_name_as_before():
    """Clients send names of their own (Cohere SDK, LiteLLM): a one-model server answers them all."""

    async def scenario() -> None:
        for models in (ScaledFake(3.0), {"only": ScaledFake(3.0)}):
            async with serving(models, model_name="served") as (client, _):
                for sent in ("rerank-english-v3.0", "only", None):
                    response = await client.post("/v2/rerank", json=body_for("/v2/rerank", sent))
                    assert response.status_code == 200, response.text
                    assert scores_of("/v2/rerank", response.json()) == expected(3.0, QUERY, DOCS)
                    assert response.json()["model"] == ("served" if not isinstance(models, dict) else "only")

    run(scenario())


# -- the service routes --------------------------------------------------------------------------


def test_models_and_metrics_list_every_model():
    async def scenario() -> None:
        async with serving(two_fakes()) as (client, _):
            assert (await client.post("/v2/rerank", json=body_for("/v2/rerank", "big"))).status_code == 200
            listed = (await client.get("/v1/models")).json()
            assert [card["id"] for card in listed["data"]] == ["small", "big"]
            metrics = (await client.get("/metrics")).text

        def value(series: str) -> float:
            match = re.search(rf"^{re.escape(series)} (\S+)$", metrics, re.M)
            assert match, f"{series} not in /metrics"
            return float(match.group(1))

        # one warm-up call each, and the request's call for "big"
        assert value('qwen3_rerank_model_calls_total{model="small"}') == 1
        assert value('qwen3_rerank_model_calls_total{model="big"}') == 2
        assert value('qwen3_rerank_documents_total{model="big"}') == 1 + len(DOCS)
        for name in FACTORS:
            assert value(f'qwen3_rerank_queue_depth{{model="{name}"}}') == 0
            assert f'qwen3_rerank_batch_tokens_count{{model="{name}"}}' in metrics
            assert f'qwen3_rerank_queue_wait_seconds_count{{model="{name}"}}' in metrics

    run(scenario())


def test_ready_only_once_every_model_is_warmed_up():
    async def scenario() -> None:
        app = create_app(ServerSettings(max_batch_wait=0.0), two_fakes())  # no lifespan: started by hand
        state: ServerState = app.state.server
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as client:
            not_ready = await client.get("/ready")
            assert not_ready.status_code == 503 and "small, big" in not_ready.json()["error"]["message"]
            await state.models["small"].start()
            not_ready = await client.get("/ready")
            assert not_ready.status_code == 503 and not_ready.json()["error"]["message"].endswith(": big")
            # the warm model already answers; the other is 503 until it is warm too
            assert (await client.post("/v2/rerank", json=body_for("/v2/rerank", "small"))).status_code == 200
            cold = await client.post("/v2/rerank", json=body_for("/v2/rerank", "big"))
            assert cold.status_code == 503 and cold.headers["retry-after"] == "1"
            await state.models["big"].start()
            assert (await client.get("/ready")).json() == {"status": "ready"}
            await state.stop()
            assert (await client.get("/ready")).status_code == 503

    run(scenario())


def test_each_model_has_its_own_admission_limit():
    """A model with every permit out is refused with 429; another model still answers."""
    gate = threading.Semaphore(0)

    async def scenario() -> None:
        models = two_fakes(batch_size=10)
        async with serving(models, max_queued_requests=1) as (client, state):
            models["big"].gate = gate  # after the warm-up: big's next model batch waits for the test
            try:
                held = asyncio.ensure_future(client.post("/v2/rerank", json=body_for("/v2/rerank", "big")))
                await until(lambda: state.models["big"].admission.in_use == 1 and models["big"].busy.is_set())
                refused = await client.post("/v2/rerank", json=body_for("/v2/rerank", "big"))
                assert refused.status_code == 429
                other = await client.post("/v2/rerank", json=body_for("/v2/rerank", "small"))
                assert other.status_code == 200
            finally:
                gate.release(1000)
            assert (await held).status_code == 200

    try:
        run(scenario())
    finally:
        gate.release(1000)  # a failed test must not leave the model thread waiting


# -- the --model spec ----------------------------------------------------------------------------

ON_DISK = {"/models/tiny", "/runs/lr=3e-4/model", "./odd:fp16", "ckpt:q8"}


def on_disk(path: str) -> bool:
    return path in ON_DISK


@pytest.mark.parametrize(
    "text,name,source,dtype",
    [
        ("Qwen/Qwen3-Reranker-0.6B", "", "Qwen/Qwen3-Reranker-0.6B", "q8"),  # the forms of before
        ("/models/tiny", "", "/models/tiny", "q8"),
        ("a=/models/tiny", "a", "/models/tiny", "q8"),
        ("a=/models/tiny:fp16", "a", "/models/tiny", "fp16"),
        ("org/name=Qwen/Qwen3-Reranker-0.6B:q4", "org/name", "Qwen/Qwen3-Reranker-0.6B", "q4"),
        ("/models/tiny:fp32", "", "/models/tiny", "fp32"),
        ("/runs/lr=3e-4/model", "", "/runs/lr=3e-4/model", "q8"),  # an existing path is taken whole
        ("/runs/lr=3e-4/other", "", "/runs/lr=3e-4/other", "q8"),  # "/runs/lr" is no name
        ("./odd:fp16", "", "./odd:fp16", "q8"),  # an existing path with a ':' stays a path
        ("b=ckpt:q8", "b", "ckpt:q8", "q8"),
        ("b=ckpt:q8:fp16", "b", "ckpt:q8", "fp16"),  # the dtype is after the last ':'
    ],
)
def test_model_spec_rule(text: str, name: str, source: str, dtype: str):
    spec = parse_spec(text, "q8", on_disk)
    assert (spec.name, spec.source, spec.dtype) == (name, source, dtype)


@pytest.mark.parametrize(
    "text,message",
    [
        ("a=/models/tiny:fp64", "'fp64' after the last ':' is not a dtype; choose one of: fp32"),
        ("host:8000/model", "'8000/model' after the last ':' is not a dtype"),
        ("=/models/tiny", "empty name before '='"),
        ("a=", "nothing after '='"),
        ("a=:q8", "no model before ':q8'"),
        ("  ", "empty model spec"),
    ],
)
def test_bad_model_specs_are_one_clear_error(text: str, message: str):
    with pytest.raises(UsageError, match=re.escape(message)):
        parse_spec(text, "q8", on_disk)


def test_model_names_are_unique_and_given_once():
    options: dict[str, object] = {"device": "cpu"}
    specs = model_specs(
        ["/models/tiny", "x=Qwen/Qwen3-Reranker-0.6B:q4"],
        dtype="q8",
        served_model_name=None,
        options=options,
        exists=on_disk,
    )
    assert [(s.name, s.source, s.dtype) for s in specs] == [
        ("tiny", "/models/tiny", "q8"),  # named as before: the folder's name
        ("x", "Qwen/Qwen3-Reranker-0.6B", "q4"),
    ]
    assert specs[0].options == options and specs[0].options is not options
    with pytest.raises(UsageError, match="two models are served as 'tiny'"):
        model_specs(
            ["/models/tiny", "tiny=other/model"], dtype="q8", served_model_name=None, options={}, exists=on_disk
        )
    with pytest.raises(UsageError, match="with several --model, name each one"):
        model_specs(["a=x/y", "b=x/z"], dtype="q8", served_model_name="n", options={}, exists=on_disk)
    with pytest.raises(UsageError, match="give one name"):
        model_specs(["a=x/y"], dtype="q8", served_model_name="n", options={}, exists=on_disk)
    (only,) = model_specs(["x/y"], dtype="q8", served_model_name="n", options={}, exists=on_disk)
    assert only.name == "n"


def test_serve_resolves_several_models_from_flags_or_environment():
    parser = build_parser()
    args = parser.parse_args(["serve", "--model", "a=x/one", "--model", "b=x/two:fp16", "--dtype", "fp32"])
    settings, specs = resolve(args, {"QWEN3_RERANK_MODEL": "ignored/model"})  # a flag wins
    assert settings.model_name == "a"
    assert [(s.name, s.source, s.dtype) for s in specs] == [("a", "x/one", "fp32"), ("b", "x/two", "fp16")]
    settings, specs = resolve(parser.parse_args(["serve"]), {"QWEN3_RERANK_MODEL": "a=x/one, b=x/two:q4"})
    assert [(s.name, s.source, s.dtype) for s in specs] == [("a", "x/one", "q8"), ("b", "x/two", "q4")]
    settings, specs = resolve(parser.parse_args(["serve", "--model", "x/one"]), {})  # one model, as before
    assert settings.model_name == "x/one" and [(s.name, s.dtype) for s in specs] == [("x/one", "q8")]
    assert env_specs("/a,b", exists=lambda path: path == "/a,b") == ["/a,b"]


def test_serve_refuses_duplicate_names_in_one_line(capsys):
    assert main(["serve", "--model", "a=x/one", "--model", "a=x/two"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "two models are served as 'a'" in err


def test_resident_memory_reads_the_resident_set(tmp_path: Path):
    import os

    statm = tmp_path / "statm"
    statm.write_text("1000 250 30 1 0 200 0\n")
    assert resident_bytes(statm) == 250 * os.sysconf("SC_PAGE_SIZE")
    assert resident_bytes(tmp_path / "missing") is None
    assert growth(100 * 2**20, 740 * 2**20) == "resident memory 100 MiB -> 740 MiB (+640 MiB)"
    assert growth(None, 1) == "resident memory unknown on this platform"


# -- two real models in one `qwen3-rerank serve` -------------------------------------------------


@pytest.fixture(scope="module")
def second_model_dir(tmp_path_factory, tokenizer_dir) -> Path:
    """Another tiny random checkpoint (another seed), exported: a model that scores otherwise."""
    from conftest import write_model_dir

    from qwen3_rerank.export.random_model import make_random_checkpoint

    checkpoint = make_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "seed1", tokenizer_dir, size="tiny", seed=1)
    return write_model_dir(checkpoint, tmp_path_factory.mktemp("model") / "tiny-onnx-seed1")


@pytest.mark.slow
def test_serve_two_real_models_routes_each_request_to_its_own(tiny_model_dir, second_model_dir, reranker, tmp_path):
    from test_server import ServerProcess

    from qwen3_rerank import Reranker

    second = Reranker.from_pretrained(second_model_dir, dtype="fp32", threads=1)
    want = {tiny_model_dir.name: reranker.score(QUERY, DOCS), "second": second.score(QUERY, DOCS)}
    assert want["second"] != pytest.approx(want[tiny_model_dir.name], abs=1e-3)  # or routing could not show
    # the first model as before (a folder, named by it, --dtype), the second named and with its dtype
    proc = ServerProcess(tiny_model_dir, tmp_path / "server.log", "--model", f"second={second_model_dir}:fp32")
    try:
        with httpx.Client(base_url=proc.url, timeout=60) as client:
            listed = [card["id"] for card in client.get("/v1/models").json()["data"]]
            assert listed == [tiny_model_dir.name, "second"]
            for name, sent in ((tiny_model_dir.name, None), ("second", "second"), (tiny_model_dir.name, listed[0])):
                for route in ("/v2/rerank", "/rerank tei", "/score"):
                    response = client.post(route.split()[0], json=body_for(route, sent))
                    assert response.status_code == 200, response.text
                    got = scores_of(route.split()[0], response.json())
                    assert got == pytest.approx(want[name], rel=1e-5, abs=1e-6), (name, route)
            unknown = client.post("/v2/rerank", json=body_for("/v2/rerank", "third"))
            assert unknown.status_code == 404 and "served models: tiny-onnx, second" in unknown.text
            metrics = client.get("/metrics").text
        for name in listed:
            assert f'qwen3_rerank_model_calls_total{{model="{name}"}}' in metrics
        log = proc.log()
        for name in listed:  # each model's memory at start, for budgeting
            assert re.search(rf"model {re.escape(name)} loaded in .* resident memory \d+ MiB -> \d+ MiB", log), log
            assert re.search(rf"model {re.escape(name)} warmed up in .* resident memory now \d+ MiB", log), log
    finally:
        proc.stop()
