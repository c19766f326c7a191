"""`qwen3-rerank export` / `verify`: the tiny checkpoint to all four variants, checked against PyTorch.

The export runs once per session, through the real command line (a subprocess).
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from qwen3_rerank.files import DTYPE_FILES

pytestmark = pytest.mark.slow  # the four-variant export, through a real process

VARIANTS = ("fp32", "fp16", "q8", "q4")
QUERY = "What is the capital of France?"
DOCS = [
    "Paris is the capital of France.",
    "Berlin",
    "The Eiffel Tower in Paris was finished in 1889 and is one of the most visited monuments in the world; "
    "France's capital has about two million inhabitants, and its metropolitan area many more. " * 3,
    "no",
    "Lyon is a city in France.",
]
# Loose bounds for the lossy variants (random weights, wide init): they catch a broken graph, not noise.
GAP_TOLERANCE = {"fp32": 1e-4, "fp16": 0.05, "q8": 1.0, "q4": 2.0}


def run_cli(*args: str, check: bool = False) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "qwen3_rerank", *args], capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="session")
def config(tiny_checkpoint) -> dict:
    return json.loads((tiny_checkpoint / "config.json").read_text())


def load_graph(exported: Path, dtype: str) -> onnx.ModelProto:
    return onnx.load(str(exported / "onnx" / DTYPE_FILES[dtype]), load_external_data=False)


def session(exported: Path, dtype: str):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(
        str(exported / "onnx" / DTYPE_FILES[dtype]), options, providers=["CPUExecutionProvider"]
    )


# -- layout and graph interface ------------------------------------------------------------------------


def test_published_layout(exported, export_run):
    for name in (
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "export_report.json",
        "onnx/model.onnx",
        "onnx/model.onnx_data",
        "onnx/model_fp16.onnx",
        "onnx/model_quantized.onnx",
        "onnx/model_q4.onnx",
    ):
        assert (exported / name).is_file(), name
    # fp32 weights live in the external data file, not in the graph file
    assert (exported / "onnx" / "model.onnx_data").stat().st_size > 10 * (
        exported / "onnx" / "model.onnx"
    ).stat().st_size
    # nothing left behind: no scratch folder inside, no partial folder next to it
    assert not (exported / ".scratch").exists()
    assert [p.name for p in exported.parent.iterdir()] == [exported.name]
    assert export_run[1]["files"]["onnx/model_q4.onnx"] == (exported / "onnx" / "model_q4.onnx").stat().st_size
    # the score graphs that verification built are caches, not part of the published layout
    assert not [name for name in export_run[1]["files"] if ".score." in name]


@pytest.mark.parametrize("dtype", VARIANTS)
def test_graph_interface_as_published(exported, config, dtype):
    graph = load_graph(exported, dtype).graph
    layers = config["num_hidden_layers"]
    inputs = [i.name for i in graph.input]
    outputs = [o.name for o in graph.output]
    expected_in = ["input_ids", "attention_mask", "position_ids"]
    expected_out = ["logits"]
    for n in range(layers):
        expected_in += [f"past_key_values.{n}.key", f"past_key_values.{n}.value"]
        expected_out += [f"present.{n}.key", f"present.{n}.value"]
    assert inputs == expected_in
    assert outputs == expected_out
    float_type = onnx.TensorProto.FLOAT16 if dtype == "fp16" else onnx.TensorProto.FLOAT
    assert graph.output[0].type.tensor_type.elem_type == float_type
    assert graph.input[3].type.tensor_type.elem_type == float_type


def _ops(model: onnx.ModelProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def _activation_matmuls(model: onnx.ModelProto) -> list[str]:
    """Float MatMuls whose inputs are both computed (the QKᵀ and PV products of unfused attention)."""
    constants = {t.name for t in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and not any(i in constants for i in n.input)]


@pytest.mark.parametrize("dtype", ["q8", "q4"])
def test_attention_fused_into_group_query_attention(exported, config, dtype):
    model = load_graph(exported, dtype)
    gqa = [n for n in model.graph.node if n.op_type == "GroupQueryAttention"]
    assert len(gqa) == config["num_hidden_layers"]
    assert all(n.domain == "com.microsoft" for n in gqa)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in gqa[0].attribute}
    assert attrs["num_heads"] == config["num_attention_heads"]
    assert attrs["kv_num_heads"] == config["num_key_value_heads"]
    # every layer writes its own cache outputs
    assert sorted(o for n in gqa for o in n.output[1:]) == sorted(o.name for o in model.graph.output[1:])
    # no leftover unfused attention: no Softmax, no activation×activation MatMul, no repeat_kv Expand chain
    ops = _ops(model)
    assert ops.get("Softmax", 0) == 0
    assert _activation_matmuls(model) == []


def test_q8_is_dynamic_int8_on_matmuls(exported):
    model = load_graph(exported, "q8")
    ops = _ops(model)
    assert ops.get("MatMulInteger", 0) >= 7 * 2  # 7 projections per layer (+ lm_head)
    assert ops.get("DynamicQuantizeLinear", 0) > 0
    assert ops.get("MatMul", 0) == 0
    int8_weights = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 2]
    assert len(int8_weights) >= 7 * 2


def test_q4_is_matmulnbits_4bit_block32(exported):
    model = load_graph(exported, "q4")
    nbits = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    assert len(nbits) >= 7 * 2
    for node in nbits:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert node.domain == "com.microsoft" and attrs["bits"] == 4 and attrs["block_size"] == 32
    assert _ops(model).get("MatMul", 0) == 0


def test_fp16_weights_are_fp16(exported):
    model = load_graph(exported, "fp16")
    big = [t for t in model.graph.initializer if np.prod(t.dims) >= 1024]
    assert big and all(t.data_type == onnx.TensorProto.FLOAT16 for t in big)


# -- scores ------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def reference_gaps(official):
    return official.gaps(QUERY, DOCS)


@pytest.mark.parametrize("dtype", VARIANTS)
def test_scores_match_pytorch_reference(exported, reference_gaps, dtype):
    from qwen3_rerank import Reranker

    reranker = Reranker.from_pretrained(exported, dtype=dtype, threads=2)
    gaps = reranker.score(QUERY, DOCS, raw=True)  # one left-padded batch
    assert np.isfinite(gaps).all()
    diff = np.abs(np.array(gaps) - np.array(reference_gaps))
    assert diff.max() <= GAP_TOLERANCE[dtype], (dtype, diff)
    if dtype in ("fp32", "fp16"):
        assert np.argsort(gaps).tolist() == np.argsort(reference_gaps).tolist()


def _feeds(sess, ids: np.ndarray, mask: np.ndarray) -> dict:
    feeds = {"input_ids": ids, "attention_mask": mask, "position_ids": np.maximum(np.cumsum(mask, 1) - 1, 0)}
    for inp in sess.get_inputs():
        if inp.name.startswith("past_key_values."):
            dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
            feeds[inp.name] = np.zeros((ids.shape[0], inp.shape[1], 0, inp.shape[3]), dtype=dtype)
    return feeds


# batched vs one-at-a-time on the same variant: fp32/fp16/q4 keep rows independent; q8 quantizes the
# activations with one scale per tensor (dynamic quantization), so padding rows shift it a little.
BATCH_TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2, "q8": 0.5, "q4": 1e-3}


@pytest.mark.parametrize("dtype", VARIANTS)
def test_heavy_left_padding_never_gives_nan(exported, config, dtype):
    """Rows of 1 and 2 real tokens next to a 60-token row: every logit finite, each row as if alone."""
    sess = session(exported, dtype)
    rng = np.random.default_rng(7)
    lengths = [60, 1, 2, 33]
    total = max(lengths)
    ids = np.full((len(lengths), total), 151643, dtype=np.int64)
    mask = np.zeros((len(lengths), total), dtype=np.int64)
    rows = []
    for r, n in enumerate(lengths):
        row = rng.integers(0, 150000, n)
        rows.append(row)
        ids[r, total - n :] = row
        mask[r, total - n :] = 1
    logits, *present = sess.run(None, _feeds(sess, ids, mask))
    assert np.isfinite(logits).all(), "NaN/inf in a left-padded batch"
    assert all(np.isfinite(p).all() for p in present)
    for r, row in enumerate(rows):
        alone = sess.run(["logits"], _feeds(sess, row[None], np.ones((1, len(row)), np.int64)))[0]
        diff = np.abs(alone[0, -1].astype(np.float64) - logits[r, -1].astype(np.float64)).max()
        assert diff <= BATCH_TOLERANCE[dtype] * max(1.0, np.abs(alone[0, -1]).max()), (dtype, r, diff)


# -- verify ------------------------------------------------------------------------------------------


def test_export_report(exported):
    report = json.loads((exported / "export_report.json").read_text())
    assert report["ok"] is True
    assert report["model"] == str(exported)
    assert set(report["variants"]) == set(VARIANTS)
    assert report["variants"]["fp32"]["max_abs_gap_diff"] <= 1e-4
    for dtype in ("fp16", "q8", "q4"):
        entry = report["variants"][dtype]
        assert entry["all_finite"]
        assert -1.0 <= entry["spearman_min"] and entry["spearman_mean"] <= 1.0
        assert 0.0 <= entry["top1_agreement"] <= 1.0
    assert report["variants"]["fp16"]["spearman_mean"] > 0.9


def _ranks(values) -> np.ndarray:
    """Ranks from 0, ties sharing their mean rank."""
    _, inverse, counts = np.unique(np.asarray(values), return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - counts + ends - 1) / 2.0)[inverse]


def _spearman(a, b) -> float:
    ra, rb = _ranks(a), _ranks(b)
    if ra.std() == 0 or rb.std() == 0:  # a constant list: agreement only with another constant one
        return 1.0 if ra.std() == rb.std() else 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def test_export_report_numbers_are_the_variants_own(exported, official):
    """The report's agreement figures, recomputed here: each variant's scores on the verifier's probes
    against the PyTorch recipe's (tests/reference.py), Spearman per probe query and top-1 agreement."""
    from qwen3_rerank import Reranker
    from qwen3_rerank.export.verify import PROBES

    report = json.loads((exported / "export_report.json").read_text())
    reference = [official.gaps(query, docs) for query, docs in PROBES]
    for dtype in VARIANTS:
        entry = report["variants"][dtype]
        # as the verifier scores them: every probe pair in one batch
        reranker = Reranker.from_pretrained(exported, dtype=dtype, threads=2, batch_size=64, max_batch_tokens=1 << 16)
        flat = reranker.score_pairs([(query, doc) for query, docs in PROBES for doc in docs], raw=True)
        gaps, start = [], 0
        for _, docs in PROBES:
            gaps.append(flat[start : start + len(docs)])
            start += len(docs)
        diffs = np.abs(np.concatenate(gaps) - np.concatenate(reference))
        assert entry["max_abs_gap_diff"] == pytest.approx(diffs.max(), abs=1e-4), dtype
        if dtype == "fp32":
            continue
        spearman = [_spearman(a, b) for a, b in zip(gaps, reference, strict=True)]
        top1 = [int(np.argmax(a)) == int(np.argmax(b)) for a, b in zip(gaps, reference, strict=True)]
        assert entry["spearman_min"] == pytest.approx(min(spearman), abs=1e-6), (dtype, spearman)
        assert entry["spearman_mean"] == pytest.approx(np.mean(spearman), abs=1e-6), (dtype, spearman)
        assert entry["top1_agreement"] == pytest.approx(np.mean(top1)), (dtype, top1)


