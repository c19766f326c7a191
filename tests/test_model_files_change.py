"""The model's files changing on disk under a running server (issue 11, item 3).

Each test serves its own copy of the tiny model (so it can rename, delete or overwrite it) with
the real :class:`~qwen3_rerank.Reranker`, in-process over httpx's ASGI transport; the truncation
case runs ``qwen3-rerank serve`` as a child process, because running the model on a truncated
memory-mapped file ends the process with SIGBUS.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from qwen3_rerank import Reranker  # noqa: E402
from qwen3_rerank.server.app import create_app  # noqa: E402
from qwen3_rerank.server.model_watch import ModelWatch, external_data_files, mapped_files  # noqa: E402
from qwen3_rerank.server.settings import ServerSettings  # noqa: E402
from qwen3_rerank.server.state import ServerState  # noqa: E402

QUERY = "what do cats eat"
DOCS = ["Cats are carnivores and eat mostly meat.", "The stock market closed higher today.", "Kittens drink milk."]
BODY = {"query": QUERY, "documents": DOCS}
LOGGER = "qwen3_rerank.server"


@pytest.fixture
def model_copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny model (with its score graph once loaded)."""
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))


@asynccontextmanager
async def serving(model_dir: Path) -> AsyncIterator[tuple[httpx.AsyncClient, ServerState]]:
    reranker = Reranker.from_pretrained(model_dir, dtype="fp32", threads=1)
    app = create_app(ServerSettings(max_batch_wait=0.0), reranker)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as client:
            yield client, app.state.server


def run(coro) -> None:
    asyncio.run(asyncio.wait_for(coro, 120))


async def scores(client: httpx.AsyncClient) -> list[float]:
    response = await client.post("/v2/rerank", json=BODY)
    assert response.status_code == 200, response.text
    results = sorted(response.json()["results"], key=lambda r: r["index"])
    return [r["relevance_score"] for r in results]


def weight_file(model_dir: Path) -> Path:
    """The external weight file of the tiny model (its graph keeps no weights inline)."""
    files = sorted((model_dir / "onnx").glob("*.onnx_data"))
    assert files, "the tiny model has no external weight file"
    return files[0]


def scramble_in_place(path: Path) -> None:
    """Write other bytes over a file without replacing it (same inode, same size), as ``cp`` over it does."""
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.write(os.urandom(size))


def warnings_of(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == level]


def test_the_watch_knows_the_weight_file_is_memory_mapped(model_copy):
    reranker = Reranker.from_pretrained(model_copy, dtype="fp32", threads=1)
    data = weight_file(model_copy)
    assert data in [p.resolve() for p in external_data_files(reranker.engine.path)]
    mapped = mapped_files()
    if mapped is None:
        pytest.skip("no /proc/self/maps on this system: every watched file counts as mapped")
    stat = data.stat()
    assert (os.major(stat.st_dev), os.minor(stat.st_dev), stat.st_ino) in mapped
    graph = reranker.engine.path.stat()  # read and closed at load, not mapped
    assert (os.major(graph.st_dev), os.minor(graph.st_dev), graph.st_ino) not in mapped


def test_folder_replaced_by_rename_keeps_answers_and_ready(model_copy, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)

    async def scenario() -> None:
        async with serving(model_copy) as (client, state):
            before = await scores(client)
            # an operator's swap: the new model in a folder beside it, then two renames
            new = Path(shutil.copytree(model_copy, model_copy.with_name("model.new")))
            scramble_in_place(weight_file(new))  # so that a server that loaded it would answer otherwise
            os.rename(model_copy, model_copy.with_name("model.old"))
            os.rename(new, model_copy)
            assert (await client.get("/ready")).status_code == 200
            assert await scores(client) == before
            assert await scores(client) == before

    run(scenario())
    replaced = [m for m in warnings_of(caplog, logging.WARNING) if "replaced by another file" in m]
    assert len(replaced) == 2, replaced  # graph and weight file, once each however many requests
    assert not warnings_of(caplog, logging.ERROR)


