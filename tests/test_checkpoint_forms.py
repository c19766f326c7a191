"""Checkpoint forms beyond the tiny causal model: a one-label ``Qwen3ForSequenceClassification``
conversion (vLLM's ``from_2_way_softmax``) and a 4B/8B-like head layout with an untied ``lm_head``.

Each extra checkpoint and export is built once per session. The references are independent:
the official PyTorch recipe on the causal checkpoint (``tests/reference.py``) and transformers'
own ``Qwen3ForSequenceClassification``.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from qwen3_rerank.files import DTYPE_FILES

QUERY = "What is the capital of France?"
DOCS = [
    "Paris is the capital of France.",
    "Berlin",
    "The Eiffel Tower in Paris was finished in 1889 and is one of the most visited monuments in the world. " * 2,
    "no",
    "Lyon is a city in France.",
    "東京は日本の首都です。 🙂",
]
SEQ_CLS_DTYPES = ("fp32", "fp16", "q8", "q4")
LAYOUT_DTYPES = ("fp32", "q8", "q4")
#: 4 query heads per KV head and head_dim != hidden_size / num_heads (as in Qwen3-Reranker-4B),
#: with an lm_head of its own (as in Qwen3-Reranker-8B).
LAYOUT = dict(num_attention_heads=8, num_key_value_heads=2, head_dim=32, tie_word_embeddings=False)
# Loose bounds for the lossy variants (random weights, wide init): they catch a broken graph, not noise.
GAP_TOLERANCE = {"fp32": 1e-4, "fp16": 0.05, "q8": 1.0, "q4": 2.0}

pytestmark = pytest.mark.slow


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qwen3_rerank", *args], capture_output=True, text=True, timeout=1200)


def _export(source: Path, out: Path, dtypes: tuple[str, ...]) -> Path:
    """``qwen3-rerank export`` as a real process, with its verification."""
    proc = run_cli("export", str(source), "--out", str(out), "--dtype", ",".join(dtypes), "--quiet")
    if proc.returncode != 0:
        raise AssertionError(f"export failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return out


def _graph(model_dir: Path, dtype: str) -> onnx.GraphProto:
    return onnx.load(str(model_dir / "onnx" / DTYPE_FILES[dtype]), load_external_data=False).graph


def _dims(value_info) -> list:
    return [d.dim_value or d.dim_param for d in value_info.type.tensor_type.shape.dim]


# -- fixtures: built once per session ------------------------------------------------------------------


@pytest.fixture(scope="session")
def seq_cls_checkpoint(tmp_path_factory, tiny_checkpoint) -> Path:
    from seq_cls import convert_to_seq_cls

    return convert_to_seq_cls(tiny_checkpoint, tmp_path_factory.mktemp("seqcls") / "tiny-seq-cls")


@pytest.fixture(scope="session")
def seq_cls_exported(tmp_path_factory, seq_cls_checkpoint) -> Path:
    return _export(seq_cls_checkpoint, tmp_path_factory.mktemp("seqcls-export") / "out", SEQ_CLS_DTYPES)


@pytest.fixture(scope="session")
def causal_gaps(official) -> np.ndarray:
    """The official recipe on the causal checkpoint the conversion was made from."""
    return np.array(official.gaps(QUERY, DOCS))


@pytest.fixture(scope="session")
def layout_checkpoint(tmp_path_factory, tokenizer_dir) -> Path:
    from qwen3_rerank.export.random_model import make_random_checkpoint

    return make_random_checkpoint(tmp_path_factory.mktemp("layout") / "gqa4-untied", tokenizer_dir, seed=3, **LAYOUT)


@pytest.fixture(scope="session")
def layout_exported(tmp_path_factory, layout_checkpoint) -> Path:
    return _export(layout_checkpoint, tmp_path_factory.mktemp("layout-export") / "out", LAYOUT_DTYPES)


@pytest.fixture(scope="session")
def layout_gaps(layout_checkpoint) -> np.ndarray:
    from reference import OfficialRecipe

    return np.array(OfficialRecipe(layout_checkpoint).gaps(QUERY, DOCS))


# -- the conversion itself ---------------------------------------------------------------------------


def test_conversion_pools_the_causal_gap(seq_cls_checkpoint, official, causal_gaps):
    """transformers' Qwen3ForSequenceClassification on the converted checkpoint gives the gap."""
    import torch
    from transformers import AutoModelForSequenceClassification

    config = json.loads((seq_cls_checkpoint / "config.json").read_text())
    assert config["architectures"] == ["Qwen3ForSequenceClassification"] and len(config["id2label"]) == 1
    model = AutoModelForSequenceClassification.from_pretrained(str(seq_cls_checkpoint), dtype=torch.float32).eval()
    with torch.no_grad():
        pooled = [float(model(input_ids=torch.tensor([ids])).logits[0, 0]) for ids in official.token_ids(QUERY, DOCS)]
    np.testing.assert_allclose(pooled, causal_gaps, rtol=0, atol=1e-4)


