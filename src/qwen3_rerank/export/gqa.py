"""Fuse each Qwen3 attention block of an exported graph into ``com.microsoft.GroupQueryAttention``.

Why a pass of our own: neither maintained tool fuses this graph. ``onnxruntime.transformers``'
optimizer (``model_type="qwen3"``) fuses the RMSNorms but no attention or rotary embedding of a
``torch.onnx`` (dynamo) export, and onnxscript's ``optimize_for_ort`` GQA rule needs the causal-mask
pattern of older ``transformers`` releases and derives ``seqlens_k`` from ``position_ids``, which
is wrong for left-padded rows. So this pass, written on plain ``onnx`` protos, finds the eager
attention of each layer from its ``present.N.key/value`` outputs::

    present.N.key   = Concat(past_key_values.N.key, k_rot)          k_rot: [B, Hkv, S, Dh]
    present.N.value = Concat(past_key_values.N.value, Transpose(v))   v: [B, S, Hkv, Dh]
    scores = Add(Mul(MatMul(q_rot, Transpose(repeat_kv(present.N.key))), scale), mask)
    out    = Reshape(Transpose(MatMul(Softmax(scores), repeat_kv(present.N.value))))

and replaces it by one GroupQueryAttention node (``do_rotary=0``: the rotary embedding stays as
exported, fed by ``position_ids``, so it is right for left padding too). The padding mask goes in
as ``attention_bias`` (0 for real keys, a large finite negative for padded keys), and every row
gets ``seqlens_k = total_sequence_length - 1``: ORT's kernel then applies causality over the whole
padded row and the bias removes the padding, so left-padded rows score as if unpadded, and fully
masked rows (padding queries) get a uniform softmax instead of NaN.
"""

from __future__ import annotations

import re
from collections import defaultdict

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import RerankError
from ..onnx_graph import GraphIndex, attribute, insert_nodes, prune

_PRESENT = re.compile(r"^present\.(\d+)\.(key|value)$")
MASK_VALUE = -1.0e9  # finite: exp(x + MASK_VALUE - max) is 0, and a row of only MASK_VALUE stays finite


class FusionError(RerankError):
    """The graph does not have the attention pattern this pass knows."""


class _Pattern(GraphIndex):
    """The graph index, with the two steps of pattern matching that fail with a :class:`FusionError`
    naming what was found instead."""

    def only_consumer(self, name: str, op_type: str) -> onnx.NodeProto:
        users = self.consumers.get(name, [])
        if len(users) != 1 or users[0].op_type != op_type:
            found = ", ".join(u.op_type for u in users) or "nothing"
            raise FusionError(f"attention pattern not found: {name} feeds {found}, expected one {op_type}")
        return users[0]

    def parent(self, name: str, op_type: str) -> onnx.NodeProto:
        node = self.producer.get(name)
        if node is None or node.op_type != op_type:
            raise FusionError(
                f"attention pattern not found: {name} comes from {node.op_type if node else 'an input'}, "
                f"expected {op_type}"
            )
        return node


def _perm(node: onnx.NodeProto) -> list[int]:
    return list(attribute(node, "perm", []))


