"""The benchmark's peers (OpenVINO, llama.cpp): cache layout, skipping, score agreement, token check,
and (slow, only where ``scripts/setup_peers.sh`` has set the peers up) their scores against the
PyTorch recipe on the tiny model. No timing assertions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qwen3_rerank.bench.peers import (
    PEER_ENGINES,
    PeerLaunch,
    PeerTools,
    checkpoint_key,
    locate,
    peers_root,
)


def _fake_checkpoint(folder: Path, weights: bytes = b"weights") -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen3", "hidden_size": 64, "num_hidden_layers": 2}))
    (folder / "model.safetensors").write_bytes(weights)
    return folder


def test_checkpoint_key_follows_the_content_not_the_path(tmp_path):
    a = _fake_checkpoint(tmp_path / "a")
    b = _fake_checkpoint(tmp_path / "elsewhere" / "b")
    c = _fake_checkpoint(tmp_path / "c", weights=b"other weights")
    assert checkpoint_key(a) == checkpoint_key(b)
    assert checkpoint_key(a) != checkpoint_key(c)
    assert checkpoint_key(a).startswith("qwen3-64x2-")
    (a / "model.safetensors").write_bytes(b"changed")  # the same path, rebuilt: a new key
    assert checkpoint_key(a) != checkpoint_key(b)
    with pytest.raises(FileNotFoundError, match="config.json"):
        checkpoint_key(tmp_path)


def test_peers_root_order(tmp_path, monkeypatch):
    monkeypatch.setenv("QWEN3_RERANK_PEERS", str(tmp_path / "env"))
    assert peers_root() == tmp_path / "env"
    assert peers_root(tmp_path / "flag") == tmp_path / "flag"
    monkeypatch.delenv("QWEN3_RERANK_PEERS")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert peers_root() == tmp_path / "cache" / "qwen3-rerank" / "peers"


def test_locate_says_what_is_missing_then_how_to_run(tmp_path):
    checkpoint = _fake_checkpoint(tmp_path / "ckpt")
    tools = PeerTools(tmp_path / "peers")
    for engine in PEER_ENGINES:
        reason = locate(engine, checkpoint, tools)
        assert isinstance(reason, str) and "setup_peers.sh" in reason and "not set up" in reason
    # tools there, model files not yet
    tools.ov_python.parent.mkdir(parents=True)
    tools.ov_python.write_text("")
    tools.llama_server.parent.mkdir(parents=True)
    tools.llama_server.write_text("")
    key = checkpoint_key(checkpoint)
    reason = locate("ov-int8", checkpoint, tools, key)
    assert isinstance(reason, str) and "no OpenVINO int8 IR" in reason
    reason = locate("llamacpp-q4_k_m", checkpoint, tools, key)
    assert isinstance(reason, str) and "no q4_k_m GGUF" in reason
    # model files there
    for fmt in ("fp32", "int8"):
        tools.ov_dir(key, fmt).mkdir(parents=True)
        (tools.ov_dir(key, fmt) / "openvino_model.xml").write_text("")
    tools.gguf_path(key, "q8_0").parent.mkdir(parents=True)
    tools.gguf_path(key, "q8_0").write_bytes(b"")
    ov = locate("ov-int8", checkpoint, tools, key)
    assert isinstance(ov, PeerLaunch) and ov.python == tools.ov_python
    assert ov.flags[ov.flags.index("--ov-model") + 1] == str(tools.ov_dir(key, "int8"))
    assert "--ov-precision" not in ov.flags  # OpenVINO's own default precision
    fp32 = locate("ov-fp32", checkpoint, tools, key)
    assert isinstance(fp32, PeerLaunch) and fp32.flags[fp32.flags.index("--ov-precision") + 1] == "f32"
    llama = locate("llamacpp-q8_0", checkpoint, tools, key)
    assert isinstance(llama, PeerLaunch) and llama.python is None
    assert llama.flags[llama.flags.index("--gguf") + 1] == str(tools.gguf_path(key, "q8_0"))
    assert "--llama-flash-attn" not in llama.flags and "--llama-kv-type" not in llama.flags  # llama.cpp's defaults
    tools.gguf_path(key, "f32").write_bytes(b"")
    f32 = locate("llamacpp-f32", checkpoint, tools, key)
    assert isinstance(f32, PeerLaunch)
    assert f32.flags[f32.flags.index("--llama-kv-type") + 1] == "f32"
    assert f32.flags[f32.flags.index("--llama-flash-attn") + 1] == "off"
    with pytest.raises(ValueError, match="unknown peer engine"):
        locate("ov-int3", checkpoint, tools, key)


def test_bench_skips_peers_that_are_not_set_up(tmp_path):
    from qwen3_rerank.cli import main

    checkpoint = _fake_checkpoint(tmp_path / "ckpt")
    out = tmp_path / "bench"
    argv = ["bench", "--model", str(tmp_path / "no-model"), "--checkpoint", str(checkpoint), "--out", str(out)]
    argv += ["--engines", "ov-int8,llamacpp-q8_0", "--workloads", "1x8x32", "--extras", "", "--no-plots"]
    assert main([*argv, "--peers", str(tmp_path / "empty-peers")]) == 0
    report = json.loads((out / "results.json").read_text())
    rows = {r["name"]: r for r in report["results"]}
    assert set(rows) == {"ov-int8", "llamacpp-q8_0"}
    for row in rows.values():
        assert "pairs_per_s" not in row and "setup_peers.sh" in row["skipped"]
    summary = (out / "summary.md").read_text()
    assert "| ov-int8 | skipped: OpenVINO peer not set up" in summary
    # Without a checkpoint the peers cannot be found either: skipped, with that reason.
    argv[argv.index("--checkpoint") : argv.index("--checkpoint") + 2] = []
    assert main([*argv, "--peers", str(tmp_path / "empty-peers")]) == 0
    report = json.loads((out / "results.json").read_text())
    assert all("no --checkpoint" in r["skipped"] for r in report["results"])


def _row(name, pairs_per_s, scores, workload="1x100x128"):
    return {
        "name": name,
        "workload": {"name": workload},
        "pairs": len(scores),
        "pairs_per_s": pairs_per_s,
        "tokens_per_s": 100.0,
        "latency_p50_s": 1.0,
        "latency_p95_s": 1.0,
        "peak_rss_mb": 500.0,
        "load_s": 1.0,
        "executed_gflops": 10.0,
        "call_scores": [scores],
        "first_scores": scores[:4],
    }


def test_score_agreement_and_peer_ratios():
    from qwen3_rerank.bench.report import summary_markdown
    from qwen3_rerank.bench.run import add_ratios, score_agreement

    torch_row = _row("torch-fp32", 0.5, [0.1, 0.2, 0.3, 0.4, 0.5])
    ours = _row("ours-q8-fast", 2.0, [0.1, 0.25, 0.3, 0.4, 0.5, 0.6])
    ov = _row("ov-int8", 1.0, [0.1, 0.2, 0.31])
    js = {**_row("js-q8", 1.0, [0.1, 0.2, 0.3, 0.9]), "call_scores": None}  # Node reports first_scores only
    assert score_agreement(ours, torch_row) == (pytest.approx(0.05), 5)
    assert score_agreement(ov, torch_row) == (pytest.approx(0.01), 3)
    assert score_agreement(js, torch_row) == (pytest.approx(0.5), 4)
    assert score_agreement({"name": "x"}, torch_row) is None
    targets = add_ratios([torch_row, ours, ov, js], None)
    assert ours["ratios"]["vs_ov_int8"] == pytest.approx(2.0)
    assert ov["ratios"]["vs_torch_fp32"] == pytest.approx(2.0)
    assert ov["vs_torch_fp32_max_abs_diff"] == pytest.approx(0.01) and ov["vs_torch_fp32_compared"] == 3
    assert "vs_torch_fp32_max_abs_diff" not in torch_row
    assert targets["q8_vs_ov_int8_1x100x128"]["value"] == pytest.approx(2.0)
    assert targets["q8_vs_torch_fp32_1x100x128"] == {"value": pytest.approx(4.0), "target": 8.0, "met": False}
    assert targets["q8_vs_fastest_peer_1x100x128"]["value"] == pytest.approx(2.0)
    # The fastest peer is the quicker of the two, whichever engine it is; ratios on every workload.
    llama = _row("llamacpp-q8_0", 1.6, [0.1, 0.2, 0.3])
    other = add_ratios([torch_row, ours, ov, llama], None, [{"name": "ours-q8-fast", "peak_rss_mb": 900.0}])
    assert other["q8_vs_fastest_peer_1x100x128"] == {"value": pytest.approx(1.25), "target": 3.0, "met": False}
    assert other["_variants_used"]["fastest ov-int8/ov-int4/llamacpp-q8_0/llamacpp-q4_k_m@1x100x128"] == "llamacpp-q8_0"
    assert other["q8_peak_rss_mb_1x1x8192"]["met"] is True
    assert {"q8_vs_fastest_peer_1x20x512", "q4_vs_fastest_4bit_peer_16x10x256"} <= set(other)
    report = {"machine": {}, "versions": {}, "results": [torch_row, ours, ov, js], "targets": targets}
    summary = summary_markdown(report)
    assert "## Peers: OpenVINO and llama.cpp" in summary
    assert "| ov-int8 | 3 | 1.00 | 1.00 | 500 | 1.0 | 2.00 | 1.0e-02 | 2.00 |" in summary


class _WholeTextServer:
    """``/tokenize`` as llama-server does it (the whole prompt at once), with Hugging Face's tokenizer;
    ``drop`` removes one token to show that a difference is caught."""

    def __init__(self, tokenizer, drop: int | None = None) -> None:
        self.tokenizer = tokenizer
        self.drop = drop

    def tokenize(self, text: str) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids if self.drop is None else ids[: self.drop] + ids[self.drop + 1 :]


def test_token_check_compares_the_whole_prompt_with_the_recipe(tokenizer_info):
    from qwen3_rerank.bench.peer_workers import token_check
    from qwen3_rerank.bench.recipe import RecipeTokenizer
    from qwen3_rerank.prompt import PREFIX, SUFFIX

    folder, real = tokenizer_info
    if not real:
        pytest.skip("needs the real Qwen3 tokenizer files")
    recipe = RecipeTokenizer(folder)
    # llama.cpp's converter writes this rerank template (the recipe's prompt, default instruction).
    template = (
        PREFIX
        + (
            "<Instruct>: Given a web search query, retrieve relevant passages that answer the query\n"
            "<Query>: {query}\n<Document>: {document}"
        )
        + SUFFIX
    )
    calls = [("what is a cat?", ["A cat is a small animal.", "Paris\nis in France.  Two  spaces."])]
    same = token_check(_WholeTextServer(recipe.tokenizer), template, recipe, calls)
    assert same == {"checked": 2, "identical": 2, "template_equals_recipe_prompt": True, "first_difference": None}
    other = token_check(_WholeTextServer(recipe.tokenizer, drop=5), template, recipe, calls)
    assert other["identical"] == 0 and other["first_difference"]["position"] == 5
    assert token_check(_WholeTextServer(recipe.tokenizer), None, recipe, calls)["checked"] == 0


# -- slow: the peers themselves, where they are set up ----------------------------------------------


def _tools_or_skip() -> PeerTools:
    tools = PeerTools(peers_root())
    missing = [str(p) for p in (tools.ov_python, tools.llama_server, tools.llama_quantize) if not p.is_file()]
    if missing:
        pytest.skip(f"peers not set up (scripts/setup_peers.sh): missing {', '.join(missing)}")
    return tools


@pytest.mark.slow  # exports the tiny model for both peers (cached by content), runs four workers
def test_fp32_peers_compute_the_recipe_on_the_tiny_model(tiny_checkpoint):
    from qwen3_rerank.bench.parity import FP32_TOLERANCE, peer_parity
    from qwen3_rerank.bench.peers import prepare

    tools = _tools_or_skip()
    made = prepare(tiny_checkpoint, tools, ov=("fp32",), gguf=("f32", "q8_0"))
    assert all(v.startswith("ready") for v in made.values()), made
    result = peer_parity(tiny_checkpoint, tools, ("ov-fp32", "llamacpp-f32", "llamacpp-q8_0"), workload="2x4x64")
    reference = result["reference"]["scores"]
    assert len(reference) == 8 and all(0.0 < s < 1.0 for s in reference)
    for engine in ("ov-fp32", "llamacpp-f32"):
        entry = result["engines"][engine]
        assert "error" not in entry and "skipped" not in entry, entry
        assert entry["max_abs_diff"] <= FP32_TOLERANCE, (engine, entry["max_abs_diff"])
    check = result["engines"]["llamacpp-f32"]["token_check"]
    assert check["checked"] == 8 and check["identical"] == 8, check
    # Quantized: the same function up to quantization error (a loose bound, not a quality claim).
    assert result["engines"]["llamacpp-q8_0"]["max_abs_diff"] < 0.2


def test_int4_group_size_keeps_the_default_where_the_widths_allow():
    from qwen3_rerank.bench.peers import OV_INT4_GROUP, int4_group_size

    real = {"hidden_size": 1024, "intermediate_size": 3072, "num_attention_heads": 16, "head_dim": 128}
    tiny = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4, "head_dim": 16}
    assert int4_group_size(real) == OV_INT4_GROUP == 128
    assert int4_group_size(tiny) == 64
