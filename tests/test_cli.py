"""The command line: ``qwen3_rerank.cli.main(argv)`` in this process (stdout, stderr and the exit
status as a user sees them), and one real ``python -m qwen3_rerank`` process as a smoke test."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest

from qwen3_rerank.cli import main

QUERY = "What is the capital of France?"
DOCS = ["Berlin is the capital of Germany.", "Paris is the capital of France.", "東京 🙂\nnew line"]


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def run_cli(capsys, monkeypatch):
    """``qwen3-rerank ARGS`` in this process: exit status, stdout and stderr as text."""

    def run(*args, stdin=None, env=None):
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin or ""))
        capsys.readouterr()  # drop anything printed before
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return Run(code, out, err)

    return run


def run_process(*args):
    return subprocess.run(
        [sys.executable, "-m", "qwen3_rerank", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
    )


def model_args(model_dir):
    return ["--model", model_dir, "--dtype", "fp32"]


@pytest.mark.parametrize("how", ["in-process", "subprocess"])
def test_rerank_json_equals_library(tiny_model_dir, reranker, run_cli, how):
    run = run_cli if how == "in-process" else run_process  # the one real `python -m qwen3_rerank` run
    proc = run("rerank", *model_args(tiny_model_dir), "--query", QUERY, "--json", *DOCS)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    expected = reranker.rerank(QUERY, DOCS)
    assert [r["index"] for r in results] == [r.index for r in expected]
    assert [r["document"] for r in results] == [r.document for r in expected]
    np.testing.assert_allclose([r["score"] for r in results], [r.score for r in expected], atol=1e-6)


def test_rerank_table_and_top_k(tiny_model_dir, reranker, run_cli):
    proc = run_cli("rerank", *model_args(tiny_model_dir), "-q", QUERY, "--top-k", "2", *DOCS)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].split() == ["rank", "index", "score", "document"]
    best = reranker.rerank(QUERY, DOCS, top_k=2)
    assert len(lines) == 3
    for line, result in zip(lines[1:], best, strict=True):
        rank, index, score, *_ = line.split()
        assert int(index) == result.index and abs(float(score) - result.score) < 1e-4


def test_chunking_option(tiny_model_dir, reranker, run_cli):
    long_doc = "alpha beta gamma delta epsilon " * 60
    proc = run_cli(
        "rerank",
        *model_args(tiny_model_dir),
        "-q",
        QUERY,
        "--json",
        "--chunking",
        "max",
        "--chunk-tokens",
        "40",
        "--chunk-overlap",
        "5",
        long_doc,
        DOCS[1],
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    expected = reranker.rerank(QUERY, [long_doc, DOCS[1]], chunking="max", chunk_tokens=40, chunk_overlap=5)
    assert [r["index"] for r in results] == [r.index for r in expected]
    assert [r.get("best_chunk") for r in results] == [r.best_chunk.to_dict() for r in expected]
    bad = run_cli(
        "rerank",
        *model_args(tiny_model_dir),
        "-q",
        QUERY,
        "--chunking",
        "max",
        "--chunk-tokens",
        "10",
        "--chunk-overlap",
        "10",
        "doc",
    )
    assert bad.returncode == 2 and "chunk_overlap" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_docs_from_text_jsonl_and_stdin(tmp_path, tiny_model_dir, reranker, run_cli):
    text_file = tmp_path / "docs.txt"
    text_file.write_text("\n".join(d.replace("\n", " ") for d in DOCS) + "\n\n", encoding="utf-8")
    jsonl_file = tmp_path / "docs.jsonl"
    jsonl_file.write_text("\n".join(json.dumps({"text": d, "id": i}) for i, d in enumerate(DOCS)), encoding="utf-8")

    from_text = run_cli("rerank", *model_args(tiny_model_dir), "-q", QUERY, "--json", "--docs", text_file)
    from_jsonl = run_cli("rerank", *model_args(tiny_model_dir), "-q", QUERY, "--json", "--docs", jsonl_file)
    from_stdin = run_cli(
        "rerank", *model_args(tiny_model_dir), "-q", QUERY, "--json", "--docs", "-", stdin=jsonl_file.read_text()
    )
    for proc in (from_text, from_jsonl, from_stdin):
        assert proc.returncode == 0, proc.stderr
    assert len(json.loads(from_text.stdout)) == 3
    assert json.loads(from_jsonl.stdout) == json.loads(from_stdin.stdout)
    assert {r["document"] for r in json.loads(from_jsonl.stdout)} == set(DOCS)  # newlines kept in JSONL
    scores = {r["index"]: r["score"] for r in json.loads(from_jsonl.stdout)}
    np.testing.assert_allclose([scores[i] for i in range(3)], reranker.score(QUERY, DOCS), atol=1e-6)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--query", QUERY], "no documents"),
        (["--query", QUERY, "--docs", "/no/such/file.txt"], "documents file not found"),
        (["--query", QUERY, "--dtype", "q3", "doc"], "unknown dtype 'q3'"),
        (["--query", QUERY, "--top-k", "0", "doc"], "positive integer"),
        (["doc"], "--query"),
    ],
)
def test_bad_input_exits_2_with_one_line(tiny_model_dir, args, message, run_cli):
    proc = run_cli("rerank", "--model", tiny_model_dir, *args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_bad_jsonl_line(tmp_path, tiny_model_dir, run_cli):
    bad = tmp_path / "docs.jsonl"
    bad.write_text('{"text": "ok"}\n{"txt": "no text field"}\n', encoding="utf-8")
    proc = run_cli("rerank", *model_args(tiny_model_dir), "-q", QUERY, "--docs", bad)
    assert proc.returncode == 2 and "line 2" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_missing_model_folder_and_variant(tmp_path, tiny_model_dir, run_cli):
    proc = run_cli("rerank", "--model", tmp_path / "nothing-here", "-q", QUERY, "doc")
    assert proc.returncode == 2 and "model folder not found" in proc.stderr
    proc = run_cli("rerank", "--model", tiny_model_dir, "--dtype", "q4", "-q", QUERY, "doc")
    assert proc.returncode == 2 and "no q4 variant" in proc.stderr and "available dtypes: fp32" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_hub_id_offline_not_cached(tmp_path, run_cli, monkeypatch):
    from huggingface_hub import constants

    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    # huggingface_hub reads these two when it is imported: give them the values a new process would
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    proc = run_cli("rerank", "--model", "onnx-community/Qwen3-Reranker-0.6B-ONNX", "-q", QUERY, "doc", env=env)
    assert proc.returncode == 2
    assert "HF_HUB_OFFLINE is set and it is not in the Hugging Face cache" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
