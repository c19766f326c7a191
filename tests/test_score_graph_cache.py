"""The score-graph cache under faults: read-only model folders, concurrent starts, a builder killed
mid-write, a full disk. Each test injects its fault; the scorer runs in real processes where the
fault is about processes (concurrency, SIGKILL, a read-only mount)."""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

import qwen3_rerank
from qwen3_rerank import Reranker
from qwen3_rerank import score_graph as sg
from qwen3_rerank import score_graph_build as sgb
from qwen3_rerank.cli.main import main as cli_main
from qwen3_rerank.engine import OnnxEngine
from qwen3_rerank.files import resolve_model
from qwen3_rerank.prompt_tokenizer import PromptTokenizer
from qwen3_rerank.score_graph import ScoreGraph, ensure_score_graph

QUERY = "What is the capital of France?"
DOCS = ["Paris is the capital of France.", "Berlin is in Germany.", "", "word " * 30, "Lyon is in France."]
SRC = str(Path(qwen3_rerank.__file__).resolve().parents[1])

#: One scorer process: loads the model (building or finding its score graph) and prints what it
#: used and its scores as one JSON line. argv: model folder, mode (load | into-cache), cache folder,
#: start time (wall clock, so that processes start together), lock wait in seconds.
WORKER = r"""
import json, logging, os, sys, time
from pathlib import Path

folder, mode, cache, start, wait = sys.argv[1:6]
import qwen3_rerank.score_graph as sg
import qwen3_rerank.score_graph_build as sgb
from qwen3_rerank import Reranker

sg.LOCK_WAIT_S = float(wait)
kill_at = int(os.environ.get("KILL_AT", "-1"))
if kill_at >= 0:  # SIGKILL this process right after step KILL_AT of the write (0: the files are written)
    import os as real_os, signal

    def die():
        real_os.kill(real_os.getpid(), signal.SIGKILL)

    if kill_at == 0:
        write = sgb._write_model
        sgb._write_model = lambda *a, **k: (write(*a, **k), die())
    else:
        steps = [0]

        class Os:  # score_graph's os, whose renames count as steps
            def __getattr__(self, name):
                return getattr(real_os, name)

            def _step(self, fn, *a):
                fn(*a)
                steps[0] += 1
                if steps[0] == kill_at:
                    die()

            def replace(self, *a):
                self._step(real_os.replace, *a)

            def rename(self, *a):
                self._step(real_os.rename, *a)

        sg.os = Os()
built = []
class Catch(logging.Handler):
    def emit(self, record):
        if "built the score graph" in record.getMessage():
            built.append(record.getMessage())
logging.getLogger("qwen3_rerank").addHandler(Catch())
logging.getLogger("qwen3_rerank").setLevel(logging.INFO)
print(json.dumps({"ready": True}), flush=True)
time.sleep(max(0.0, float(start) - time.time()))
if mode == "into-cache":
    from qwen3_rerank.engine import OnnxEngine
    from qwen3_rerank.files import resolve_model
    from qwen3_rerank.prebuild import score_graph_for
    from qwen3_rerank.prompt_tokenizer import PromptTokenizer

    files = resolve_model(folder, "fp32")
    tok = PromptTokenizer.from_file(files.tokenizer, pad_token=files.pad_token)
    graph = score_graph_for(files, tok, fallback=False, cache=cache, into_cache=True)
    rr = Reranker(OnnxEngine(graph, config=files.config, threads=1), tok)
else:
    rr = Reranker.from_pretrained(folder, dtype="fp32", threads=1, score_graph_cache=cache)
docs = json.loads(sys.stdin.readline())
print(json.dumps({
    "path": str(rr.engine.path),
    "score_graph": rr.engine.is_score_graph,
    "built": len(built),
    "scores": rr.score("What is the capital of France?", docs, raw=True),
}), flush=True)
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != sg.CACHE_ENV}
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    return {**env, **extra}


def _start(
    cmd_prefix: list[str],
    folder: Path,
    mode: str,
    cache: Path,
    start: float,
    wait: float = 600.0,
    env: dict[str, str] | None = None,
):
    proc = subprocess.Popen(
        [*cmd_prefix, sys.executable, "-c", WORKER, str(folder), mode, str(cache), str(start), str(wait)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env or _env(),
    )
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(DOCS) + "\n")
    proc.stdin.flush()
    return proc


def _result(proc: subprocess.Popen, timeout: float = 300) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return lines[-1]


def _temps(*folders: Path) -> list[str]:
    return [p.name for folder in folders if folder.is_dir() for p in folder.iterdir() if sg._TMP_MARK in p.name]


def _entries(cache: Path) -> list[Path]:
    return sorted(p for p in cache.iterdir() if (p / "score.onnx").is_file()) if cache.is_dir() else []


@pytest.fixture(scope="module")
def reference(tiny_model_dir) -> list[float]:
    """The plain path's gaps: what every fast start must give."""
    plain = Reranker.from_pretrained(tiny_model_dir, dtype="fp32", score_graph=False, prefix_reuse=False)
    return plain.score(QUERY, DOCS, raw=True)


