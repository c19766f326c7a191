"""The q8 activation modes of the score graph, on one dynamic-int8 MatMul (no model export).

A float MatMul with full-range weights goes through ``onnxruntime.quantization.quantize_dynamic``
(the published q8 files' tool), then through the score graph's rewrite for each mode. The
reference is written here in numpy: the same per-token quantisation of the activations, the file's
own int8 weights and scale, and exact integer products (int64).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from qwen3_rerank import score_graph_build as score_graph

ROWS, K, N = 24, 256, 64


@pytest.fixture(scope="module")
def quantized_matmul(tmp_path_factory) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    rng = np.random.default_rng(0)
    # uniform: every int8 code is in use, the hardest case for a kernel that adds in 16 bits
    weight = rng.uniform(-1, 1, (K, N)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "one_matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", N])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    folder = tmp_path_factory.mktemp("q8op")
    onnx.save(model, folder / "float.onnx")
    quantize_dynamic(folder / "float.onnx", folder / "q8.onnx", weight_type=QuantType.QInt8)
    return folder / "q8.onnx"


def _rewritten(source: Path, mode: str) -> ort.InferenceSession:
    model = onnx.load(source)
    if mode != "tensor":
        assert score_graph._requantize_activations(model, mode, source.parent) == 1
        quantizer = "QuantizeLinear" if score_graph.ROW_QUANTIZER == "quantize_linear" else "Round"
        assert mode == "nbits8" or quantizer in {n.op_type for n in model.graph.node}
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _file_weights(source: Path) -> tuple[np.ndarray, float]:
    model = onnx.load(source)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    weight = next(v for v in inits.values() if v.dtype == np.int8 and v.ndim == 2)
    scale = next(v for name, v in inits.items() if "scale" in name and v.dtype == np.float32)
    return weight, float(scale)


def _activations(rows: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # rows of very different sizes, as a hidden state's tokens are
    return (rng.standard_normal((1, rows, K)) * rng.uniform(0.05, 20, (1, rows, 1))).astype(np.float32)


def _per_token_reference(x: np.ndarray, weight: np.ndarray, weight_scale: float) -> np.ndarray:
    scale = np.maximum(np.abs(x).max(-1, keepdims=True) / 127, 1e-30).astype(np.float32)
    codes = np.clip(np.round(x / scale), -127, 127).astype(np.int64)
    return (codes @ weight.astype(np.int64)).astype(np.float64) * scale * weight_scale


@pytest.mark.parametrize("mode", ["row", "row-u8", "nbits8", "auto"])
def test_a_row_gives_the_same_numbers_alone_and_in_any_batch(quantized_matmul, mode):
    session = _rewritten(quantized_matmul, mode)
    x = _activations(ROWS, seed=1)
    together = session.run(None, {"x": x})[0]
    for row in (0, 5, ROWS - 1):
        alone = session.run(None, {"x": x[:, row : row + 1]})[0]
        np.testing.assert_array_equal(alone[0, 0], together[0, row])


def test_the_files_per_tensor_scheme_mixes_rows(quantized_matmul):
    """What the rewrite is for: with one scale per tensor a row's numbers follow the other rows."""
    session = _rewritten(quantized_matmul, "tensor")
    x = _activations(ROWS, seed=1)
    together = session.run(None, {"x": x})[0]
    alone = session.run(None, {"x": x[:, :1]})[0]
    assert np.abs(alone[0, 0] - together[0, 0]).max() > 1e-3 * np.abs(together[0, 0]).max()


def test_row_u8_products_are_exact(quantized_matmul):
    """u8×u8 sums in 32 bits on every CPU: equal to exact integer arithmetic up to float rounding."""
    weight, weight_scale = _file_weights(quantized_matmul)
    x = _activations(ROWS, seed=2)
    got = _rewritten(quantized_matmul, "row-u8").run(None, {"x": x})[0]
    want = _per_token_reference(x, weight, weight_scale)
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


def test_auto_is_exact_on_this_cpu(quantized_matmul):
    """``auto`` picks ``row`` only where ONNX Runtime's u8×s8 products are exact, so it always is;
    where they are not, ``row`` itself is shown to drift (the reason ``auto`` avoids it)."""
    weight, weight_scale = _file_weights(quantized_matmul)
    x = _activations(ROWS, seed=3)
    want = _per_token_reference(x, weight, weight_scale)
    auto = _rewritten(quantized_matmul, "auto").run(None, {"x": x})[0]
    assert np.abs(auto - want).max() <= 1e-5 * np.abs(want).max()
    row = _rewritten(quantized_matmul, "row").run(None, {"x": x})[0]
    if score_graph.int8_products_exact():
        assert score_graph.resolve_activations("auto") == "row"
        assert np.abs(row - want).max() <= 1e-5 * np.abs(want).max()
    else:
        assert score_graph.resolve_activations("auto") == "row-u8"
        assert np.abs(row - want).max() > 1e-3 * np.abs(want).max()  # 16-bit saturation


def test_modes_are_checked():
    assert score_graph.resolve_activations("nbits8") == "nbits8"
    assert score_graph.resolve_activations("auto") in ("row", "row-u8")
    with pytest.raises(ValueError, match="activations must be one of"):
        score_graph._check_modes("per-row", "auto")


@pytest.mark.parametrize("mode", ["row", "row-u8"])
def test_quantize_linear_gives_the_elementwise_codes(quantized_matmul, mode, monkeypatch):
    """The per-row codes come from one per-axis ``QuantizeLinear`` (faster: one pass over the
    activations); the five-node elementwise form is the same arithmetic, so the outputs are equal."""
    x = _activations(ROWS, seed=4)
    ops = {n.op_type for n in onnx.load(quantized_matmul).graph.node}
    fast = _rewritten(quantized_matmul, mode)
    monkeypatch.setattr(score_graph, "ROW_QUANTIZER", "elementwise")
    slow = _rewritten(quantized_matmul, mode)
    assert "QuantizeLinear" not in ops
    np.testing.assert_array_equal(fast.run(None, {"x": x})[0], slow.run(None, {"x": x})[0])
    np.testing.assert_array_equal(fast.run(None, {"x": x[:, :3]})[0], slow.run(None, {"x": x[:, :3]})[0])
