"""The fast path: score graph and shared-prefix reuse give the plain path's scores."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import numpy_helper
from reference import REF_TASK

from qwen3_rerank import Reranker
from qwen3_rerank.prompt import content_head, format_content
from qwen3_rerank.score_graph import OUTPUT, cached_score_graph, ensure_score_graph, score_graph_record

QUERY = "What is the capital of France?"
DOCS = [
    "Paris is the capital of France.",
    "Berlin is the capital of Germany, and it has been the seat of government since 1999. " * 3,
    "",
    "東京は日本の首都です。 🙂👍🏽",
    "\nstarts with a newline",
    ":: starts with punctuation",
    "The Eiffel Tower stands on the Champ de Mars in Paris. " * 12,
]


def make_reranker(model_dir, **kw):
    return Reranker.from_pretrained(model_dir, dtype=kw.pop("dtype", "fp32"), **kw)


@pytest.fixture(scope="module")
def plain(tiny_model_dir):
    return make_reranker(tiny_model_dir, score_graph=False, prefix_reuse=False)


def test_score_graph_equals_full_graph(tiny_model_dir, plain, official):
    fast = make_reranker(tiny_model_dir, prefix_reuse=False)
    assert fast.engine.is_score_graph and not plain.engine.is_score_graph
    full = plain.score(QUERY, DOCS, raw=True)
    np.testing.assert_allclose(fast.score(QUERY, DOCS, raw=True), full, rtol=0, atol=1e-5)
    np.testing.assert_allclose(full, official.gaps(QUERY, DOCS), rtol=0, atol=1e-5)


def test_score_graph_has_no_vocabulary_output(tiny_model_dir):
    fast = make_reranker(tiny_model_dir)
    outputs = [o.name for o in fast.engine.session.get_outputs()]
    assert outputs[0] == OUTPUT and "logits" not in outputs
    assert all(name.startswith("present.") for name in outputs[1:])
    model = onnx.load(str(fast.engine.path), load_external_data=False)
    vocab = fast.files.config["vocab_size"]
    # No MatMul-type node reads a weight with a vocabulary-sized dimension any more: lm_head has 2 rows.
    init_dims = {t.name: list(t.dims) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type in ("MatMul", "Gemm", "MatMulNBits", "MatMulInteger"):
            for name in node.input[1:2]:
                assert vocab not in init_dims.get(name, []), node.name


def test_prefix_reuse_equals_plain_path(tiny_model_dir, plain):
    fast = make_reranker(tiny_model_dir)
    request = fast.prepare(QUERY, DOCS)
    assert fast.prefix_reuse and request.shared_prefix > 0 and sum(request.reuses_prefix) >= 2
    np.testing.assert_allclose(fast.score(QUERY, DOCS, raw=True), plain.score(QUERY, DOCS, raw=True), rtol=0, atol=1e-4)
    instruction = "Find the sentence that names a capital"
    np.testing.assert_allclose(
        fast.score(QUERY, DOCS, raw=True, instruction=instruction),
        plain.score(QUERY, DOCS, raw=True, instruction=instruction),
        rtol=0,
        atol=1e-4,
    )


def test_prefix_reuse_with_small_batches_and_truncation(tiny_model_dir, tiny_checkpoint):
    from reference import OfficialRecipe

    fast = make_reranker(tiny_model_dir, max_length=120, max_batch_tokens=150, batch_size=2)
    ref = OfficialRecipe(tiny_checkpoint, max_length=120)
    np.testing.assert_allclose(fast.score(QUERY, DOCS, raw=True), ref.gaps(QUERY, DOCS), rtol=0, atol=1e-4)


def test_many_queries_mixed_in_score_pairs(tiny_model_dir, plain):
    fast = make_reranker(tiny_model_dir)
    pairs = [(q, d) for d in DOCS[:4] for q in (QUERY, "Where is Tokyo?")]
    np.testing.assert_allclose(fast.score_pairs(pairs, raw=True), plain.score_pairs(pairs, raw=True), atol=1e-4)


def test_cache_is_reused_and_invalidated(tmp_path, tiny_model_dir, tokenizer_dir):
    folder = tmp_path / "m"
    shutil.copytree(tiny_model_dir, folder)
    for stale in folder.glob("onnx/*.score.*"):
        stale.unlink()
    source = folder / "onnx" / "model.onnx"
    assert cached_score_graph(source, 1, 2) is None
    built = ensure_score_graph(source, 1, 2).path
    mtime = built.stat().st_mtime_ns
    assert cached_score_graph(source, 1, 2) == built
    assert ensure_score_graph(source, 1, 2).path.stat().st_mtime_ns == mtime  # not rebuilt
    assert cached_score_graph(source, 2, 1) is None  # other token ids, other graph
    data = folder / "onnx" / "model.onnx_data"
    data.write_bytes(data.read_bytes())  # same bytes, new mtime: the weights may have changed
    assert cached_score_graph(source, 1, 2) is None


def _untied(model_dir, out_dir):
    """A copy whose lm_head weight is its own [hidden, vocab] initializer, so quantizers see it."""
    shutil.copytree(model_dir, out_dir)
    for stale in out_dir.glob("onnx/*.score.*"):
        stale.unlink()
    path = out_dir / "onnx" / "model.onnx"
    model = onnx.load(str(path))
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    for node in list(graph.node):
        if (
            node.op_type == "Transpose"
            and node.input[0] in inits
            and any(c.op_type == "MatMul" and c.output[0] == "logits" for c in graph.node if node.output[0] in c.input)
        ):
            weight = numpy_helper.to_array(inits[node.input[0]])
            graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(weight.T), "lm_head.untied"))
            for c in graph.node:
                for i, name in enumerate(c.input):
                    if name == node.output[0]:
                        c.input[i] = "lm_head.untied"
            graph.node.remove(node)
    (out_dir / "onnx" / "model.onnx_data").unlink()
    onnx.save_model(model, str(path), save_as_external_data=True, location="model.onnx_data")
    return path


@pytest.mark.slow  # quantises the tiny model and builds score graphs of it
def test_score_graph_of_quantized_lm_heads(tmp_path, tiny_model_dir):
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    folder = tmp_path / "q"
    source = _untied(tiny_model_dir, folder)
    quantize_dynamic(
        str(source),
        str(folder / "onnx" / "model_quantized.onnx"),
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul", "Gemm"],
    )
    quantizer = MatMulNBitsQuantizer(onnx.load(str(source)), block_size=32, is_symmetric=False)
    quantizer.process()
    onnx.save_model(quantizer.model.model, str(folder / "onnx" / "model_q4.onnx"))
    for dtype, op, tolerance in (("q4", "MatMulNBits", 1e-5), ("q8", "MatMulInteger", 0.1)):
        full = make_reranker(folder, dtype=dtype, score_graph=False, prefix_reuse=False)
        # The file's own head and activation scheme: the numbers the full graph computes.
        fast = make_reranker(folder, dtype=dtype, prefix_reuse=False, yes_no_head="quantized", q8_activations="tensor")
        graph = onnx.load(str(fast.engine.path), load_external_data=False).graph
        lm = [n for n in graph.node if n.op_type == op and any(i.startswith("score.lm_head") for i in n.input)]
        assert len(lm) == 1, f"{dtype}: lm_head was not sliced in its own format"
        # q4: exactly the full graph's numbers. q8: dynamic int8 quantises the lm_head input with
        # one scale per tensor, which the full graph takes over all positions and the score graph
        # over the last ones, so the two differ by quantisation noise only.
        np.testing.assert_allclose(
            fast.score(QUERY, DOCS, raw=True), full.score(QUERY, DOCS, raw=True), rtol=0, atol=tolerance
        )


@pytest.mark.slow  # quantises two copies of the tiny model
def test_float_head_is_the_tied_embedding_rows(tmp_path, tiny_model_dir, tokenizer_dir):
    """``yes_no_head``: the float rows are used only where they are lm_head's own weights."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from qwen3_rerank.score_graph import ScoreGraphError

    for tied in (True, False):
        folder = tmp_path / f"tied-{tied}"
        source = _untied(tiny_model_dir, folder)
        if not tied:  # lm_head becomes other weights than the embedding table
            model = onnx.load(str(source))
            for t in model.graph.initializer:
                if t.name == "lm_head.untied":
                    t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * 1.5 + 0.01, t.name))
            (folder / "onnx" / "model.onnx_data").unlink()  # onnx appends to an existing data file
            onnx.save_model(model, str(source), save_as_external_data=True, location="model.onnx_data")
        target = folder / "onnx" / "model_quantized.onnx"
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
        tokenizer = make_reranker(folder, dtype="q8", score_graph=False).tokenizer
        ids = [tokenizer.yes_id, tokenizer.no_id]
        # auto keeps an int8 head (the float rows measured no closer to fp32 there)
        assert score_graph_record(ensure_score_graph(target, *ids).path)["head"] == "quantized"
        table = numpy_helper.to_array(
            next(t for t in onnx.load(str(source)).graph.initializer if t.name == "model.lm_head.weight")
        )
        if tied:
            path = ensure_score_graph(target, *ids, head="float").path
            assert score_graph_record(path)["head"] == "float"
            weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
            np.testing.assert_array_equal(weights["score.lm_head.float_weight"], table[ids].T)
            fast = make_reranker(folder, dtype="q8", yes_no_head="float")
            assert fast.engine.path == path and np.isfinite(fast.score(QUERY, DOCS, raw=True)).all()
        else:
            with pytest.raises(ScoreGraphError, match="no float rows"):
                ensure_score_graph(target, *ids, head="float")