# -- seq-cls: export -----------------------------------------------------------------------------------


def test_seq_cls_export_verified_for_every_dtype(seq_cls_exported):
    report = json.loads((seq_cls_exported / "export_report.json").read_text())
    assert report["ok"] is True, report["summary"]
    assert "Qwen3ForSequenceClassification" in report["reference"]
    assert set(report["variants"]) == set(SEQ_CLS_DTYPES)
    assert report["variants"]["fp32"]["max_abs_gap_diff"] <= 1e-4
    for dtype in SEQ_CLS_DTYPES:
        assert report["variants"][dtype]["all_finite"]
    assert json.loads((seq_cls_exported / "config.json").read_text())["architectures"] == [
        "Qwen3ForSequenceClassification"
    ]


@pytest.mark.parametrize("dtype", SEQ_CLS_DTYPES)
def test_seq_cls_graph_interface(seq_cls_exported, dtype):
    """Same inputs and present outputs as the causal graph; ``logits`` is ``[batch, seq, 1]``."""
    graph = _graph(seq_cls_exported, dtype)
    layers = json.loads((seq_cls_exported / "config.json").read_text())["num_hidden_layers"]
    expected_in = ["input_ids", "attention_mask", "position_ids"]
    expected_out = ["logits"]
    for n in range(layers):
        expected_in += [f"past_key_values.{n}.key", f"past_key_values.{n}.value"]
        expected_out += [f"present.{n}.key", f"present.{n}.value"]
    assert [i.name for i in graph.input] == expected_in
    assert [o.name for o in graph.output] == expected_out
    assert _dims(graph.output[0])[-1] == 1
    gqa = [n for n in graph.node if n.op_type == "GroupQueryAttention"]
    assert len(gqa) == (layers if dtype in ("q8", "q4") else 0)
    # the one-column score head stays a float MatMul in every variant (it is not worth quantizing)
    head = [n for n in graph.node if "logits" in n.output]
    assert [n.op_type for n in head] == ["MatMul"]


