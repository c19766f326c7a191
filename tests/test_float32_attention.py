"""The fp16 score graph's float32 attention (score_graph_build._float32_attention), on small graphs.

Only float16 products of two activations and float16 softmaxes are widened: a float32 island in
a float16 file (rotary angles, an upcast softmax) must stay as it is, or the graph no longer
type-checks.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from qwen3_rerank import score_graph_build


def _session(graph) -> ort.InferenceSession:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_float16_attention_is_widened_and_a_float32_island_is_not():
    nodes = [
        # float16 attention: scores = softmax(q @ k), out = scores @ v
        helper.make_node("MatMul", ["q", "k"], ["scores"]),
        helper.make_node("Softmax", ["scores"], ["probs"], axis=-1),
        helper.make_node("MatMul", ["probs", "v"], ["out16"]),
        # a float32 island: angles = inv_freq @ positions, then an Add in float32
        helper.make_node("Cast", ["positions"], ["positions_f"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["inv_freq", "positions_f"], ["angles"]),
        helper.make_node("Add", ["angles", "bias32"], ["out32"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mixed",
        [
            helper.make_tensor_value_info("q", TensorProto.FLOAT16, [4, 8]),
            helper.make_tensor_value_info("k", TensorProto.FLOAT16, [8, 6]),
            helper.make_tensor_value_info("v", TensorProto.FLOAT16, [6, 3]),
            helper.make_tensor_value_info("positions", TensorProto.INT64, [1, 5]),
            helper.make_tensor_value_info("inv_freq", TensorProto.FLOAT, [4, 1]),
        ],
        [
            helper.make_tensor_value_info("out16", TensorProto.FLOAT16, None),
            helper.make_tensor_value_info("out32", TensorProto.FLOAT, None),
        ],
        [numpy_helper.from_array(np.float32(0.5), "bias32")],
    )
    rng = np.random.default_rng(0)
    feeds = {
        "q": rng.standard_normal((4, 8)).astype(np.float16),
        "k": rng.standard_normal((8, 6)).astype(np.float16),
        "v": rng.standard_normal((6, 3)).astype(np.float16),
        "positions": np.arange(5, dtype=np.int64)[None],
        "inv_freq": rng.random((4, 1)).astype(np.float32),
    }
    before = _session(graph).run(None, feeds)
    assert score_graph_build._float32_attention(graph) == 3  # two MatMuls and the Softmax, float16 only
    widened = [n for n in graph.node if n.op_type == "MatMul" and n.input[0].startswith("score.attn32")]
    assert len(widened) == 2
    after = _session(graph).run(None, feeds)  # a float32 MatMul wrapped too would not load
    np.testing.assert_array_equal(after[1], before[1])
    assert after[0].dtype == np.float16
    x = feeds["q"].astype(np.float64) @ feeds["k"].astype(np.float64)
    p = np.exp(x - x.max(-1, keepdims=True))
    exact = (p / p.sum(-1, keepdims=True)) @ feeds["v"].astype(np.float64)
    assert np.abs(after[0] - exact).max() <= 4e-3  # float16 output rounding only