@pytest.mark.parametrize("dtype", ["fp32", "fp16", "q4", "q8"])
def test_fast_path_on_exported_variants(exported, dtype):
    """Score graph and prefix reuse on our exporter's files, GroupQueryAttention ones included."""
    plain = make_reranker(exported, dtype=dtype, score_graph=False, prefix_reuse=False)
    # The file's own yes/no head, so that the numbers are the ones the plain path computes (the
    # default float head of q8/q4 is other, closer-to-fp32 numbers: docs/benchmarks/q8-head/).
    # q4: the file's own 4-bit kernels ("tensor"; the default runs them as int8, checked in
    # test_q4_linears_run_as_int8).
    own_kernels = {"q8_activations": "tensor"} if dtype == "q4" else {}
    fast = make_reranker(exported, dtype=dtype, yes_no_head="quantized", **own_kernels)
    one_by_one = make_reranker(exported, dtype=dtype, score_graph=False, prefix_reuse=False, batch_size=1)
    assert fast.engine.is_score_graph and fast.prefix_reuse
    uses_gqa = score_graph_record(fast.engine.path)["group_query_attention"]
    assert uses_gqa == (dtype in ("q8", "q4"))
    # GroupQueryAttention takes new tokens on top of a past for one row at a time only.
    assert fast.engine.max_batch_with_past == (1 if uses_gqa else None)
    full = np.array(plain.score(QUERY, DOCS, raw=True))
    ours = np.array(fast.score(QUERY, DOCS, raw=True))
    single = np.array(one_by_one.score(QUERY, DOCS, raw=True))
    if dtype == "q8":
        # The file quantises activations with one scale per tensor (the plain path here); the
        # score graph quantises per row: the two differ by quantisation noise, so the ranking
        # stays: _assert_same_order checks the order of every two documents whose reference gaps
        # lie more than ORDER_MARGIN apart (a margin below the noise bound, so the bound does not
        # imply the order), and the noise stays under 0.5 on the gap ...
        _assert_same_order(ours, single)
        assert np.abs(ours - single).max() < 0.5
        # ... and the score graph gives a document the same gap with and without the prefix pass
        # and in any batch (tests/test_independence.py checks this on random requests).
        rows = make_reranker(
            exported, dtype=dtype, yes_no_head="quantized", prefix_reuse=False, batch_size=3, max_batch_tokens=400
        )
        np.testing.assert_allclose(ours, rows.score(QUERY, DOCS, raw=True), rtol=0, atol=1e-5)
    elif dtype == "fp16":
        # The score graph runs a float16 model's attention in float32 (so that padding cannot move
        # a document's gap): other numbers than the plain float16 graph, as far from fp32 as it
        # (both read yes/no logits rounded to float16, about 2e-3 apart at these sizes).
        fp32 = np.array(make_reranker(exported, dtype="fp32", score_graph=False).score(QUERY, DOCS, raw=True))
        np.testing.assert_allclose(ours, full, rtol=0, atol=3e-3)
        assert np.abs(ours - fp32).max() <= 2 * np.abs(full - fp32).max() + 1e-3, (ours - fp32, full - fp32)
        np.testing.assert_allclose(ours, single, rtol=0, atol=3e-3)
    else:
        np.testing.assert_allclose(ours, full, rtol=0, atol=1e-4)
        np.testing.assert_allclose(ours, single, rtol=0, atol=1e-4)


