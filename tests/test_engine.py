"""Graph introspection and feeds, on the tiny export and on small synthetic graphs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qwen3_rerank import ModelLoadError
from qwen3_rerank.batching import pad
from qwen3_rerank.engine import OnnxEngine, providers_for

VOCAB = 11


def _last_token_graph(path, *, extra_input=None, keep_all_positions=False):
    """logits[b, :, v] = table[input_ids[b, -1 or all], v]: a graph with a known answer."""
    table = np.arange(VOCAB * VOCAB, dtype=np.float32).reshape(VOCAB, VOCAB) / 10
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
    ]
    if extra_input:
        inputs.append(helper.make_tensor_value_info(extra_input, TensorProto.INT64, ["batch"]))
    nodes = []
    inits = [numpy_helper.from_array(table, "table")]
    if keep_all_positions:
        nodes.append(helper.make_node("Gather", ["table", "input_ids"], ["logits"], axis=0))
        out_shape = ["batch", "seq", VOCAB]
    else:
        inits += [
            numpy_helper.from_array(np.array([-1], np.int64), "start"),
            numpy_helper.from_array(np.array([2**62], np.int64), "end"),
            numpy_helper.from_array(np.array([1], np.int64), "axis"),
        ]
        nodes.append(helper.make_node("Slice", ["input_ids", "start", "end", "axis"], ["last_ids"]))
        nodes.append(helper.make_node("Gather", ["table", "last_ids"], ["logits"], axis=0))
        out_shape = ["batch", 1, VOCAB]
    graph = helper.make_graph(
        nodes, "g", inputs, [helper.make_tensor_value_info("logits", TensorProto.FLOAT, out_shape)], inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return table


@pytest.mark.parametrize("keep_all_positions", [False, True])
def test_last_position_logits_for_either_output_shape(tmp_path, keep_all_positions):
    table = _last_token_graph(tmp_path / "g.onnx", keep_all_positions=keep_all_positions)
    engine = OnnxEngine(tmp_path / "g.onnx")
    assert not engine.has_position_ids and engine.past_inputs == []
    ids, mask = pad([[1, 2, 3], [4], [5, 9]], pad_id=0, side="left")
    logits = engine.last_logits(ids, mask)
    np.testing.assert_array_equal(logits, table[[3, 4, 9]])


def test_unknown_input_is_named(tmp_path):
    _last_token_graph(tmp_path / "g.onnx", extra_input="token_type_ids")
    with pytest.raises(ModelLoadError, match="does not know how to feed: token_type_ids"):
        OnnxEngine(tmp_path / "g.onnx")


def test_feeds_follow_the_declared_graph(tiny_model_dir):
    import json

    config = json.loads((tiny_model_dir / "config.json").read_text())
    engine = OnnxEngine(tiny_model_dir / "onnx" / "model.onnx", config=config)
    assert engine.has_position_ids
    assert len(engine.past_inputs) == 2 * config["num_hidden_layers"]
    ids, mask = pad([[7, 8, 9, 10], [7, 8]], pad_id=0, side="left")
    feed = engine.feeds(ids, mask)
    # Positions count real tokens only: left padding does not shift them.
    np.testing.assert_array_equal(feed["position_ids"], [[0, 1, 2, 3], [0, 0, 0, 1]])
    past = feed["past_key_values.0.key"]
    assert past.shape == (2, config["num_key_value_heads"], 0, config["head_dim"]) and past.dtype == np.float32
    assert set(feed) == {i.name for i in engine.session.get_inputs()}


def test_heavy_left_padding_gives_no_nan(tiny_model_dir):
    engine = OnnxEngine(tiny_model_dir / "onnx" / "model.onnx")
    ids, mask = pad([list(range(100, 400)), [100, 101]], pad_id=0, side="left")
    logits = engine.last_logits(ids, mask)
    assert np.isfinite(logits).all()


def test_devices():
    assert providers_for("cpu") == ["CPUExecutionProvider"]
    with pytest.raises(ModelLoadError, match="unknown device 'tpu'"):
        providers_for("tpu")
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(ModelLoadError, match="no CUDAExecutionProvider"):
            providers_for("cuda")
    with pytest.raises(ModelLoadError, match="not available"):
        providers_for(providers=["NoSuchExecutionProvider"])


def test_io_binding_path_gives_the_same_scores(tiny_model_dir, reranker):
    """The CUDA code path (explicit IO binding, KV cache as device OrtValues), run on the CPU."""
    from qwen3_rerank import Reranker

    bound = Reranker.from_pretrained(tiny_model_dir, dtype="fp32")
    bound.engine.io_binding = True
    assert bound.prefix_reuse
    docs = ["Paris is the capital of France.", "Berlin is in Germany.", "", "word " * 50]
    np.testing.assert_allclose(
        bound.score("capital of France?", docs, raw=True),
        reranker.score("capital of France?", docs, raw=True),
        atol=1e-6,
    )
    value = bound.engine.to_device(np.ones((2, 3), np.float32))
    assert not isinstance(value, np.ndarray) and value.device_name().lower() == "cpu"


def _one_logit_graph(path, last_dim):
    """logits[b, s, 0] = table[input_ids[b, s]]: a one-label classifier's output, declared with
    ``last_dim``; reshaped through a computed shape so that nothing can infer that dim."""
    table = (np.arange(VOCAB, dtype=np.float32) - 5.0).reshape(VOCAB, 1) / 4
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["table", "input_ids"], ["gathered"], axis=0),
            helper.make_node("Shape", ["input_ids"], ["ids_shape"]),
            helper.make_node("Concat", ["ids_shape", "minus_one"], ["out_shape"], axis=0),
            helper.make_node("Reshape", ["gathered", "out_shape"], ["logits"]),
        ],
        "g",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", last_dim])],
        [numpy_helper.from_array(table, "table"), numpy_helper.from_array(np.array([-1], np.int64), "minus_one")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return table[:, 0]


SEQ_CLS_CONFIG = {"architectures": ["Qwen3ForSequenceClassification"]}


def test_one_logit_graph_gives_its_logit_as_the_gap(tmp_path):
    table = _one_logit_graph(tmp_path / "g.onnx", 1)
    engine = OnnxEngine(tmp_path / "g.onnx")
    assert engine.single_logit and not engine.is_score_graph
    ids, mask = pad([[1, 2, 3], [4], [5, 9]], pad_id=0, side="left")
    # yes/no ids are not used: the logit at the last position is the gap
    np.testing.assert_array_equal(engine.gaps(ids, mask, yes_id=7, no_id=8), table[[3, 4, 9]].astype(np.float64))


def test_open_last_dim_follows_the_config(tmp_path):
    _one_logit_graph(tmp_path / "g.onnx", "labels")
    assert OnnxEngine(tmp_path / "g.onnx", config=SEQ_CLS_CONFIG).single_logit
    assert not OnnxEngine(tmp_path / "g.onnx", config={"architectures": ["Qwen3ForCausalLM"]}).single_logit


def test_seq_cls_config_with_a_wide_output_is_refused(tmp_path):
    _last_token_graph(tmp_path / "g.onnx")
    assert not OnnxEngine(tmp_path / "g.onnx").single_logit  # a vocabulary: causal
    with pytest.raises(ModelLoadError, match="11 labels; only one-label"):
        OnnxEngine(tmp_path / "g.onnx", config=SEQ_CLS_CONFIG)