@pytest.fixture
def model_copy(tmp_path, tiny_model_dir) -> Path:
    """A fresh copy of the tiny model with no score graph."""
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    for stale in folder.glob("onnx/*score*"):
        stale.unlink()
    return folder


def _ids(folder: Path):
    files = resolve_model(folder, "fp32")
    return files, PromptTokenizer.from_file(files.tokenizer, pad_token=files.pad_token)


# -- the cache itself ----------------------------------------------------------------------------------


def test_cache_entry_is_self_contained_and_keyed_by_content(tmp_path, model_copy, reference):
    """A cache-dir graph cannot refer to the source's weight file by a relative name (it lies in
    another folder): it carries its own copy, so it scores right even once the source is gone."""
    import onnx

    cache = tmp_path / "cache"
    files, tok = _ids(model_copy)
    assert (files.onnx.parent / "model.onnx_data").is_file()  # the source has external weights
    graph = ensure_score_graph(files.onnx, tok.yes_id, tok.no_id, cache=cache, into_cache=True)
    assert graph.path.parent.parent == cache and graph.path.name == "score.onnx"
    assert not list(files.onnx.parent.glob("*score*"))  # nothing written beside the model
    proto = onnx.load(str(graph.path), load_external_data=False)
    locations = {e.value for t in proto.graph.initializer for e in t.external_data if e.key == "location"}
    assert locations == {"score.onnx_data"}

    # keyed by content, never by path: another copy of the same files finds the same entry
    other = tmp_path / "elsewhere"
    shutil.copytree(model_copy, other)
    again = ensure_score_graph(other / "onnx" / "model.onnx", tok.yes_id, tok.no_id, cache=cache, into_cache=True)
    assert again == graph and len(_entries(cache)) == 1

    shutil.rmtree(model_copy)
    shutil.rmtree(other)
    rr = Reranker(OnnxEngine(graph, config=files.config), tok)
    np.testing.assert_allclose(rr.score(QUERY, DOCS, raw=True), reference, atol=1e-4)


def test_a_later_start_finds_the_cache_and_changed_weights_miss_it(tmp_path, model_copy, monkeypatch):
    cache = tmp_path / "cache"
    files, tok = _ids(model_copy)
    graph = ensure_score_graph(files.onnx, tok.yes_id, tok.no_id, cache=cache, into_cache=True)
    mtime = graph.path.stat().st_mtime_ns
    hashed = []
    real_sha256 = sg.file_sha256
    monkeypatch.setattr(sg, "file_sha256", lambda path: hashed.append(path.name) or real_sha256(path))
    # a plain later start (writable folder): found in the cache, not rebuilt beside the model, and
    # without reading the model again (the hashes are remembered against the files' stat)
    rr = Reranker.from_pretrained(model_copy, dtype="fp32", score_graph_cache=cache)
    assert rr.engine.path == graph.path and graph.path.stat().st_mtime_ns == mtime
    assert not list(files.onnx.parent.glob("*score*"))
    assert hashed == []
    # other weights under the same names: another key
    data = files.onnx.parent / "model.onnx_data"
    raw = bytearray(data.read_bytes())
    raw[-1] ^= 1
    data.write_bytes(bytes(raw))
    changed = ensure_score_graph(files.onnx, tok.yes_id, tok.no_id, cache=cache, into_cache=True)
    assert changed.path != graph.path and len(_entries(cache)) == 2
    assert "model.onnx_data" in hashed  # a changed stat means reading it again


