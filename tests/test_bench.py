"""`qwen3-rerank bench`: quick mode on the tiny model, the JSON schema and the ratios. No timing assertions."""

from __future__ import annotations

import json

import pytest


def test_workloads_have_exact_token_counts(tokenizer_dir):
    from qwen3_rerank.bench.workloads import get_workload, make_inputs
    from qwen3_rerank.prompt_tokenizer import PromptTokenizer

    tok = PromptTokenizer.from_file(tokenizer_dir / "tokenizer.json")
    workload = get_workload("2x4x64")
    calls = make_inputs(workload, tok, seed=0)
    assert calls == make_inputs(workload, tok, seed=0)  # deterministic
    assert len(calls) == 2 and all(len(docs) == 4 for _, docs in calls)
    for query, docs in calls:
        assert len(tok.tokenizer.encode(query, add_special_tokens=False).ids) == workload.query_tokens
        for doc in docs:
            assert len(tok.tokenizer.encode(doc, add_special_tokens=False).ids) == workload.doc_tokens
    assert get_workload("3x5x7").docs == 5
    with pytest.raises(ValueError):
        get_workload("nonsense")


def test_flop_count_of_the_06b_configuration():
    from qwen3_rerank.bench.flops import QWEN3_06B, attention_flops, linear_flops_per_token, workload_flops

    # 28 layers x (q 1024x2048, k/v 1024x1024, o 2048x1024, gate/up 1024x3072, down 3072x1024) x 2
    assert linear_flops_per_token(QWEN3_06B) == 2 * 28 * 15_728_640
    # causal: 3 tokens see 1 + 2 + 3 keys; a cached past of 10 adds 10 keys to each
    per_key = 28 * 16 * 128 * 4
    assert attention_flops(QWEN3_06B, 3) == per_key * 6
    assert attention_flops(QWEN3_06B, 3, past=10) == per_key * 36
    flops = workload_flops(QWEN3_06B, [(256, 0)], lm_head_rows=256)
    assert flops["model_gflop"] == pytest.approx(flops["linear_gflop"] + flops["attention_gflop"])
    assert flops["lm_head_gflop"] == pytest.approx(2 * 1024 * 151669 * 256 / 1e9)


def test_profile_summary(tmp_path):
    from qwen3_rerank.bench.run import summarize_profile

    events = [
        {"cat": "Node", "name": "a_kernel_time", "dur": 3000, "args": {"op_name": "MatMulInteger"}},
        {"cat": "Node", "name": "b_kernel_time", "dur": 1000, "args": {"op_name": "Add"}},
        {"cat": "Node", "name": "a_fence_before", "dur": 9000, "args": {"op_name": "Add"}},
        {"cat": "Session", "name": "model_run", "dur": 5000},
    ]
    path = tmp_path / "p.json"
    path.write_text(json.dumps(events))
    rows = summarize_profile(path)
    assert [r["op_type"] for r in rows] == ["MatMulInteger", "Add"]
    assert rows[0]["share"] == pytest.approx(0.75)


@pytest.mark.slow  # a whole quick benchmark, PyTorch baseline included
def test_bench_quick_on_tiny_model(tiny_model_dir, tmp_path):
    from qwen3_rerank.cli import main

    out = tmp_path / "bench"
    argv = ["bench", "--model", str(tiny_model_dir), "--quick", "--out", str(out), "--workloads", "1x8x32"]
    argv += ["--engines", "ours-fp32-fast,ours-fp32-sg,torch-bf16", "--repeat", "1"]
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        argv.append("--no-plots")
    assert main(argv) == 0
    report = json.loads((out / "results.json").read_text())
    assert report["schema"] == "qwen3-rerank-bench/1"
    assert report["quick"] is True
    assert {"machine", "versions", "command", "results", "targets"} <= set(report)
    measured = {r["name"]: r for r in report["results"] if "pairs_per_s" in r}
    assert set(measured) == {"ours-fp32-fast", "ours-fp32-sg"}
    for row in measured.values():
        for key in (
            "pairs_per_s",
            "tokens_per_s",
            "latency_p50_s",
            "latency_p95_s",
            "peak_rss_mb",
            "load_s",
            "executed_gflops",
            "flops",
            "ratios",
        ):
            assert key in row, key
        assert row["pairs"] == 8 and row["workload"]["name"] == "1x8x32"
        assert row["latency_p95_s"] >= row["latency_p50_s"] > 0
        assert row["peak_rss_mb"] > 0 and row["score_graph_active"] is True
    fast, sg = measured["ours-fp32-fast"], measured["ours-fp32-sg"]
    assert fast["prefix_reuse_active"] is True and sg["prefix_reuse_active"] is False
    assert fast["ratios"]["prefix_reuse_speedup"] == pytest.approx(fast["pairs_per_s"] / sg["pairs_per_s"])
    # The prefix runs once per call, so the engine executes fewer FLOPs than the work holds.
    assert fast["flops"]["executed"]["model_gflop"] < fast["flops"]["work"]["model_gflop"]
    assert sg["flops"]["executed"]["model_gflop"] == pytest.approx(sg["flops"]["work"]["model_gflop"])
    # Same inputs, same model: the same scores whichever path ran them.
    assert fast["first_scores"] == pytest.approx(sg["first_scores"], abs=1e-4)
    skipped = [r for r in report["results"] if r["name"] == "torch-bf16"]
    assert skipped and "skipped" in skipped[0]
    assert "q8_vs_torch_fp32_1x100x128" in report["targets"]
    summary = (out / "summary.md").read_text()
    assert "| ours-fp32-fast |" in summary and "## Targets" in summary


@pytest.mark.slow  # four worker processes
def test_bench_scaling_extra(tiny_model_dir, tmp_path):
    """The scaling extra measures 1 session × 2 threads, 1 × 1 and 2 × 1 (two processes at once)."""
    from qwen3_rerank.cli import main

    out = tmp_path / "bench"
    argv = ["bench", "--model", str(tiny_model_dir), "--out", str(out), "--workloads", "1x8x32"]
    argv += ["--engines", "ours-fp32-fast", "--extras", "scaling", "--sweep-dtype", "fp32", "--no-plots"]
    assert main(argv) == 0
    report = json.loads((out / "results.json").read_text())
    rows = report["scaling"]
    assert [(r["sessions"], r["threads"]) for r in rows] == [(1, 2), (1, 1), (2, 1)]
    assert all(r["pairs_per_s"] > 0 for r in rows), rows
    pair = rows[2]
    assert len(pair["processes"]) == 2
    assert pair["pairs_per_s"] == pytest.approx(sum(p["pairs_per_s"] for p in pair["processes"]))
    assert "## Scaling: sessions × threads" in (out / "summary.md").read_text()