def test_folder_deleted_keeps_answers_and_ready(model_copy, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)

    async def scenario() -> None:
        async with serving(model_copy) as (client, _state):
            before = await scores(client)
            shutil.rmtree(model_copy)
            assert (await client.get("/ready")).status_code == 200
            assert await scores(client) == before

    run(scenario())
    gone = [m for m in warnings_of(caplog, logging.WARNING) if "renamed or deleted" in m]
    assert len(gone) == 2, gone
    assert not warnings_of(caplog, logging.ERROR)


def test_weights_overwritten_in_place_fail_loudly_instead_of_answering_wrong(model_copy, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)

    async def scenario() -> None:
        async with serving(model_copy) as (client, state):
            before = await scores(client)
            scramble_in_place(weight_file(model_copy))
            ready = await client.get("/ready")
            assert ready.status_code == 503
            assert ready.json()["error"]["type"] == "model_changed"
            for _ in range(3):
                refused = await client.post("/v2/rerank", json=BODY)
                assert refused.status_code == 503
                error = refused.json()["error"]
                assert error["type"] == "model_changed"
                assert "overwritten in place" in error["message"] and "restart" in error["message"]
                assert "retry-after" not in refused.headers  # waiting does not help: a restart does
            # What the server spares its clients: the same session, asked directly, now answers otherwise.
            direct = state.default.model.score(QUERY, DOCS)
            assert direct != pytest.approx(before), "ONNX Runtime no longer reads weights through the mapping"

    run(scenario())
    errors = warnings_of(caplog, logging.ERROR)
    assert len(errors) == 1 and "overwritten in place" in errors[0], errors  # logged once


def test_queued_request_is_refused_when_weights_change_before_its_step(model_copy):
    """The check before each model step: a request already past the door is not scored on changed weights."""

    async def scenario() -> None:
        async with serving(model_copy) as (client, state):
            await scores(client)
            real_check = state.default.watch.check
            calls = 0

            def check_then_scramble() -> str | None:  # the weights change between the door and the step
                nonlocal calls
                calls += 1
                if calls == 1:
                    result = real_check()
                    scramble_in_place(weight_file(model_copy))
                    return result
                return real_check()

            state.default.watch.check = check_then_scramble  # type: ignore[method-assign]
            refused = await client.post("/v2/rerank", json=BODY)
            assert refused.status_code == 503 and refused.json()["error"]["type"] == "model_changed"

    run(scenario())


def test_truncated_weight_file_gives_503_not_a_crash(model_copy, tmp_path):
    from test_server import ServerProcess

    server = ServerProcess(model_copy, tmp_path / "server.log")
    try:
        ok = httpx.post(server.url + "/v2/rerank", json=BODY, timeout=60)
        assert ok.status_code == 200
        with open(weight_file(model_copy), "r+b") as f:
            f.truncate(0)  # running the model now would read unmapped pages: SIGBUS
        for path in ("/ready", "/v2/rerank"):
            response = httpx.request("GET" if path == "/ready" else "POST", server.url + path, json=BODY, timeout=60)
            assert response.status_code == 503 and response.json()["error"]["type"] == "model_changed"
        assert server.process.poll() is None, server.log()
        assert server.log().count("overwritten in place") == 1
    finally:
        server.stop()


def test_watch_on_plain_files(tmp_path, caplog):
    """The watch's rules on files it is told are mapped or not (no model needed)."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    mapped_file, read_file = tmp_path / "weights.onnx_data", tmp_path / "model.onnx"
    mapped_file.write_bytes(b"a" * 100)
    read_file.write_bytes(b"b" * 100)
    stat = mapped_file.stat()
    watch = ModelWatch([read_file, mapped_file], mapped={(os.major(stat.st_dev), os.minor(stat.st_dev), stat.st_ino)})
    try:
        assert watch.check() is None
        read_file.write_bytes(b"c" * 50)  # not mapped: a warning, answers unaffected
        assert watch.check() is None
        assert any("changed in place" in m for m in warnings_of(caplog, logging.WARNING))
        mapped_file.write_bytes(b"d" * 100)  # same size, new mtime: still caught
        os.utime(mapped_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
        failure = watch.check()
        assert failure is not None and str(mapped_file) in failure
        assert watch.check() == failure  # stays failed
    finally:
        watch.close()
    unknown = ModelWatch([read_file], mapped=None)  # no /proc: every file counts as mapped
    try:
        read_file.write_bytes(b"e")
        assert unknown.check() is not None
    finally:
        unknown.close()