def test_half_written_graph_is_never_taken_for_a_whole_one(model_copy, reference):
    """A graph file without its record (the record is written last), or with a record whose own
    data file is cut, is rebuilt; the stale temporary folder of a dead builder is removed."""
    files, tok = _ids(model_copy)
    graph = ensure_score_graph(files.onnx, tok.yes_id, tok.no_id)
    graph.path.with_suffix(".json").unlink()
    graph.path.write_bytes(graph.path.read_bytes()[:1000])  # a cut graph, no record
    dead = files.onnx.parent / f".model.score.onnx{sg._TMP_MARK}999999999-x"
    dead.mkdir()
    (dead / "model.score.onnx").write_bytes(b"partial")
    assert sg.cached_score_graph(files.onnx, tok.yes_id, tok.no_id) is None
    rr = Reranker.from_pretrained(model_copy, dtype="fp32")
    assert rr.engine.is_score_graph
    np.testing.assert_allclose(rr.score(QUERY, DOCS, raw=True), reference, atol=1e-4)
    assert _temps(files.onnx.parent) == []


def test_optimize_builds_into_a_chosen_cache(tmp_path, model_copy, capsys):
    cache = tmp_path / "image-cache"
    assert cli_main(["optimize", str(model_copy), "--dtype", "fp32", "--cache", str(cache)]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert Path(record["score_graph"]).parent.parent == cache
    assert not list((model_copy / "onnx").glob("*score*"))
    assert [p.parent for p in cache.glob("*/score.onnx")] == _entries(cache)
    # a later `rerank` pointed at that cache uses it, and writes nothing beside the model
    argv = ["rerank", "--model", str(model_copy), "--dtype", "fp32", "--score-graph-cache", str(cache)]
    assert cli_main([*argv, "--json", "--query", QUERY, *DOCS[:2]]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2
    assert not list((model_copy / "onnx").glob("*score*")) and len(_entries(cache)) == 1


# -- faults ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["beside", "cache"])
def test_full_disk_warns_once_and_scores_with_the_full_graph(
    tmp_path, model_copy, reference, monkeypatch, caplog, where
):
    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sgb, "_write_model", no_space)
    cache = tmp_path / "cache"
    files, tok = _ids(model_copy)
    with caplog.at_level(logging.WARNING, logger="qwen3_rerank"):
        if where == "beside":
            rr = Reranker.from_pretrained(model_copy, dtype="fp32", score_graph_cache=cache)
        else:
            from qwen3_rerank.prebuild import score_graph_for

            assert score_graph_for(files, tok, cache=cache, into_cache=True) is None
            rr = Reranker.from_pretrained(model_copy, dtype="fp32", score_graph=False)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    folder = files.onnx.parent if where == "beside" else cache
    assert f"no space left in {folder} for the score graph (it needs about " in warnings[0], warnings[0]
    assert warnings[0].endswith(" MB))")
    assert "\n" not in warnings[0]
    assert not rr.engine.is_score_graph
    np.testing.assert_allclose(rr.score(QUERY, DOCS, raw=True), reference, atol=1e-4)
    assert _temps(files.onnx.parent, cache) == [] and _entries(cache) == []
    assert not list(files.onnx.parent.glob("*score*"))


def test_full_disk_while_writing_the_record_leaves_no_graph(model_copy, monkeypatch, caplog):
    def no_space(path, meta):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sg, "_write_record", no_space)
    with caplog.at_level(logging.WARNING, logger="qwen3_rerank"):
        rr = Reranker.from_pretrained(model_copy, dtype="fp32")
    assert not rr.engine.is_score_graph
    assert "no space left in" in caplog.text
    files, tok = _ids(model_copy)
    assert sg.cached_score_graph(files.onnx, tok.yes_id, tok.no_id) is None
    assert _temps(files.onnx.parent) == []


