"""The shared ONNX graph helpers (``qwen3_rerank.onnx_graph``) on small hand-made graphs.

The score graph and the exporter rely on these; their own tests (test_fast_path.py, test_export.py)
run them on real exported models. Here each helper is checked against what it promises.
"""

from __future__ import annotations

import random
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qwen3_rerank.onnx_graph import (
    GraphError,
    GraphIndex,
    attribute,
    fold_transposed_initializers,
    insert_nodes,
    prune,
    save_with_external_data,
    set_attribute,
    tensor_value,
    toposort,
)


def _node(op: str, inputs: list[str], outputs: list[str], **attrs: object) -> onnx.NodeProto:
    return helper.make_node(op, inputs, outputs, name=outputs[0], **attrs)


def _diamond() -> list[onnx.NodeProto]:
    """x -> a -> (b, c) -> d -> e, plus f reading only x: a valid order, by construction."""
    return [
        _node("Relu", ["x"], ["a"]),
        _node("Neg", ["a"], ["b"]),
        _node("Abs", ["a"], ["c"]),
        _node("Add", ["b", "c"], ["d"]),
        _node("Sigmoid", ["d"], ["e"]),
        _node("Identity", ["x"], ["f"]),
    ]


def _is_topological(nodes: list[onnx.NodeProto]) -> bool:
    produced = {o for n in nodes for o in n.output}
    seen: set[str] = set()
    for node in nodes:
        if any(i in produced and i not in seen for i in node.input):
            return False
        seen.update(node.output)
    return True


@pytest.mark.parametrize("seed", range(5))
def test_toposort_orders_a_shuffled_graph(seed):
    nodes = _diamond()
    shuffled = nodes[:]
    random.Random(seed).shuffle(shuffled)
    assert not _is_topological(shuffled)  # every seed here shuffles into an invalid order
    ordered = toposort(shuffled)
    assert _is_topological(ordered)
    assert sorted(n.name for n in ordered) == sorted(n.name for n in nodes)  # same nodes, once each


def test_toposort_is_stable():
    nodes = _diamond()
    assert [n.name for n in toposort(nodes)] == [n.name for n in nodes]  # already in order: unchanged
    # c before b is valid too, and is kept: the sort only moves what it must.
    swapped = [nodes[0], nodes[2], nodes[1], *nodes[3:]]
    assert [n.name for n in toposort(swapped)] == ["a", "c", "b", "d", "e", "f"]
    # A node appended at the end moves up to right before its first consumer, no further.
    late = [*nodes[:3], *nodes[4:], nodes[3]]  # d last, although e needs it
    assert [n.name for n in toposort(late)] == ["a", "b", "c", "f", "d", "e"]