def test_q4_linears_run_as_int8(exported):
    """By default a q4 score graph runs its 4-bit linears as int8 ``MatMulInteger`` (ONNX Runtime's
    faster CPU kernel, see score_graph_build._nbits_as_int8). The drift from the file's own 4-bit
    arithmetic must stay within the gap that arithmetic already has to fp32, a document's gap must
    not depend on its batch, and ``tensor`` mode must keep the file's kernels."""
    fast = make_reranker(exported, dtype="q4", yes_no_head="quantized")
    record = score_graph_record(fast.engine.path)
    ops = {node.op_type for node in onnx.load(str(fast.engine.path), load_external_data=False).graph.node}
    assert record["nbits_as_int8"] > 0 and record["requantized_matmuls"] == record["nbits_as_int8"]
    assert "MatMulNBits" not in ops and "MatMulInteger" in ops
    file_own = make_reranker(exported, dtype="q4", score_graph=False, prefix_reuse=False)
    fp32 = make_reranker(exported, dtype="fp32", score_graph=False, prefix_reuse=False)
    ours = np.array(fast.score(QUERY, DOCS, raw=True))
    own = np.array(file_own.score(QUERY, DOCS, raw=True))
    reference = np.array(fp32.score(QUERY, DOCS, raw=True))
    file_gap = np.abs(own - reference).max()
    assert file_gap > 0
    assert np.abs(ours - own).max() <= file_gap, (ours - own, own - reference)
    rows = make_reranker(
        exported, dtype="q4", yes_no_head="quantized", prefix_reuse=False, batch_size=3, max_batch_tokens=400
    )
    np.testing.assert_allclose(ours, rows.score(QUERY, DOCS, raw=True), rtol=0, atol=1e-5)
    kept = make_reranker(exported, dtype="q4", yes_no_head="quantized", q8_activations="tensor")
    assert score_graph_record(kept.engine.path)["nbits_as_int8"] == 0
    kept_ops = {node.op_type for node in onnx.load(str(kept.engine.path), load_external_data=False).graph.node}
    assert "MatMulNBits" in kept_ops