@pytest.mark.slow  # several model-loading processes per case
@pytest.mark.parametrize(
    ("mode", "wait"),
    [("load", 600.0), ("into-cache", 600.0), ("into-cache", 0.0)],
    ids=["beside-locked", "cache-locked", "cache-unlocked"],
)
def test_four_processes_starting_together(tmp_path, model_copy, reference, mode, wait):
    """Locked: exactly one process builds, the others wait and find its graph. Unlocked (no wait):
    they may all build, and still end with one graph, whole, and no temporary files."""
    cache = tmp_path / "cache"
    start = time.time() + 4.0
    procs = [_start([], model_copy, mode, cache, start, wait) for _ in range(4)]
    results = [_result(p) for p in procs]
    for result in results:
        assert result["score_graph"], result
        np.testing.assert_allclose(result["scores"], reference, atol=1e-4)
    assert len({r["path"] for r in results}) == 1
    onnx_dir = model_copy / "onnx"
    if mode == "load":
        assert results[0]["path"] == str(onnx_dir / "model.score.onnx")
        assert sorted(p.name for p in onnx_dir.glob("*score*")) == ["model.score.json", "model.score.onnx"]
    else:
        assert len(_entries(cache)) == 1
        assert sorted(p.name for p in cache.iterdir()) == sorted([_entries(cache)[0].name, "index"])
    if wait > 0:
        assert sum(r["built"] for r in results) == 1, [r["built"] for r in results]
    assert _temps(onnx_dir, cache) == []


def _watch(proc: subprocess.Popen, folders: tuple[Path, ...], timeout: float = 120) -> tuple[float, float]:
    """Seconds until a temporary entry first appears in ``folders`` and until the process ends."""
    t0 = time.monotonic()
    first = None
    while proc.poll() is None and time.monotonic() - t0 < timeout:
        if first is None and _temps(*folders):
            first = time.monotonic() - t0
        time.sleep(0.005)
    return (first if first is not None else 0.0), time.monotonic() - t0


@pytest.mark.slow  # several model-loading processes per case
@pytest.mark.parametrize("mode", ["load", "into-cache"])
def test_sigkill_during_the_build_leaves_nothing_mistaken_for_a_graph(tmp_path, model_copy, reference, mode):
    """Kill a building process at a random point of its build, five times; each later start finds
    either a whole graph or none, scores right with a score graph, and leaves no temporary files.

    An uninterrupted run measures the build's window on this machine (from its temporary folder's
    appearance to the process's end); each kill comes at a random point of that window after the
    temporary folder appears."""
    rng = random.Random(int.from_bytes(os.urandom(4), "little"))
    cache = tmp_path / "cache"
    onnx_dir = model_copy / "onnx"

    def fresh() -> None:
        for stale in onnx_dir.glob("model.score*"):
            stale.unlink()
        shutil.rmtree(cache, ignore_errors=True)

    proc = _start([], model_copy, mode, cache, 0.0)
    appeared, ended = _watch(proc, (onnx_dir, cache))
    _result(proc)
    window = max(ended - appeared, 0.05)
    delays = []
    for _ in range(5):
        fresh()
        proc = _start([], model_copy, mode, cache, 0.0)
        t0 = time.monotonic()
        while not _temps(onnx_dir, cache) and proc.poll() is None and time.monotonic() - t0 < 120:
            time.sleep(0.002)
        delays.append(round(rng.uniform(0.0, window), 3))
        time.sleep(delays[-1])
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        rr = _later_start(mode, model_copy, cache)
        assert rr.engine.is_score_graph, delays
        np.testing.assert_allclose(rr.score(QUERY, DOCS, raw=True), reference, atol=1e-4, err_msg=str(delays))
        assert _temps(onnx_dir, cache) == [], delays
        assert len(_entries(cache)) == (0 if mode == "load" else 1), delays


def _later_start(mode: str, model: Path, cache: Path):
    files, tok = _ids(model)
    if mode == "load":
        return Reranker.from_pretrained(model, dtype="fp32", score_graph_cache=cache)
    graph = ensure_score_graph(files.onnx, tok.yes_id, tok.no_id, cache=cache, into_cache=True)
    return Reranker(OnnxEngine(graph, config=files.config), tok)