def test_seq_cls_with_two_labels_is_refused(seq_cls_checkpoint, tmp_path):
    ckpt = tmp_path / "two-labels"
    shutil.copytree(seq_cls_checkpoint, ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    config["id2label"] = {"0": "no", "1": "yes"}
    config["label2id"] = {"no": 0, "yes": 1}
    (ckpt / "config.json").write_text(json.dumps(config))
    proc = run_cli("export", str(ckpt), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert "num_labels=2" in lines[0] and "one-label" in lines[0]
    assert not (tmp_path / "out").exists()


# -- seq-cls: the runtime ------------------------------------------------------------------------------


def test_seq_cls_library_scores_equal_the_causal_model(seq_cls_exported, causal_gaps):
    from qwen3_rerank import Reranker
    from qwen3_rerank.score_graph import SEQ_CLS_OUTPUT, score_graph_record

    plain = Reranker.from_pretrained(seq_cls_exported, dtype="fp32", threads=2, score_graph=False, prefix_reuse=False)
    assert plain.engine.single_logit and not plain.engine.is_score_graph
    fast = Reranker.from_pretrained(seq_cls_exported, dtype="fp32", threads=2)
    assert fast.engine.is_score_graph and fast.engine.single_logit and fast.prefix_reuse
    assert [o.name for o in fast.engine.session.get_outputs()][0] == SEQ_CLS_OUTPUT
    assert fast.engine.session.get_outputs()[0].shape[-1] == 1
    assert score_graph_record(fast.engine.path)["output"] == SEQ_CLS_OUTPUT
    request = fast.prepare(QUERY, DOCS)
    assert sum(request.reuses_prefix) >= 2  # the prefix pass runs
    for reranker in (plain, fast):
        gaps = np.array(reranker.score(QUERY, DOCS, raw=True))
        np.testing.assert_allclose(gaps, causal_gaps, rtol=0, atol=1e-4)
        # probabilities are sigmoid(logit), which is softmax([yes, no])[0] of the causal model
        probs = np.array(reranker.score(QUERY, DOCS))
        np.testing.assert_allclose(probs, 1 / (1 + np.exp(-causal_gaps)), rtol=0, atol=1e-5)
    ranked = fast.rerank(QUERY, DOCS)
    assert [r.index for r in ranked] == sorted(range(len(DOCS)), key=lambda i: (-causal_gaps[i], i))


@pytest.mark.parametrize("dtype", ["fp16", "q8", "q4"])
def test_seq_cls_lossy_variants_and_fast_path(seq_cls_exported, causal_gaps, dtype):
    """Score graph + prefix reuse (GroupQueryAttention in q8/q4) give the plain path's gaps."""
    from qwen3_rerank import Reranker
    from qwen3_rerank.score_graph import score_graph_record

    plain = Reranker.from_pretrained(seq_cls_exported, dtype=dtype, threads=2, score_graph=False, prefix_reuse=False)
    fast = Reranker.from_pretrained(seq_cls_exported, dtype=dtype, threads=2)
    assert fast.engine.single_logit and fast.prefix_reuse
    assert score_graph_record(fast.engine.path)["group_query_attention"] == (dtype in ("q8", "q4"))
    full = np.array(plain.score(QUERY, DOCS, raw=True))
    ours = np.array(fast.score(QUERY, DOCS, raw=True))
    assert np.isfinite(ours).all()
    assert np.abs(full - causal_gaps).max() <= GAP_TOLERANCE[dtype]
    assert np.abs(ours - causal_gaps).max() <= GAP_TOLERANCE[dtype]
    # The file's q8 quantises activations with one scale per tensor and the score graph per token;
    # q4's score graph runs its 4-bit linears as int8, per token; the fp16 score graph runs
    # attention in float32 (both read float16-rounded logits).
    assert np.abs(ours - full).max() <= {"fp16": 3e-3, "q8": 0.5, "q4": 0.5}[dtype]
    if dtype == "q4":  # with the file's own 4-bit kernels ("tensor"), the plain path's numbers
        own = Reranker.from_pretrained(seq_cls_exported, dtype=dtype, threads=2, q8_activations="tensor")
        np.testing.assert_allclose(own.score(QUERY, DOCS, raw=True), full, rtol=0, atol=1e-4)


def test_seq_cls_cli_json(seq_cls_exported, causal_gaps):
    proc = run_cli(
        "rerank",
        "--model",
        str(seq_cls_exported),
        "--dtype",
        "fp32",
        "--threads",
        "2",
        "--json",
        "--query",
        QUERY,
        *DOCS,
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert sorted(r["index"] for r in results) == list(range(len(DOCS)))
    by_index = {r["index"]: r["score"] for r in results}
    gaps = np.array([math.log(by_index[i] / (1 - by_index[i])) for i in range(len(DOCS))])
    np.testing.assert_allclose(gaps, causal_gaps, rtol=0, atol=1e-4)
    assert [r["index"] for r in results] == sorted(range(len(DOCS)), key=lambda i: (-causal_gaps[i], i))


def test_seq_cls_server_raw_scores(seq_cls_exported, causal_gaps, tmp_path):
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    from test_server import ServerProcess

    server = ServerProcess(seq_cls_exported, tmp_path / "server.log")
    try:
        response = httpx.post(
            server.url + "/rerank", json={"query": QUERY, "texts": DOCS, "raw_scores": True}, timeout=60
        )
        assert response.status_code == 200, response.text
        got = {r["index"]: r["score"] for r in response.json()}
        np.testing.assert_allclose([got[i] for i in range(len(DOCS))], causal_gaps, rtol=0, atol=1e-4)
    finally:
        server.stop()


def test_seq_cls_config_with_many_labels_is_refused_at_load(seq_cls_exported, tiny_model_dir, tmp_path):
    """A graph with a vocabulary-wide output under a seq-cls config.json: one clear error."""
    from qwen3_rerank import ModelLoadError, Reranker

    folder = tmp_path / "m"
    shutil.copytree(tiny_model_dir, folder)
    for stale in folder.glob("onnx/*.score.*"):
        stale.unlink()
    shutil.copyfile(seq_cls_exported / "config.json", folder / "config.json")
    with pytest.raises(ModelLoadError, match="one-label"):
        Reranker.from_pretrained(folder, dtype="fp32", score_graph=False)


# -- other layouts: 4 query heads per KV head, head_dim 32, untied lm_head ------------------------------


def test_layout_export_verified(layout_exported, layout_checkpoint):
    report = json.loads((layout_exported / "export_report.json").read_text())
    assert report["ok"] is True, report["summary"]
    assert set(report["variants"]) == set(LAYOUT_DTYPES)
    assert report["variants"]["fp32"]["max_abs_gap_diff"] <= 1e-4
    config = json.loads((layout_checkpoint / "config.json").read_text())
    assert config["tie_word_embeddings"] is False
    assert config["head_dim"] != config["hidden_size"] // config["num_attention_heads"]
    for dtype in ("q8", "q4"):
        gqa = [n for n in _graph(layout_exported, dtype).node if n.op_type == "GroupQueryAttention"]
        assert len(gqa) == config["num_hidden_layers"]
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in gqa[0].attribute}
        assert (attrs["num_heads"], attrs["kv_num_heads"]) == (8, 2)


def test_layout_lm_head_is_its_own_weight(layout_exported):
    """The fp32 graph keeps both vocabulary-sized weights: embedding and the untied lm_head."""
    vocab = json.loads((layout_exported / "config.json").read_text())["vocab_size"]
    big = [t for t in _graph(layout_exported, "fp32").initializer if vocab in t.dims]
    assert len(big) == 2


@pytest.mark.parametrize("dtype", LAYOUT_DTYPES)
def test_layout_scores(layout_exported, layout_gaps, dtype):
    from qwen3_rerank import Reranker
    from qwen3_rerank.score_graph import OUTPUT, score_graph_record

    plain = Reranker.from_pretrained(layout_exported, dtype=dtype, threads=2, score_graph=False, prefix_reuse=False)
    fast = Reranker.from_pretrained(layout_exported, dtype=dtype, threads=2)
    assert fast.engine.is_score_graph and fast.prefix_reuse and not fast.engine.single_logit
    record = score_graph_record(fast.engine.path)
    assert record["output"] == OUTPUT and record["group_query_attention"] == (dtype != "fp32")
    full = np.array(plain.score(QUERY, DOCS, raw=True))
    ours = np.array(fast.score(QUERY, DOCS, raw=True))
    assert np.isfinite(ours).all()
    assert np.abs(full - layout_gaps).max() <= GAP_TOLERANCE[dtype], (dtype, full, layout_gaps)
    assert np.abs(ours - layout_gaps).max() <= GAP_TOLERANCE[dtype], (dtype, ours, layout_gaps)
    if dtype == "q4":  # by default q4 runs its linears as int8; the file's own kernels ("tensor") match
        own = Reranker.from_pretrained(layout_exported, dtype=dtype, threads=2, q8_activations="tensor")
        np.testing.assert_allclose(own.score(QUERY, DOCS, raw=True), full, rtol=0, atol=1e-4)
    elif dtype != "q8":  # q8: dynamic activation scales follow the batch shape
        np.testing.assert_allclose(ours, full, rtol=0, atol=1e-4)