#: Two documents whose reference gaps differ by more than this must keep their order under
#: quantisation noise. Measured on the tiny q8 model: the noise moves gaps by up to 0.14 and the
#: order of documents 0.22 apart holds; one pair 0.013 apart swaps, which is noise, not ranking.
ORDER_MARGIN = 0.1


def _assert_same_order(ours: np.ndarray, reference: np.ndarray) -> None:
    """Every two documents more than ORDER_MARGIN apart in ``reference`` are in the same order in ``ours``."""
    n = len(reference)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n) if abs(reference[i] - reference[j]) > ORDER_MARGIN]
    # the check must have something to hold: most pairs of the test documents are that far apart
    assert len(pairs) >= 3 * n * (n - 1) // 8, f"only {len(pairs)} pairs are {ORDER_MARGIN} apart: {reference}"
    flipped = [(i, j) for i, j in pairs if (ours[i] - ours[j]) * (reference[i] - reference[j]) <= 0]
    assert not flipped, (
        f"ranking changed for document pairs {flipped} (reference gaps {np.round(reference, 3).tolist()}, "
        f"ours {np.round(ours, 3).tolist()}; max |Δ| {np.abs(ours - reference).max():.3f})"
    )


text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=text, docs=st.lists(text, min_size=2, max_size=4), instruction=st.none() | text)
def test_prefix_split_never_changes_token_ids(reranker, official, query, docs, instruction):
    request = reranker.prepare(query, docs, instruction=instruction)
    whole = official.token_ids(query, docs, instruction)  # the reference tokenizer on whole prompts
    n = request.shared_prefix
    # The shared part as the reference sees it: its own prefix ids and its own tokenizer on the
    # head written out here (not the package's content_head or tokenizer), so that the check
    # below can disagree with the package's split.
    head = f"<Instruct>: {REF_TASK if instruction is None else instruction}\n<Query>: {query}\n<Document>:"
    shared = official.prefix_tokens + official.tokenizer.encode(head, add_special_tokens=False)
    assert n == len(shared)
    for seq, reuses, ref in zip(request.sequences, request.reuses_prefix, whole, strict=True):
        assert list(seq) == ref
        # Reused exactly when the whole prompt starts with the separately tokenized prefix.
        assert reuses == (ref[:n] == shared and len(ref) > n)
        if reuses:
            assert shared + list(seq[n:]) == ref


def test_content_head_is_the_shared_part():
    assert format_content("q", "doc", "inst") == content_head("q", "inst") + " doc"
    assert format_content("q", "doc") == content_head("q") + " doc"


def test_optimize_command_builds_every_variant(tmp_path, exported):
    import json
    import subprocess
    import sys

    folder = tmp_path / "m"
    shutil.copytree(exported, folder)
    for stale in folder.glob("onnx/*.score.*"):
        stale.unlink()
    proc = subprocess.run(
        [sys.executable, "-m", "qwen3_rerank", "optimize", str(folder)], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert sorted(line["dtype"] for line in lines) == ["fp16", "fp32", "q4", "q8"]
    for line in lines:
        assert (folder / "onnx" / line["score_graph"].split("/")[-1]).is_file()
    bad = subprocess.run(
        [sys.executable, "-m", "qwen3_rerank", "optimize", str(tmp_path / "nothing")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