@pytest.mark.slow  # several model-loading processes per case
@pytest.mark.parametrize("step", [0, 1, 2])
@pytest.mark.parametrize("mode", ["load", "into-cache"])
def test_sigkill_after_each_step_of_the_write(tmp_path, model_copy, reference, mode, step):
    """The same, deterministic: the builder is killed right after it wrote the files (0) or
    right after its first or second rename: between them a reader must see no graph or a whole one."""
    cache = tmp_path / "cache"
    proc = _start([], model_copy, mode, cache, 0.0, env=_env(KILL_AT=str(step)))
    proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL
    onnx_dir = model_copy / "onnx"
    record = onnx_dir / "model.score.json"
    if mode == "load" and record.is_file():  # the commit marker is there: the graph must be whole
        files, tok = _ids(model_copy)
        assert sg.cached_score_graph(files.onnx, tok.yes_id, tok.no_id) is not None
    rr = _later_start(mode, model_copy, cache)
    assert rr.engine.is_score_graph
    np.testing.assert_allclose(rr.score(QUERY, DOCS, raw=True), reference, atol=1e-4)
    assert _temps(onnx_dir, cache) == []
    assert len(_entries(cache)) == (0 if mode == "load" else 1)


# -- a read-only model folder ------------------------------------------------------------------------------


def _read_only_runner(folder: Path) -> tuple[list[str], str]:
    """A command prefix under which a process cannot write ``folder``, and how; ``"skip: why"``
    where this machine allows no way.

    Root ignores permission bits, so as root: ``unshare -m`` gives the process a mount namespace
    of its own, in which a read-only bind mount of the folder is made (nothing outside that
    process sees it); else ``setpriv`` runs it as ``nobody``, which cannot write a root-owned
    folder. Not root: permission bits hold, and the test ``chmod``s the folder.
    """
    if os.geteuid() != 0:
        return [], "unprivileged"
    mount = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0"'
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", mount + ' && ! touch "$0/probe" 2>/dev/null', str(folder)],
        capture_output=True,
        text=True,
    )
    if probe.returncode == 0 and not (folder / "probe").exists():
        return ["unshare", "-m", "sh", "-c", mount + ' && exec "$@"', str(folder)], "unshare"
    why = [f"unshare -m + a read-only bind mount failed ({probe.stderr.strip()[:160] or probe.returncode})"]
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
    probe = subprocess.run(
        [*nobody, sys.executable, "-c", "import qwen3_rerank, onnxruntime"], capture_output=True, text=True, env=_env()
    )
    if probe.returncode == 0:
        return nobody, "nobody"
    why.append(f"running as nobody failed ({probe.stderr.strip()[-160:] or probe.returncode})")
    return [], "skip: " + "; ".join(why)


def test_read_only_model_folder_keeps_the_fast_path(model_copy, reference):
    """The model folder cannot be written: the score graph goes to the cache, keyed by content,
    and the next start finds it there."""
    root = Path(tempfile.mkdtemp(prefix="qwen3-rerank-ro-"))  # readable by nobody, unlike tmp_path
    root.chmod(0o755)
    model, cache = root / "model", root / "cache"
    try:
        shutil.copytree(model_copy, model)
        cache.mkdir()
        cache.chmod(0o777)
        # what a builder killed before the folder became read-only left: it cannot be removed now,
        # and must not stop the build into the cache
        stale = model / "onnx" / f".model.score.json{sg._TMP_MARK}999999999-x"
        stale.write_text("{")
        prefix, how = _read_only_runner(model)
        if how.startswith("skip"):
            pytest.skip(how)
        if how == "unprivileged":
            for path in (model, model / "onnx"):
                path.chmod(0o555)
        first = _result(_start(prefix, model, "load", cache, 0.0))
        second = _result(_start(prefix, model, "load", cache, 0.0))
        for result in (first, second):
            assert result["score_graph"], result
            np.testing.assert_allclose(result["scores"], reference, atol=1e-4)
        entries = _entries(cache)
        assert len(entries) == 1 and first["path"] == second["path"] == str(entries[0] / "score.onnx")
        assert (first["built"], second["built"]) == (1, 0)  # the second start found the cache
        assert not list((model / "onnx").glob("model.score*"))
        assert _temps(model / "onnx", cache) == [stale.name]
        record = ScoreGraph.from_record(entries[0] / "score.onnx")
        assert record.source_sha256 == sg.file_sha256(model / "onnx" / "model.onnx")
    finally:
        for path in (model, model / "onnx"):
            if path.is_dir():
                path.chmod(0o755)
        shutil.rmtree(root, ignore_errors=True)