def fuse_group_query_attention(model: onnx.ModelProto, *, num_heads: int, kv_num_heads: int) -> int:
    """Rewrite ``model`` in place; returns the number of attention blocks fused (one per layer).

    Args:
        model: an exported Qwen3 graph with a KV cache (``present.N.key/value`` outputs) and an
            ``attention_mask`` input; changed in place.
        num_heads: query heads per layer.
        kv_num_heads: key/value heads per layer.

    Returns:
        How many attention blocks were replaced by ``GroupQueryAttention`` nodes.

    Raises:
        FusionError: the graph lacks the KV-cache outputs or the mask input, or a layer does not
            have the attention pattern this pass knows.
    """
    graph = model.graph
    g = _Pattern(graph)
    outputs = {o.name for o in graph.output}
    layers: dict[int, dict[str, str]] = defaultdict(dict)
    for name in outputs:
        match = _PRESENT.match(name)
        if match:
            layers[int(match.group(1))][match.group(2)] = name
    if not layers:
        raise FusionError("the graph has no present.N.key/value outputs: export it with the KV cache")
    if "attention_mask" not in {i.name for i in graph.input}:
        raise FusionError("the graph has no attention_mask input")

    new_nodes: list[onnx.NodeProto] = []
    shared = _shared_inputs(new_nodes)
    remove: set[int] = set()  # id() of nodes replaced
    replacements: dict[str, str] = {}  # old tensor name -> new tensor name

    for layer in sorted(layers):
        key_name, value_name = layers[layer].get("key"), layers[layer].get("value")
        if key_name is None or value_name is None:
            raise FusionError(f"layer {layer} lacks present.{layer}.key or present.{layer}.value")
        key_cat = g.parent(key_name, "Concat")
        value_cat = g.parent(value_name, "Concat")
        past_key, k_rot = key_cat.input
        past_value, v_bhsd = value_cat.input
        v_transpose = g.parent(v_bhsd, "Transpose")
        if _perm(v_transpose) != [0, 2, 1, 3]:
            raise FusionError(f"layer {layer}: unexpected value transpose {_perm(v_transpose)}")
        v_bshd = v_transpose.input[0]

        # key side: repeat_kv (Unsqueeze, Expand, Reshape), Transpose, MatMul with the query
        k_rep = _repeat_kv(g, key_name, layer)
        k_t = g.only_consumer(k_rep.output[0], "Transpose")
        qk = g.only_consumer(k_t.output[0], "MatMul")
        if qk.input[1] != k_t.output[0]:
            raise FusionError(f"layer {layer}: keys are not the second input of the score MatMul")
        q_rot = qk.input[0]
        scaled = g.only_consumer(qk.output[0], "Mul")
        scale = g.constant(scaled.input[1] if scaled.input[0] == qk.output[0] else scaled.input[0])
        if scale is None or scale.size != 1:
            raise FusionError(f"layer {layer}: the score scale is not a constant")
        masked = g.only_consumer(scaled.output[0], "Add")
        softmax = g.only_consumer(masked.output[0], "Softmax")
        probs = softmax.output[0]
        pv = g.only_consumer(probs, "MatMul")
        if pv.input[0] != probs:
            raise FusionError(f"layer {layer}: probabilities are not the first input of the value MatMul")
        v_rep = _repeat_kv(g, value_name, layer)
        if pv.input[1] != v_rep.output[0]:
            raise FusionError(f"layer {layer}: the value MatMul does not read present.{layer}.value")
        out_t = g.only_consumer(pv.output[0], "Transpose")
        out_reshape = g.only_consumer(out_t.output[0], "Reshape")

        p = f"/model/layers.{layer}/attn/gqa"
        q_bsd = _to_bsd(new_nodes, q_rot, p + "/q", from_bhsd=True)
        k_bsd = _to_bsd(new_nodes, k_rot, p + "/k", from_bhsd=True)
        v_bsd = _to_bsd(new_nodes, v_bshd, p + "/v", from_bhsd=False)
        gqa_out = p + "/output"
        new_nodes.append(
            helper.make_node(
                "GroupQueryAttention",
                [
                    q_bsd,
                    k_bsd,
                    v_bsd,
                    past_key,
                    past_value,
                    shared["seqlens_k"],
                    shared["total_len"],
                    "",
                    "",
                    "",
                    shared["bias"],
                ],
                [gqa_out, key_name, value_name],
                name=p,
                domain="com.microsoft",
                num_heads=num_heads,
                kv_num_heads=kv_num_heads,
                scale=float(scale.reshape(())),
                do_rotary=0,
            )
        )
        replacements[out_reshape.output[0]] = gqa_out
        for node in (key_cat, value_cat, k_t, qk, scaled, masked, softmax, pv, out_t, out_reshape):
            remove.add(id(node))

    kept = [n for n in graph.node if id(n) not in remove]
    for node in kept:
        for i, name in enumerate(node.input):
            if name in replacements:
                node.input[i] = replacements[name]
    for out in graph.output:
        if out.name in replacements:
            raise FusionError(f"attention output {out.name} is a graph output")
    # The new nodes are appended; the sort moves each up to where its consumers need it.
    del graph.node[:]
    insert_nodes(graph, kept + new_nodes)
    prune(graph)
    if not any(op.domain == "com.microsoft" for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return len(layers)


def _repeat_kv(g: _Pattern, name: str, layer: int) -> onnx.NodeProto:
    users = [u for u in g.consumers.get(name, [])]
    unsq = [u for u in users if u.op_type == "Unsqueeze"]
    if len(unsq) != 1:
        raise FusionError(f"layer {layer}: {name} is not expanded over the query heads (repeat_kv)")
    expand = g.only_consumer(unsq[0].output[0], "Expand")
    return g.only_consumer(expand.output[0], "Reshape")


def _const(nodes: list[onnx.NodeProto], name: str, value: npt.NDArray[np.generic]) -> str:
    nodes.append(helper.make_node("Constant", [], [name], name=name, value=numpy_helper.from_array(value, name)))
    return name


def _to_bsd(nodes: list[onnx.NodeProto], name: str, prefix: str, *, from_bhsd: bool) -> str:
    """[B, H, S, Dh] (or [B, S, H, Dh]) to [B, S, H*Dh]."""
    src = name
    if from_bhsd:
        src = prefix + "/bshd"
        nodes.append(helper.make_node("Transpose", [name], [src], name=prefix + "/Transpose", perm=[0, 2, 1, 3]))
    shape = _const(nodes, prefix + "/shape", np.array([0, 0, -1], dtype=np.int64))
    out = prefix + "/bsd"
    nodes.append(helper.make_node("Reshape", [src, shape], [out], name=prefix + "/Reshape"))
    return out


def _shared_inputs(nodes: list[onnx.NodeProto]) -> dict[str, str]:
    """seqlens_k, total_sequence_length (int32) and the additive padding bias [B, 1, S, T], from the mask."""
    p = "/model/attn_mask"
    mask_shape = p + "/shape"
    nodes.append(helper.make_node("Shape", ["attention_mask"], [mask_shape], name=mask_shape))
    ids_shape = p + "/ids_shape"
    nodes.append(helper.make_node("Shape", ["input_ids"], [ids_shape], name=ids_shape))
    batch = p + "/batch"
    nodes.append(
        helper.make_node(
            "Slice",
            [
                mask_shape,
                _const(nodes, p + "/c0", np.array([0], np.int64)),
                _const(nodes, p + "/c1", np.array([1], np.int64)),
            ],
            [batch],
            name=batch,
        )
    )
    total_1d = p + "/total_1d"
    nodes.append(
        helper.make_node(
            "Slice",
            [mask_shape, p + "/c1", _const(nodes, p + "/c2", np.array([2], np.int64))],
            [total_1d],
            name=total_1d,
        )
    )
    seq_1d = p + "/seq_1d"
    nodes.append(helper.make_node("Slice", [ids_shape, p + "/c1", p + "/c2"], [seq_1d], name=seq_1d))
    total_i32_1d = p + "/total_i32_1d"
    nodes.append(helper.make_node("Cast", [total_1d], [total_i32_1d], name=total_i32_1d, to=TensorProto.INT32))
    total_len = p + "/total_sequence_length"
    nodes.append(helper.make_node("Squeeze", [total_i32_1d, p + "/c0"], [total_len], name=total_len))
    last = p + "/last_index"
    nodes.append(
        helper.make_node(
            "Sub", [total_i32_1d, _const(nodes, p + "/one_i32", np.array([1], np.int32))], [last], name=last
        )
    )
    seqlens_k = p + "/seqlens_k"
    nodes.append(helper.make_node("Expand", [last, batch], [seqlens_k], name=seqlens_k))
    # bias[b, 0, s, t] = 0 where attention_mask[b, t] is 1, MASK_VALUE where it is 0
    is_pad = p + "/is_pad"
    nodes.append(
        helper.make_node(
            "Equal", ["attention_mask", _const(nodes, p + "/zero_mask", np.array(0, np.int64))], [is_pad], name=is_pad
        )
    )
    bias_2d = p + "/bias_2d"
    nodes.append(
        helper.make_node(
            "Where",
            [
                is_pad,
                _const(nodes, p + "/neg", np.array(MASK_VALUE, np.float32)),
                _const(nodes, p + "/zero_f", np.array(0.0, np.float32)),
            ],
            [bias_2d],
            name=bias_2d,
        )
    )
    bias_4d = p + "/bias_b11t"
    nodes.append(
        helper.make_node(
            "Unsqueeze", [bias_2d, _const(nodes, p + "/axes12", np.array([1, 2], np.int64))], [bias_4d], name=bias_4d
        )
    )
    target = p + "/bias_shape"
    nodes.append(helper.make_node("Concat", [batch, p + "/c1", seq_1d, total_1d], [target], name=target, axis=0))
    bias = p + "/attention_bias"
    nodes.append(helper.make_node("Expand", [bias_4d, target], [bias], name=bias))
    return {"seqlens_k": seqlens_k, "total_len": total_len, "bias": bias}