def test_verify_cli_against_another_checkpoint_fails(exported, tmp_path, tokenizer_dir):
    from qwen3_rerank.export.random_model import make_random_checkpoint

    other = make_random_checkpoint(tmp_path / "other", tokenizer_dir, size="tiny", seed=1)
    report = tmp_path / "report.json"
    proc = run_cli("verify", str(exported), "--reference", str(other), "--dtype", "fp32", "--report", str(report))
    assert proc.returncode != 0
    assert "fp32" in proc.stderr.strip().splitlines()[-1]
    assert json.loads(report.read_text())["ok"] is False


def test_verify_cli_default_reference_passes(exported, tmp_path):
    report = tmp_path / "again.json"
    proc = run_cli("verify", str(exported), "--dtype", "fp32,q4", "--report", str(report))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(report.read_text())
    assert set(data["variants"]) == {"fp32", "q4"} and data["variants"]["fp32"]["within_tolerance"]


# -- bad input ---------------------------------------------------------------------------------------


def _one_line_error(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qwen3-rerank: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in lines[0], lines[0]


def _copy_checkpoint(src: Path, dst: Path, *, skip=()) -> Path:
    import shutil

    dst.mkdir(parents=True)
    for p in src.iterdir():
        if p.name not in skip:
            shutil.copyfile(p, dst / p.name)
    return dst


def test_unknown_architecture(tiny_checkpoint, tmp_path):
    ckpt = _copy_checkpoint(tiny_checkpoint, tmp_path / "llama", skip=("config.json",))
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    config.update(model_type="llama", architectures=["LlamaForCausalLM"])
    (ckpt / "config.json").write_text(json.dumps(config))
    out = tmp_path / "out"
    _one_line_error(run_cli("export", str(ckpt), "--out", str(out)), "architecture", "LlamaForCausalLM")
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["llama"]


def test_checkpoint_without_tokenizer(tiny_checkpoint, tmp_path):
    ckpt = _copy_checkpoint(
        tiny_checkpoint,
        tmp_path / "notok",
        skip=("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"),
    )
    _one_line_error(run_cli("export", str(ckpt), "--out", str(tmp_path / "out")), "tokenizer")
    assert not (tmp_path / "out").exists()


def test_missing_source_and_bad_dtype(tmp_path):
    _one_line_error(run_cli("export", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")), "not found")
    _one_line_error(run_cli("export", str(tmp_path), "--out", str(tmp_path / "o"), "--dtype", "fp8"), "fp8")


def test_non_empty_output_needs_force(tiny_checkpoint, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    _one_line_error(run_cli("export", str(tiny_checkpoint), "--out", str(out)), "not empty", "--force")
    assert (out / "keep.txt").read_text() == "mine"


def test_output_under_a_file(tiny_checkpoint, tmp_path):
    (tmp_path / "file").write_text("x")
    _one_line_error(run_cli("export", str(tiny_checkpoint), "--out", str(tmp_path / "file" / "out")), "does not exist")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores folder permissions")
def test_unwritable_output(tiny_checkpoint, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        _one_line_error(run_cli("export", str(tiny_checkpoint), "--out", str(locked / "out")), "cannot be written")
    finally:
        locked.chmod(0o700)


def test_disk_full_leaves_nothing(tiny_checkpoint, tmp_path, monkeypatch):
    from qwen3_rerank.export import pipeline

    def fill_disk(checkpoint, path):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half a graph")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pipeline, "_export_fp32", fill_disk)
    out = tmp_path / "out"
    with pytest.raises(pipeline.ExportError, match="disk full"):
        pipeline.export_checkpoint(tiny_checkpoint, out)
    assert list(tmp_path.iterdir()) == []


def test_force_replaces_and_failed_export_keeps_old(tiny_checkpoint, tmp_path, monkeypatch):
    """A failing export with --force leaves the old folder untouched (the new one is built aside)."""
    from qwen3_rerank.export import pipeline

    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")

    def broken(checkpoint, path):
        raise pipeline.ExportError("boom")

    monkeypatch.setattr(pipeline, "_export_fp32", broken)
    with pytest.raises(pipeline.ExportError, match="boom"):
        pipeline.export_checkpoint(tiny_checkpoint, out, force=True)
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and (out / "old.txt").read_text() == "old"


def test_main_cli_does_not_import_torch():
    code = (
        "import sys, qwen3_rerank.cli as c; c.build_parser(); "
        "print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.split() == ["False", "False"]


# -- interop with Transformers.js v4 (the seed's runtime) ------------------------------------------------
#
# Installs the pinned @huggingface/transformers from tests/js/package-lock.json with `npm ci` (into
# tests/js/node_modules, gitignored), loads the q8 and q4 files from a local path with remote models off,
# and scores with the model card's recipe (AutoModelForCausalLM, yes/no logits at the last position).
# Skips only where node/npm are missing.

JS_DIR = Path(__file__).resolve().parent / "js"
JS_DOCS = ["Paris is the capital of France.", "Berlin", "The Eiffel Tower was finished in 1889.", "Lyon is in France."]


@pytest.fixture(scope="session")
def node_modules():
    import shutil

    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip(f"Transformers.js interop test skipped: {'node' if node is None else 'npm'} is not installed")
    lock = json.loads((JS_DIR / "package-lock.json").read_text())
    pinned = lock["packages"]["node_modules/@huggingface/transformers"]["version"]
    installed = JS_DIR / "node_modules" / "@huggingface" / "transformers" / "package.json"
    if not (installed.is_file() and json.loads(installed.read_text())["version"] == pinned):
        env = {**os.environ, "ONNXRUNTIME_NODE_INSTALL_CUDA": "skip"}
        proc = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=JS_DIR, env=env, capture_output=True, text=True, timeout=900
        )
        assert proc.returncode == 0, f"npm ci failed:\n{proc.stderr[-3000:]}"
    return JS_DIR / "node_modules"


@pytest.mark.parametrize("dtype", ["q8", "q4"])
def test_transformers_js_scores_equal_ours(node_modules, exported, dtype, tmp_path):
    from qwen3_rerank import Reranker
    from qwen3_rerank.prompt import format_content, format_prompt

    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps([format_prompt(QUERY, d) for d in JS_DOCS]), encoding="utf-8")
    proc = subprocess.run(
        ["node", str(JS_DIR / "score.mjs"), str(exported), dtype, str(prompts)],
        cwd=JS_DIR,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    js = json.loads(proc.stdout.strip().splitlines()[-1])
    # Transformers.js runs the whole graph on one prompt at a time; so do we here. q8 quantizes
    # activations with one scale per tensor, so only the same graph on the same tensor is
    # bit-comparable: our fast path (score graph, prefix pass) is checked against ours elsewhere.
    reranker = Reranker.from_pretrained(
        exported, dtype=dtype, batch_size=1, threads=2, score_graph=False, prefix_reuse=False
    )
    ours_gap = np.array(reranker.score(QUERY, JS_DOCS, raw=True))
    ours_score = np.array(reranker.score(QUERY, JS_DOCS))
    ours_tokens = [
        len(s)
        for s in reranker.tokenizer.encode_contents([format_content(QUERY, d) for d in JS_DOCS], reranker.max_length)
    ]
    assert [r["tokens"] for r in js] == ours_tokens
    js_gap = np.array([r["gap"] for r in js])
    js_score = np.array([r["score"] for r in js])
    assert np.abs(js_score - ours_score).max() <= 1e-3, (js_score, ours_score)
    assert np.abs(js_gap - ours_gap).max() <= 1e-3, (js_gap, ours_gap)
    if dtype == "q4":  # 4-bit weights, float activations: the fast path gives the same numbers too
        # (with the file's own yes/no head; the default float head is closer to fp32 instead)
        # and the file's own 4-bit kernels ("tensor"; by default they run as int8).
        fast = Reranker.from_pretrained(
            exported, dtype=dtype, threads=2, yes_no_head="quantized", q8_activations="tensor"
        )
        assert np.abs(np.array(fast.score(QUERY, JS_DOCS)) - js_score).max() <= 1e-3