def test_insert_nodes_places_new_nodes_before_their_consumers():
    graph = helper.make_graph(
        [_node("Relu", ["x"], ["a"]), _node("Add", ["a", "n2"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    insert_nodes(graph, [_node("Neg", ["n1"], ["n2"]), _node("Abs", ["x"], ["n1"])])
    assert [n.name for n in graph.node] == ["a", "n1", "n2", "y"]
    onnx.checker.check_graph(graph)


def test_toposort_reports_a_cycle():
    nodes = [_node("Relu", ["x"], ["a"]), _node("Neg", ["a", "c"], ["b"]), _node("Abs", ["b"], ["c"])]
    with pytest.raises(GraphError, match="cycle: 2 nodes"):
        toposort(nodes)
    with pytest.raises(GraphError, match="cycle"):
        toposort([_node("Identity", ["s"], ["s"])])  # a node reading its own output


def test_prune_keeps_what_the_outputs_need():
    keep_w = numpy_helper.from_array(np.ones(2, np.float32), "w")
    dead_w = numpy_helper.from_array(np.ones(2, np.float32), "unused_w")
    dead_only_w = numpy_helper.from_array(np.ones(2, np.float32), "dead_w")
    graph = helper.make_graph(
        [
            _node("Add", ["x", "w"], ["a"]),
            _node("Mul", ["x", "dead_w"], ["dead1"]),  # reads a weight only dead nodes read
            _node("Relu", ["dead1"], ["dead2"]),
            _node("Neg", ["a"], ["y"]),
            _node("Abs", ["a"], ["side"]),  # a second consumer of a kept tensor, itself unused
        ],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
            helper.make_tensor_value_info("unused_input", TensorProto.FLOAT, [2]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        [keep_w, dead_w, dead_only_w],
        value_info=[
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [2]),
            helper.make_tensor_value_info("dead2", TensorProto.FLOAT, [2]),
        ],
    )
    prune(graph)
    assert [n.name for n in graph.node] == ["a", "y"]
    assert [t.name for t in graph.initializer] == ["w"]
    assert [v.name for v in graph.value_info] == ["a"]
    assert [i.name for i in graph.input] == ["x", "unused_input"]  # the interface is not pruned
    onnx.checker.check_graph(graph)


def test_prune_does_not_depend_on_node_order():
    graph = helper.make_graph(
        [_node("Neg", ["a"], ["y"]), _node("Relu", ["x"], ["a"]), _node("Abs", ["x"], ["dead"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    prune(graph)
    assert [n.name for n in graph.node] == ["y", "a"]  # kept, in the order they were


def _model(nodes, inputs, outputs, inits) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_fold_transposed_initializers():
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 4)).astype(np.float32)  # [out, in], as an embedding table
    cube = rng.standard_normal((2, 3, 4)).astype(np.float32)
    model = _model(
        [
            _node("Transpose", ["w"], ["w_t"], perm=[1, 0]),
            _node("MatMul", ["x", "w_t"], ["y"]),
            _node("Transpose", ["cube"], ["cube_t"]),  # no perm: the axes reversed
            _node("Identity", ["cube_t"], ["z"]),
            _node("Transpose", ["x"], ["x_t"], perm=[1, 0]),  # of an activation: stays
            _node("Identity", ["x_t"], ["xt"]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, [4, 3, 2]),
            helper.make_tensor_value_info("xt", TensorProto.FLOAT, [4, 2]),
        ],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(cube, "cube")],
    )
    x = rng.standard_normal((2, 4)).astype(np.float32)
    before = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})

    assert fold_transposed_initializers(model.graph) == 2
    assert [n.op_type for n in model.graph.node] == ["MatMul", "Identity", "Transpose", "Identity"]
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    np.testing.assert_array_equal(inits["w_t"], w.T)
    np.testing.assert_array_equal(inits["cube_t"], cube.transpose(2, 1, 0))
    assert "w" in inits  # the source stays; prune() removes it when nothing reads it
    onnx.checker.check_model(model)
    after = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)


def test_constant_lookup():
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    graph = helper.make_graph(
        [
            _node("Transpose", ["w"], ["w_t"], perm=[1, 0]),
            _node("Transpose", ["w"], ["w_rev"]),
            helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.array([7], np.int64))),
            helper.make_node("Constant", [], ["cf"], value_floats=[0.5, 1.5]),
            helper.make_node("Constant", [], ["ci"], value_int=3),
            _node("Relu", ["x"], ["r"]),
            _node("Transpose", ["r"], ["r_t"], perm=[1, 0]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("r_t", TensorProto.FLOAT, [3, 2])],
        [numpy_helper.from_array(w, "w")],
    )
    g = GraphIndex(graph)
    np.testing.assert_array_equal(g.constant("w"), w)
    np.testing.assert_array_equal(g.constant("w_t"), w.T)
    np.testing.assert_array_equal(g.constant("w_rev"), w.T)
    np.testing.assert_array_equal(g.constant("c"), [7])
    cf = g.constant("cf")
    assert cf is not None and cf.dtype == np.float32
    np.testing.assert_array_equal(cf, [0.5, 1.5])
    ci = g.constant("ci")
    assert ci is not None and ci.dtype == np.int64 and ci.item() == 3
    for name in ("x", "r", "r_t", "", "missing"):  # activations and omitted inputs have no value
        assert g.constant(name) is None
    pending = [numpy_helper.from_array(np.array([9.0], np.float32), "w")]
    np.testing.assert_array_equal(g.constant("w", pending=pending), [9.0])  # a new value comes first
    fresh = [numpy_helper.from_array(np.array([4], np.int64), "fresh")]
    np.testing.assert_array_equal(g.constant("fresh", pending=fresh), [4])  # not in the graph yet


def test_constant_lookup_reads_external_data(tmp_path):
    w = np.arange(2048, dtype=np.float32).reshape(2, 1024)
    model = _model(
        [_node("Transpose", ["w"], ["w_t"], perm=[1, 0]), _node("MatMul", ["x", "w_t"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1024])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        [numpy_helper.from_array(w, "w")],
    )
    (tmp_path / "model.onnx_data").write_bytes(b"stale bytes that a save must not append to")
    data = save_with_external_data(model, tmp_path / "model.onnx")
    assert data == tmp_path / "model.onnx_data"
    assert data.stat().st_size == w.nbytes  # the stale file was replaced, not appended to
    light = onnx.load(str(tmp_path / "model.onnx"), load_external_data=False)
    assert light.graph.initializer[0].data_location == TensorProto.EXTERNAL
    g = GraphIndex(light.graph)
    np.testing.assert_array_equal(g.constant("w_t", tmp_path), w.T)
    with pytest.raises(GraphError, match="folder was not given"):
        g.constant("w")

    escaping = onnx.TensorProto()
    escaping.CopyFrom(light.graph.initializer[0])
    for entry in escaping.external_data:
        if entry.key == "location":
            entry.value = "../model.onnx_data"
    with pytest.raises(GraphError, match="outside the model folder"):
        tensor_value(escaping, tmp_path)
    data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(GraphError, match="truncated"):
        tensor_value(light.graph.initializer[0], tmp_path)


def test_index_and_ancestors():
    graph = helper.make_graph(
        _diamond(),
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, [2])],
    )
    g = GraphIndex(graph)
    assert g.producer["d"].name == "d" and "x" not in g.producer
    assert [n.name for n in g.consumers["a"]] == ["b", "c"]
    assert [n.name for n in g.consumers["x"]] == ["a", "f"]
    assert [n.name for n in g.ancestors("e", depth=1)] == ["e"]
    assert [n.name for n in g.ancestors("e", depth=3)] == ["e", "d", "b", "c"]  # nearest first
    assert [n.name for n in g.ancestors("e", depth=10)] == ["e", "d", "b", "c", "a"]  # a once


def test_attributes():
    node = _node("Gemm", ["a", "b"], ["y"], transB=1, alpha=0.5)
    assert attribute(node, "transB") == 1 and attribute(node, "missing", "default") == "default"
    set_attribute(node, "transB", 0)
    set_attribute(node, "beta", 2.0)
    assert [a.name for a in node.attribute].count("transB") == 1  # replaced, not added twice
    assert attribute(node, "transB") == 0 and attribute(node, "beta") == 2.0 and attribute(node, "alpha") == 0.5


def test_importing_the_helpers_does_not_import_onnx():
    """``import qwen3_rerank`` reaches this module through engine -> score_graph; it must stay light."""
    code = "import sys, qwen3_rerank.onnx_graph, qwen3_rerank.score_graph; print('onnx' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
