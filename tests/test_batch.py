"""`qwen3-rerank batch` on Ray Data: a local instance, 2 reranker actors, every row back once.

Ray here is a small local instance (3 logical CPUs: one per actor and one for reading and
writing, a 100 MB object store), shut down at the end of the module.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no reporting from test instances (no network here)
pytest.importorskip("ray")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from qwen3_rerank.errors import InputError  # noqa: E402
from qwen3_rerank.ray_batch import score_file  # noqa: E402

QUERIES = [
    "what is the capital of France",
    "how do vaccines work",
    "best way to learn Python",
    "pourquoi le ciel est-il bleu ?",
    "causes of the French revolution",
]
DOCS = [
    "Paris is the capital and largest city of France.",
    "Vaccines train the immune system to recognise a pathogen.",
    "Python is easy to learn with small projects and the official tutorial.",
    "Le ciel est bleu à cause de la diffusion de Rayleigh.",
    "The French Revolution began in 1789 amid fiscal crisis and social inequality. " * 3,
    "Berlin is the capital of Germany.",
    "短い文書",
    "",
]
N_ROWS = len(QUERIES) * len(DOCS)  # 40


def pairs_table():
    rows = [(q, d) for q in QUERIES for d in DOCS]
    ids = [1000 + 7 * i for i in range(len(rows))]  # ids unlike row numbers
    return pa.table(
        {
            "pair_id": ids,
            "query": [q for q, _ in rows],
            "document": [d for _, d in rows],
            "note": [f"n{i}" for i in range(len(rows))],
        }
    )


def expected_scores(reranker, table):
    scores = reranker.score_pairs(
        list(zip(table.column("query").to_pylist(), table.column("document").to_pylist(), strict=True))
    )
    return dict(zip(table.column("pair_id").to_pylist(), scores, strict=True))


def check_output(folder, table, reranker, score_column="score"):
    out = pq.read_table(str(folder)).to_pylist()
    ids = [row["pair_id"] for row in out]
    assert len(ids) == N_ROWS and sorted(ids) == sorted(table.column("pair_id").to_pylist())  # each row once
    want = expected_scores(reranker, table)
    source = {row["pair_id"]: row for row in table.to_pylist()}
    for row in out:
        original = source[row["pair_id"]]
        assert {k: row[k] for k in original} == original  # input columns come back unchanged
        assert row[score_column] == pytest.approx(want[row["pair_id"]], abs=1e-6)
    return out


def run_cli(args, env_extra=None, timeout=300, cwd=None):
    # the environment as it is now: joining the module's cluster by address needs the variables its
    # ray.init() wrote (RAY_AUTH_MODE=token, ...); local_ray takes them out again when it stops Ray
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "qwen3_rerank", "batch", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
    )


@pytest.mark.slow
def test_cli_starts_a_local_ray_by_default(tmp_path, tiny_model_dir, reranker):
    # with or without the module's Ray instance up (the order is random): the command starts its own and stops it
    table = pairs_table()
    pq.write_table(table, tmp_path / "pairs.parquet")
    out = tmp_path / "scores.parquet"
    done = run_cli(
        [  # relative paths: Ray's workers must still find the files
            "--input",
            "pairs.parquet",
            "--output",
            "scores.parquet",
            "--model",
            str(tiny_model_dir),
            "--dtype",
            "fp32",
            "--workers",
            "2",
            "--threads",
            "1",
            "--rows-per-batch",
            "8",
        ],
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"wrote {N_ROWS} scored rows to {out} (2 workers)" in done.stderr
    check_output(out, table, reranker)


@pytest.fixture(scope="module")
def local_ray():
    import ray

    if ray.is_initialized():
        pytest.skip("a Ray instance is already running in this process")
    environ = dict(os.environ)
    ray.init(num_cpus=3, object_store_memory=100 * 1024 * 1024, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()
    os.environ.clear()  # no Ray driver variables left behind for the tests that run next
    os.environ.update(environ)


@pytest.mark.slow
def test_parquet_every_row_once_with_library_scores(local_ray, tmp_path, tiny_model_dir, reranker):
    table = pairs_table()
    pq.write_table(table, tmp_path / "pairs.parquet", row_group_size=13)
    result = score_file(
        tmp_path / "pairs.parquet",
        tmp_path / "scores",
        model=tiny_model_dir,
        dtype="fp32",
        workers=2,
        threads=1,
        rows_per_batch=8,
    )
    assert result.rows == N_ROWS and result.workers == 2
    check_output(tmp_path / "scores", table, reranker)
    # overwrite replaces the folder's rows instead of adding to them
    again = score_file(
        tmp_path / "pairs.parquet",
        tmp_path / "scores",
        model=tiny_model_dir,
        dtype="fp32",
        workers=2,
        rows_per_batch=16,
        overwrite=True,
    )
    assert again.rows == N_ROWS
    check_output(tmp_path / "scores", table, reranker)


@pytest.mark.slow
def test_cli_jsonl_on_an_existing_cluster_by_address(local_ray, tmp_path, tiny_model_dir, reranker):
    table = pairs_table().rename_columns(["pair_id", "q", "passage", "note"])
    with (tmp_path / "pairs.jsonl").open("w", encoding="utf-8") as fh:
        for row in table.to_pylist():
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    address = local_ray.get_runtime_context().gcs_address
    out = tmp_path / "scores"
    done = run_cli(
        [
            "--input",
            str(tmp_path / "pairs.jsonl"),
            "--output",
            str(out),
            "--ray-address",
            address,
            "--model",
            str(tiny_model_dir),
            "--dtype",
            "fp32",
            "--workers",
            "2",
            "--rows-per-batch",
            "8",
            "--query-column",
            "q",
            "--document-column",
            "passage",
            "--preserve-order",
            "--raw",
            "--score-column",
            "gap",
        ]
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = pq.read_table(str(out)).to_pylist()
    assert [r["pair_id"] for r in rows] == table.column("pair_id").to_pylist()  # each row once, in input order
    gaps = reranker.score_pairs(
        list(zip(table.column("q").to_pylist(), table.column("passage").to_pylist(), strict=True)), raw=True
    )
    assert [r["gap"] for r in rows] == pytest.approx(gaps, abs=1e-5)
    assert [r["note"] for r in rows] == table.column("note").to_pylist()
    assert local_ray.is_initialized()  # the command left the cluster running


@pytest.mark.slow
def test_user_errors(local_ray, tmp_path, tiny_model_dir):
    pq.write_table(pa.table({"pair_id": [1, 2], "query": ["q", "q"], "text": ["a", "b"]}), tmp_path / "bad.parquet")
    with pytest.raises(InputError, match="no column 'document'"):
        score_file(tmp_path / "bad.parquet", tmp_path / "o1", model=tiny_model_dir, dtype="fp32")
    with pytest.raises(InputError, match="already has a column 'text'"):
        score_file(
            tmp_path / "bad.parquet",
            tmp_path / "o2",
            model=tiny_model_dir,
            dtype="fp32",
            document_column="query",
            score_column="text",
        )
    (tmp_path / "exists").mkdir()
    with pytest.raises(InputError, match="already exists"):
        score_file(tmp_path / "bad.parquet", tmp_path / "exists", model=tiny_model_dir, dtype="fp32")
    with pytest.raises(InputError, match="cannot tell the format"):
        score_file(tmp_path / "bad.csv", tmp_path / "o3", model=tiny_model_dir, dtype="fp32")
    # a null document fails inside an actor: the library's error comes back as it is
    pq.write_table(pa.table({"query": ["q", "q"], "document": ["a", None]}), tmp_path / "null.parquet")
    with pytest.raises(InputError, match=r"^column 'document' holds a NoneType, not a string: None$"):
        score_file(tmp_path / "null.parquet", tmp_path / "o4", model=tiny_model_dir, dtype="fp32", workers=1)


def test_cli_without_the_extra(tmp_path, monkeypatch, capsys):
    from qwen3_rerank.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)
    code = main(["batch", "--input", str(tmp_path / "x.parquet"), "--output", str(tmp_path / "y")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'qwen3-rerank[ray]'" in err
