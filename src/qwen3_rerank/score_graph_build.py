"""Building the score graph: the graph surgery, from a causal-LM ONNX graph to one that returns
the yes/no logits. Where a built graph is kept, and its record, is ``score_graph.py``.

A published Qwen3 graph computes logits over the whole vocabulary (151,669 entries) at every
position, and a reranker needs two numbers at one position. The score graph

* gathers each row's last real position (padding on either side) right before the final norm,
  so the final norm and ``lm_head`` run on one position per row instead of all of them;
* keeps only the ``lm_head`` rows of "yes" and "no" (plain, ``MatMulInteger`` int8 and
  ``MatMulNBits`` 4-bit weights are sliced in their own formats, so the numbers are exactly those
  the full graph computes), and drops the rest of that weight when nothing else uses it;
* has one new output, ``yes_no_logits`` ``[batch, 2]`` float32, instead of ``logits``;
* in a dynamic-int8 file (``DynamicQuantizeLinear`` → ``MatMulInteger``, what
  ``onnxruntime.quantization.quantize_dynamic`` and the published q8 files hold), quantises the
  activations per row (per token) instead of with one scale for the whole tensor: a token's
  numbers then depend on that token alone, so a document scores the same alone, in any batch,
  and with or without the shared-prefix pass (:data:`ACTIVATION_MODES`; the default ``auto``
  also keeps the integer products exact on every CPU, see :func:`resolve_activations`);
* in a 4-bit file (``MatMulNBits``, the published q4 files), runs the linears as int8
  ``MatMulInteger`` with per-column weight scales, then quantises their activations per row as
  above: ONNX Runtime's 4-bit kernel runs at about fp32 speed on CPU, its int8 one several times
  faster (:func:`_nbits_as_int8`; ``tensor`` mode keeps the file's 4-bit kernels);
* in a float16 file, runs the attention (the two products over the sequence and the softmax) in
  float32, for the same independence (:func:`_float32_attention`);
* where a quantised file still holds float rows of "yes" and "no" (the tied embedding table that
  the input ``Gather`` reads), can score with those rows instead of the quantised ``lm_head``
  (``head="auto"``, the default, does so for 4-bit heads when the rows are found and tied; see
  ``docs/benchmarks/q8-head/`` for why not for int8 ones).

A one-label sequence-classification graph (``logits`` ``[batch, seq, 1]``: a score head whose one
column is ``lm_head[yes] - lm_head[no]``) gets the same gather; its head is kept whole (there is
nothing to slice) and the output is ``relevance_logit`` ``[batch, 1]``, the yes − no gap itself.
The record next to the graph names the output (``"output"``), so a reader knows which kind it is.

``present.*`` outputs are kept when ``keep_present`` (the default): the shared-prefix pass reads
them, and the document pass does not fetch them; they are the attention's own key/value buffers,
so leaving them as outputs costs no compute.

The graph is edited with ``onnx`` without loading external weights: the new file sits next to
the source and refers to the same ``*.onnx_data`` file, so nothing large is copied.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

import numpy as np
import numpy.typing as npt

from .cpu_features import int8_products_exact
from .errors import ModelLoadError
from .onnx_graph import Array, GraphIndex, attribute, insert_nodes, prune, set_attribute, tensor_value

if TYPE_CHECKING:
    import onnx

log = logging.getLogger("qwen3_rerank")

FORMAT_VERSION = 6
#: How a dynamic-int8 graph's activations are quantised in the score graph (measured in
#: docs/benchmarks/q8-rows/):
#:
#: * ``row``: one scale per token, symmetric, as uint8 with zero point 128, with the file's int8
#:   weights: ONNX Runtime's fast u8×s8 kernel, about as fast as the file's own scheme. Exact on
#:   CPUs with VNNI and on ARM; on x86 CPUs without VNNI that kernel adds pairs of products in
#:   16 bits with saturation, which full-range per-token activations hit.
#: * ``row-u8``: the same activations with the weights shifted to uint8 (+128, zero point 128):
#:   ONNX Runtime's u8×u8 kernel, exact on every CPU, slower on x86 without VNNI.
#: * ``auto`` (the default): ``row`` where its products are exact, ``row-u8`` elsewhere, so q8
#:   scores are the same integer arithmetic on every machine (:func:`resolve_activations`).
#: * ``nbits8``: every int8 MatMul as an 8-bit ``com.microsoft.MatMulNBits`` with
#:   ``accuracy_level=4``, activations quantised per token and per block of 32: the closest to
#:   fp32, about half the speed on an AVX2 CPU.
#: * ``tensor``: as the source file does it: a q8 file's one scale per tensor, so rows depend on
#:   each other; a q4 file's own 4-bit ``MatMulNBits`` kernels.
#:
#: In every mode but ``tensor``, a 4-bit file's linears first become int8 ones
#: (:func:`_nbits_as_int8`) and then follow the mode like a q8 file's.
ACTIVATION_MODES = ("auto", "row", "row-u8", "nbits8", "tensor")
#: Which yes/no head a quantised graph scores with: ``float`` (the float rows of the tied embedding
#: table), ``quantized`` (the rows of the quantised ``lm_head``) or ``auto`` (the float rows for a
#: 4-bit ``MatMulNBits`` head when they are found, the file's own head for an int8 one: what
#: measured closer to fp32, docs/benchmarks/q8-head/).
HEAD_MODES = ("auto", "float", "quantized")
DEFAULT_ACTIVATIONS = "auto"
#: The options whose score graph gets the plain file name; other combinations are tagged.
_UNTAGGED = ("row", "auto")
DEFAULT_HEAD = "auto"
NBITS8_BLOCK = 32
OUTPUT = "yes_no_logits"
#: Output of the score graph of a one-label sequence classifier: its logit, the yes − no gap.
SEQ_CLS_OUTPUT = "relevance_logit"
SCORE_OUTPUTS = (OUTPUT, SEQ_CLS_OUTPUT)
_LM_OPS = ("MatMul", "Gemm", "MatMulNBits", "MatMulInteger")
_SINGLE_NODE_NORMS = {
    "SimplifiedLayerNormalization": (0,),
    "LayerNormalization": (0,),
    "RMSNormalization": (0,),
    "SkipSimplifiedLayerNormalization": (0, 1),
    "SkipLayerNormalization": (0, 1),
}


class ScoreGraphError(ModelLoadError):
    """The graph does not have a shape the score-graph builder understands."""


class ScoreGraphNoSpace(ScoreGraphError):
    """The disk filled up while the score graph was written (nothing of it is left behind)."""

    def __init__(self, folder: Path, needed: int) -> None:
        self.folder = Path(folder)
        self.needed = needed
        super().__init__(f"no space left in {self.folder} for the score graph (it needs about {_megabytes(needed)})")


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def _fsync(path: Path) -> None:
    """Flush a file (or a folder's entries) to disk; a no-op where the system refuses it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class _BuildInfo(TypedDict):
    """What :func:`_build` reports about the graph it built, merged into its record."""

    group_query_attention: bool
    output: str
    head: str
    requantized_matmuls: int
    nbits_as_int8: int
    float32_attention_ops: int
    quantized: bool


def resolve_activations(mode: str) -> str:
    """The concrete activation mode ``mode`` stands for on this machine (``auto`` → ``row`` or
    ``row-u8``, see :data:`ACTIVATION_MODES`; any other mode is returned as it is)."""
    if mode != "auto":
        return mode
    return "row" if int8_products_exact() else "row-u8"


def _check_modes(activations: str, head: str) -> None:
    if activations not in ACTIVATION_MODES:
        raise ValueError(f"activations must be one of {', '.join(ACTIVATION_MODES)}, not {activations!r}")
    if head not in HEAD_MODES:
        raise ValueError(f"head must be one of {', '.join(HEAD_MODES)}, not {head!r}")


def _is_quantized(source: Path) -> bool:
    """Whether a graph has quantised MatMuls (read without its external weights)."""
    import onnx

    try:
        graph = onnx.load(str(source), load_external_data=False).graph
    except Exception:
        return True  # let the build report what is wrong
    return any(node.op_type in _QUANTIZED_OPS for node in graph.node)


_QUANTIZED_OPS = (
    "DynamicQuantizeLinear",
    "MatMulInteger",
    "MatMulNBits",
    "DynamicQuantizeMatMul",
    "MatMulIntegerToFloat",
)


# -- graph surgery ------------------------------------------------------------------------------------


def _constant_of(
    g: GraphIndex, name: str, base_dir: Path, what: str, pending: Iterable[onnx.TensorProto] = ()
) -> Array:
    """The value of the constant tensor ``name`` (see :meth:`GraphIndex.constant`).

    Raises:
        ScoreGraphError: the graph does not fix the value of ``name`` (``what`` names it).
    """
    value = g.constant(name, base_dir, pending)
    if value is None:
        raise ScoreGraphError(f"{what} ({name!r}) is not a constant")
    return value


def _find_lm_head(g: GraphIndex, logits: str) -> onnx.NodeProto:
    for node in g.ancestors(logits, depth=6):
        if node.op_type in _LM_OPS and any(
            i in g.initializers or (g.producer.get(i) is not None and g.producer[i].op_type == "Transpose")
            for i in node.input[1:2]
        ):
            return node
    raise ScoreGraphError("cannot find the lm_head (a MatMul-type node near the 'logits' output)")


def _head_columns(g: GraphIndex, node: onnx.NodeProto) -> int | None:
    """How many outputs the head makes (vocabulary size, or 1 for a one-label score head).

    Read from the weight's declared dims, so no weight data is loaded; None when unknown.
    """

    def dims(name: str) -> list[int] | None:
        if name in g.initializers:
            return list(g.initializers[name].dims)
        parent = g.producer.get(name)
        if parent is not None and parent.op_type == "Transpose" and parent.input[0] in g.initializers:
            inner = list(g.initializers[parent.input[0]].dims)
            perm = attribute(parent, "perm") or list(reversed(range(len(inner))))
            return [inner[i] for i in perm]
        return None

    if node.op_type == "MatMulNBits":
        return int(attribute(node, "N"))
    shape = dims(node.input[1])
    if not shape or len(shape) != 2:
        return None
    if node.op_type == "Gemm" and attribute(node, "transB", 0):
        return shape[0]
    return shape[1]


def _head_activation(g: GraphIndex, node: onnx.NodeProto) -> str:
    """The float hidden state the head reads (through the int8 head's DynamicQuantizeLinear)."""
    if node.op_type != "MatMulInteger":
        return str(node.input[0])
    quantizer = g.producer.get(node.input[0])
    if quantizer is not None and quantizer.op_type == "DynamicQuantizeLinear":
        return str(quantizer.input[0])
    raise ScoreGraphError("int8 lm_head without a DynamicQuantizeLinear input")


def _slice_lm_head(
    g: GraphIndex, node: onnx.NodeProto, columns: list[int], base_dir: Path, new_inits: list[onnx.TensorProto]
) -> str:
    """Cut ``node``'s weight to ``columns`` of the vocabulary; returns the activation input name."""
    from onnx import numpy_helper

    def add(name: str, array: Array) -> str:
        new_inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    if node.op_type in ("MatMul", "Gemm"):
        weight = g.constant(node.input[1], base_dir)
        if weight is None:
            raise ScoreGraphError("lm_head weight is not a constant")
        if node.op_type == "Gemm" and attribute(node, "transB", 0):
            weight = weight.T
        if node.op_type == "Gemm":
            set_attribute(node, "transB", 0)
            if len(node.input) > 2 and node.input[2]:
                bias = _constant_of(g, node.input[2], base_dir, "lm_head bias")
                node.input[2] = add("score.lm_head.bias", bias[..., columns])
        node.input[1] = add("score.lm_head.weight", weight[:, columns])
        return str(node.input[0])

    if node.op_type == "MatMulInteger":
        weight = _constant_of(g, node.input[1], base_dir, "int8 lm_head weight")
        node.input[1] = add("score.lm_head.weight_q", weight[:, columns])
        if len(node.input) > 3 and node.input[3]:
            zero = g.constant(node.input[3], base_dir)
            if zero is not None and zero.ndim == 1 and zero.shape[0] == weight.shape[1]:
                node.input[3] = add("score.lm_head.weight_zero_point", zero[columns])
        # The weight scale is applied by a Mul downstream; a per-column scale must be cut too.
        _cut_per_column_scales(g, node, weight.shape[1], columns, base_dir, add)
        return _head_activation(g, node)

    if node.op_type == "MatMulNBits":
        n = int(attribute(node, "N"))
        packed = _constant_of(g, node.input[1], base_dir, "MatMulNBits lm_head weight")
        node.input[1] = add("score.lm_head.B", packed[columns])
        scales = _constant_of(g, node.input[2], base_dir, "MatMulNBits lm_head scales")
        node.input[2] = add(
            "score.lm_head.scales",
            scales.reshape(n, -1)[columns].reshape(-1 if scales.ndim == 1 else (len(columns), -1)),
        )
        if len(node.input) > 3 and node.input[3]:
            zero = _constant_of(g, node.input[3], base_dir, "MatMulNBits lm_head zero points")
            node.input[3] = add(
                "score.lm_head.zero_points",
                zero.reshape(n, -1)[columns].reshape(-1 if zero.ndim == 1 else (len(columns), -1)),
            )
        if len(node.input) > 4 and node.input[4]:
            raise ScoreGraphError("MatMulNBits lm_head with g_idx is not supported")
        if len(node.input) > 5 and node.input[5]:
            bias = _constant_of(g, node.input[5], base_dir, "MatMulNBits lm_head bias")
            node.input[5] = add("score.lm_head.bias", bias[columns])
        set_attribute(node, "N", len(columns))
        return str(node.input[0])

    raise ScoreGraphError(f"unsupported lm_head op {node.op_type}")


def _cut_per_column_scales(
    g: GraphIndex,
    node: onnx.NodeProto,
    vocab: int,
    columns: list[int],
    base_dir: Path,
    add: Callable[[str, Array], str],
) -> None:
    """Slice any [vocab]-shaped constant multiplied into the int8 lm_head's output."""
    frontier = list(node.output)
    for _ in range(3):
        nxt: list[str] = []
        for tensor in frontier:
            for consumer in g.consumers.get(tensor, []):
                if consumer.op_type in ("Mul", "Add"):
                    for k, name in enumerate(consumer.input):
                        value = g.constant(name, base_dir) if name != tensor else None
                        if value is not None and value.ndim >= 1 and value.shape[-1] == vocab:
                            consumer.input[k] = add(
                                f"score.lm_head.{consumer.op_type.lower()}_{k}", value[..., columns]
                            )
                nxt.extend(consumer.output)
        frontier = nxt


def _norm_inputs(g: GraphIndex, hidden: str) -> tuple[list[str], list[onnx.NodeProto]]:
    """Per-position tensors to gather so that the final norm runs on the last position only.

    Returns the tensor names and the nodes whose inputs are to be rewired to the gathered ones.
    Falls back to the lm_head input itself (norm over all positions) for unknown norm shapes.
    """
    node = g.producer.get(hidden)
    if node is not None and node.op_type in _SINGLE_NODE_NORMS:
        tensors = [node.input[i] for i in _SINGLE_NODE_NORMS[node.op_type] if i < len(node.input)]
        return tensors, [node]
    # Decomposed RMSNorm: Mul(weight, Mul(x, 1/sqrt(mean(x^2) + eps))): find x through the Pow.
    region = g.ancestors(hidden, depth=8)
    pows = [n for n in region if n.op_type == "Pow"]
    if pows:
        residual = pows[0].input[0]
        region_ids = {id(n) for n in region}
        users = [n for n in g.consumers[residual] if id(n) in region_ids]
        outside = [n for n in g.consumers[residual] if id(n) not in region_ids]
        if users and not outside:
            return [residual], users
    return [hidden], list(g.consumers[hidden])


def _build(
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    yes_id: int,
    no_id: int,
    *,
    keep_present: bool,
    activations: str,
    head: str,
    final_dir: str | os.PathLike[str] | None = None,
) -> _BuildInfo:
    """Build the score graph; returns what to record about it (attention kind, head, activations).

    ``target`` may be in a temporary folder; ``final_dir`` is the folder it will be moved to (by
    default ``target``'s own), which decides which of the source's weight files it may keep
    referring to.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    source_path, target_path = Path(source), Path(target)
    model = onnx.load(str(source_path), load_external_data=False)
    graph = model.graph
    g = GraphIndex(graph)
    outputs = [o.name for o in graph.output]
    if "logits" not in outputs:
        raise ScoreGraphError(f"{source_path.name} has no 'logits' output (outputs: {', '.join(outputs[:5])})")
    input_names = {i.name for i in graph.input}
    if not {"input_ids", "attention_mask"} <= input_names:
        raise ScoreGraphError(f"{source_path.name} lacks input_ids/attention_mask inputs")

    base_dir = source_path.parent
    new_inits: list[onnx.TensorProto] = []
    lm_head = _find_lm_head(g, "logits")
    columns = _head_columns(g, lm_head)
    if columns == 1:  # one-label sequence classifier: the head's one column is the gap already
        output, width = SEQ_CLS_OUTPUT, 1
        hidden = _head_activation(g, lm_head)
        head_used = "plain" if lm_head.op_type in ("MatMul", "Gemm") else "quantized"
    else:
        output, width = OUTPUT, 2
        hidden = _slice_lm_head(g, lm_head, [yes_id, no_id], base_dir, new_inits)
        head_used = "plain" if lm_head.op_type in ("MatMul", "Gemm") else "quantized"
        # "auto": the float rows for 4-bit heads, which they bring closer to fp32; an int8 head's
        # rows are already as close (measured: docs/benchmarks/q8-head/), so the file's head stays.
        wants_float = head == "float" or (head == "auto" and lm_head.op_type == "MatMulNBits")
        if head_used == "quantized" and wants_float:
            if _use_float_head(g, lm_head, hidden, [yes_id, no_id], base_dir, new_inits):
                head_used = "float"
            elif head == "float":
                raise ScoreGraphError(f"{source_path.name} has no float rows of the yes/no tokens tied to its lm_head")
    tensors, users = _norm_inputs(g, hidden)

    # Index of each row's last real position among the new tokens, for either padding side:
    # argmax over positions of mask * (1..S).
    consts = [
        numpy_helper.from_array(np.array([1], np.int64), "score.one"),
        numpy_helper.from_array(np.array(1, np.int64), "score.one_scalar"),
        numpy_helper.from_array(np.array([np.iinfo(np.int64).max], np.int64), "score.int_max"),
        numpy_helper.from_array(np.array([1], np.int64), "score.axis1"),
        numpy_helper.from_array(np.array([-1, width], np.int64), "score.out_shape"),
    ]
    nodes = [
        helper.make_node("Shape", ["input_ids"], ["score.seq_len"], start=1, end=2),
        helper.make_node("Neg", ["score.seq_len"], ["score.neg_seq_len"]),
        helper.make_node(
            "Slice", ["attention_mask", "score.neg_seq_len", "score.int_max", "score.axis1"], ["score.new_mask"]
        ),
        helper.make_node("Cast", ["score.new_mask"], ["score.new_mask_f"], to=TensorProto.FLOAT),
        helper.make_node("Squeeze", ["score.seq_len"], ["score.seq_len_scalar"]),
        helper.make_node("Add", ["score.seq_len_scalar", "score.one_scalar"], ["score.range_end"]),
        helper.make_node("Range", ["score.one_scalar", "score.range_end", "score.one_scalar"], ["score.positions"]),
        helper.make_node("Cast", ["score.positions"], ["score.positions_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["score.new_mask_f", "score.positions_f"], ["score.weighted"]),
        helper.make_node("ArgMax", ["score.weighted"], ["score.last_index"], axis=1, keepdims=1),
    ]
    for k, tensor in enumerate(tensors):
        gathered = f"score.last.{k}"
        nodes.append(helper.make_node("GatherND", [tensor, "score.last_index"], [gathered + ".2d"], batch_dims=1))
        nodes.append(helper.make_node("Unsqueeze", [gathered + ".2d", "score.axis1"], [gathered]))
        for user in users:
            for i, name in enumerate(user.input):
                if name == tensor:
                    user.input[i] = gathered

    # logits [batch, 1, 2] -> yes_no_logits [batch, 2] float32 (or [batch, 1, 1] -> relevance_logit [batch, 1])
    logits_type = next(o for o in graph.output if o.name == "logits").type.tensor_type.elem_type
    last = "logits"
    if logits_type != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", [last], ["score.logits_f32"], to=TensorProto.FLOAT))
        last = "score.logits_f32"
    nodes.append(helper.make_node("Reshape", [last, "score.out_shape"], [output]))

    # Insert the index nodes first, then the rest in order; ONNX needs a topological order, so
    # place every new node right before the first node that consumes its output.
    graph.initializer.extend(consts + new_inits)
    insert_nodes(graph, nodes)

    quantized = any(node.op_type in _QUANTIZED_OPS for node in graph.node)
    requantized = nbits_as_int8 = 0
    if activations != "tensor":
        nbits_as_int8 = _nbits_as_int8(model, base_dir)
        requantized = _requantize_activations(model, activations, base_dir)

    float32_attention = 0
    if logits_type == TensorProto.FLOAT16:
        float32_attention = _float32_attention(graph)

    kept = [o for o in graph.output if keep_present and o.name.startswith("present")]
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch_size", width]))
    graph.output.extend(kept)
    prune(graph)
    del graph.value_info[:]  # shapes changed; let the runtime infer them again

    _inline_escaping_external_data(graph, base_dir, Path(final_dir) if final_dir else target_path.parent)
    # Weights that were inline in the source go to an external file of the score graph's own:
    # ONNX Runtime then does not hold the protobuf bytes and the tensors at once (a q8 file's
    # resident size drops by about the size of its weights). Weights already external stay in
    # the source's data file.
    _save_model(model, target_path)
    return {
        "group_query_attention": any(node.op_type == "GroupQueryAttention" for node in graph.node),
        "output": output,
        "head": head_used,
        "requantized_matmuls": requantized,
        "nbits_as_int8": nbits_as_int8,
        "float32_attention_ops": float32_attention,
        "quantized": quantized,
    }


def _save_model(model: onnx.ModelProto, target: Path) -> None:
    """Write ``model`` to ``target``, its weights to ``<target>_data`` (a fresh folder's files:
    the caller moves them into place).

    Raises:
        ScoreGraphNoSpace: the disk filled up (with the size the graph needed).
    """
    data = target.with_name(target.name + "_data")
    data.unlink(missing_ok=True)  # onnx appends to an existing data file
    needed = model.ByteSize()
    try:
        _write_model(model, target, data.name)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise ScoreGraphNoSpace(target.parent, needed) from None
        raise
    for path in (target, data):
        if path.is_file():
            _fsync(path)


def _write_model(model: onnx.ModelProto, target: Path, data_name: str) -> None:
    """``onnx.save_model`` with the weights over 4 KB in ``data_name`` next to ``target``."""
    import onnx

    onnx.save_model(
        model,
        str(target),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=data_name,
        size_threshold=4096,
    )


def _float32_attention(graph: onnx.GraphProto) -> int:
    """Run the attention of a float16 graph (the ``MatMul`` of two activations and the
    ``Softmax``) in float32; returns how many nodes now do.

    Why: these are the only products whose inner dimension is the sequence length, so padding
    a row (or reading a prefix's KV cache instead of computing it in the same pass) changes how
    ONNX Runtime's float16 kernels split and round their sums: a document's gap moved by up to
    1.2e-3 with its batch. In float32 those differences fall below 1e-6. The weights stay
    float16; only these activations are widened.
    """
    from onnx import TensorProto, helper

    constant = {t.name for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" or (node.input and all(not i or i in constant for i in node.input)):
            constant.update(node.output)
    types = _element_types(graph)
    nodes: list[onnx.NodeProto] = []
    count = 0
    for k, node in enumerate(graph.node):
        dynamic = [i for i in node.input if i and i not in constant]
        wanted = (node.op_type == "MatMul" and len(dynamic) == 2) or (node.op_type == "Softmax" and len(dynamic) == 1)
        # only float16 nodes: a float32 island of a float16 file (rotary angles, an upcast softmax)
        # stays as it is, and a node whose input type cannot be told is left alone
        if not wanted or any(types.get(i) != TensorProto.FLOAT16 for i in node.input if i):
            nodes.append(node)
            continue
        p = f"score.attn32.{k}"
        for j, name in enumerate(list(node.input)):
            nodes.append(helper.make_node("Cast", [name], [f"{p}.in{j}"], to=TensorProto.FLOAT))
            node.input[j] = f"{p}.in{j}"
        out = node.output[0]
        node.output[0] = f"{p}.out"
        nodes.append(node)
        nodes.append(helper.make_node("Cast", [f"{p}.out"], [out], to=TensorProto.FLOAT16))
        count += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return count


#: Ops whose outputs have one fixed element type, whatever their inputs.
_INT64_OUTPUT_OPS = {"Shape", "Size", "ArgMax", "ArgMin", "NonZero"}
_BOOL_OUTPUT_OPS = {"Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Not", "And", "Or", "Xor", "IsNaN"}


def _element_types(graph: onnx.GraphProto) -> dict[str, int]:
    """Element type of each tensor of ``graph`` that a simple forward pass can tell.

    ONNX's own shape inference stops at the contrib ops these graphs hold (ONNX Runtime's fused
    norms), so this reads the types the way the graph states them: inputs, initializers,
    ``Constant`` and ``Cast``, the ops with a fixed output type, ``Where`` (its value inputs), and
    otherwise the type of the first input whose type is known.
    """
    from onnx import TensorProto

    types: dict[str, int] = {t.name: t.data_type for t in graph.initializer}
    for value in graph.input:
        if value.type.HasField("tensor_type"):
            types[value.name] = value.type.tensor_type.elem_type
    for node in graph.node:
        out_type: int | None
        if node.op_type == "Cast":
            out_type = int(attribute(node, "to", 0)) or None
        elif node.op_type == "Constant":
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            out_type = value.data_type if value is not None else None
        elif node.op_type in _INT64_OUTPUT_OPS:
            out_type = TensorProto.INT64
        elif node.op_type in _BOOL_OUTPUT_OPS:
            out_type = TensorProto.BOOL
        elif node.op_type == "Where":
            out_type = types.get(node.input[1]) or types.get(node.input[2])
        else:
            out_type = next((types[i] for i in node.input if i in types), None)
        if out_type:
            for out in node.output[:1] if node.op_type.endswith("LayerNormalization") else node.output:
                if out:
                    types[out] = out_type
        if node.op_type.endswith("LayerNormalization") and len(node.output) > 3 and node.output[3] and out_type:
            types[node.output[3]] = out_type  # the skip-sum output has the input's type too
    return types


def _inline_escaping_external_data(graph: onnx.GraphProto, base_dir: Path, target_dir: Path) -> None:
    """Load the weights whose data file resolves outside ``target_dir`` (a symbolic link into the
    Hugging Face cache's ``blobs/``): ONNX Runtime refuses such paths for a graph file that is not
    itself a link, so the score graph keeps its own copy of them."""
    from onnx import TensorProto

    allowed = os.path.realpath(target_dir)
    for tensor in graph.initializer:
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        location = next(e.value for e in tensor.external_data if e.key == "location")
        if os.path.dirname(os.path.realpath(base_dir / location)) == allowed:
            continue
        value = tensor_value(tensor, base_dir)
        del tensor.external_data[:]
        tensor.data_location = TensorProto.DEFAULT
        tensor.raw_data = np.ascontiguousarray(value).tobytes()


# -- the yes/no head of quantised graphs ---------------------------------------------------------------


def _rows_of(tensor: onnx.TensorProto, rows: list[int], base_dir: Path) -> Array:
    """Rows of a 2-D initializer, reading only those rows when its data is external (a 0.6B
    embedding table is 620 MB; two rows are 8 KB)."""
    from onnx import TensorProto, helper

    if len(tensor.dims) != 2:
        return tensor_value(tensor, base_dir)[rows]
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type))
    if tensor.data_location != TensorProto.EXTERNAL:
        if not tensor.raw_data:
            return tensor_value(tensor, base_dir)[rows]
        table: Array = np.frombuffer(tensor.raw_data, dtype).reshape(tuple(tensor.dims))  # a view, no copy
        selected: Array = table[rows].copy()  # numpy's stubs type ndarray[Any].copy() as Any
        return selected
    info = {entry.key: entry.value for entry in tensor.external_data}
    location = Path(info["location"])
    if location.is_absolute() or ".." in location.parts:
        raise ScoreGraphError(f"external data location {info['location']!r} is outside the model folder")
    width = int(tensor.dims[1])
    row_bytes = width * dtype.itemsize
    out = np.empty((len(rows), width), dtype)
    with open(base_dir / location, "rb") as handle:
        for k, row in enumerate(rows):
            handle.seek(int(info.get("offset", 0)) + row * row_bytes)
            raw = handle.read(row_bytes)
            if len(raw) != row_bytes:
                raise ScoreGraphError(f"external data of {tensor.name} is truncated in {location}")
            out[k] = np.frombuffer(raw, dtype)
    return out


def _embedding_rows(g: GraphIndex, columns: list[int], base_dir: Path) -> npt.NDArray[np.float32] | None:
    """``[len(columns), hidden]`` float32 rows of the float table the input ``Gather`` reads."""
    from onnx import TensorProto

    for node in g.graph.node:
        if node.op_type != "Gather" or len(node.input) < 2 or node.input[1] != "input_ids":
            continue
        table = g.initializers.get(node.input[0])
        if table is None or table.data_type not in (TensorProto.FLOAT, TensorProto.FLOAT16) or len(table.dims) != 2:
            continue
        if max(columns) >= table.dims[0]:
            continue
        return _rows_of(table, columns, base_dir).astype(np.float32)
    return None


def _int8_scale_chain(g: GraphIndex, node: onnx.NodeProto) -> tuple[onnx.NodeProto, str, str] | None:
    """For ``MatMulInteger`` → ``Cast`` → ``Mul(·, Mul(activation_scale, weight_scale))`` (what
    ``quantize_dynamic`` writes): the final ``Mul`` node, the activation-scale name and the weight
    scale's name; ``None`` for any other shape."""
    casts = g.consumers.get(node.output[0], [])
    if len(casts) != 1 or casts[0].op_type != "Cast":
        return None
    muls = g.consumers.get(casts[0].output[0], [])
    if len(muls) != 1 or muls[0].op_type != "Mul":
        return None
    final = muls[0]
    other = final.input[1] if final.input[0] == casts[0].output[0] else final.input[0]
    scale_mul = g.producer.get(other)
    quantizer = g.producer.get(node.input[0])
    if scale_mul is None or scale_mul.op_type != "Mul" or quantizer is None:
        return None
    activation_scale = quantizer.output[1]
    if activation_scale not in scale_mul.input:
        return None
    weight_scale = scale_mul.input[1] if scale_mul.input[0] == activation_scale else scale_mul.input[0]
    return final, activation_scale, weight_scale


def _dequantized_head(
    g: GraphIndex, node: onnx.NodeProto, columns: list[int], base_dir: Path, new_inits: list[onnx.TensorProto]
) -> tuple[Array, Array] | None:
    """The sliced quantised ``lm_head`` as float ``[hidden, 2]`` and the size of one quantisation
    step per element (to tell whether float rows are the same weights), or ``None``."""
    if node.op_type == "MatMulInteger":
        chain = _int8_scale_chain(g, node)
        weight = g.constant(node.input[1], base_dir, new_inits)
        if chain is None or weight is None:
            return None
        zero = g.constant(node.input[3], base_dir, new_inits) if len(node.input) > 3 else None
        scale = g.constant(chain[2], base_dir, new_inits)
        if scale is None:
            return None
        scale = np.asarray(scale, np.float64)
        if scale.ndim >= 1 and scale.shape[-1] not in (1, len(columns)):
            scale = scale[..., columns]
        zero = np.zeros(1) if zero is None else np.asarray(zero, np.float64)
        values = (weight.astype(np.float64) - zero) * scale
        return values, np.broadcast_to(scale, values.shape)
    if node.op_type == "MatMulNBits":
        return _dequantized_nbits(g, node, base_dir, new_inits)
    return None


def _dequantized_nbits(
    g: GraphIndex, node: onnx.NodeProto, base_dir: Path, pending: Iterable[onnx.TensorProto] = ()
) -> tuple[Array, Array] | None:
    """A ``com.microsoft.MatMulNBits`` node's weight as float64 ``[K, N]`` and the size of one
    quantisation step per element, or ``None`` when it is not a plain 4- or 8-bit weight with
    uint8 zero points (no ``g_idx``, no bias) fixed in the graph.

    The layout is the operator's: ``B`` ``[N, blocks, block * bits / 8]`` with the low nibble
    first, one scale per column and block, zero points packed the same way (``2 ** (bits - 1)``
    when absent).
    """
    bits, block, k = int(attribute(node, "bits", 4)), int(attribute(node, "block_size")), int(attribute(node, "K"))
    if bits not in (4, 8) or (len(node.input) > 4 and any(node.input[4:])):
        return None
    packed = g.constant(node.input[1], base_dir, pending)
    scales = g.constant(node.input[2], base_dir, pending)
    if packed is None or scales is None or packed.ndim != 3:
        return None
    n, blocks = packed.shape[0], packed.shape[1]
    if bits == 4:
        codes = np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(n, blocks, block)
    else:
        codes = packed.reshape(n, blocks, block)
    scale = scales.astype(np.float64).reshape(n, blocks, 1)
    zero_name = node.input[3] if len(node.input) > 3 else ""
    if zero_name:
        zero = g.constant(zero_name, base_dir, pending)
        if zero is None or zero.dtype != np.uint8:
            return None
        if bits == 4:
            zero = np.stack([zero & 0x0F, zero >> 4], axis=-1).reshape(n, -1)[:, :blocks]
        zero = zero.reshape(n, blocks, 1).astype(np.float64)
    else:
        zero = np.full((n, blocks, 1), 2.0 ** (bits - 1))
    values = ((codes - zero) * scale).reshape(n, -1)[:, :k].T
    return values, np.broadcast_to(scale, (n, blocks, block)).reshape(n, -1)[:, :k].T


def _use_float_head(
    g: GraphIndex,
    node: onnx.NodeProto,
    hidden: str,
    columns: list[int],
    base_dir: Path,
    new_inits: list[onnx.TensorProto],
) -> bool:
    """Replace the sliced quantised ``lm_head`` by a float ``MatMul`` with the embedding table's
    rows of the same tokens, when the graph has them and they are the weights ``lm_head`` was
    quantised from (tied embeddings: every element within one quantisation step). Why: the two
    rows then carry no weight quantisation error, and the last hidden state is not quantised at
    all; the cost is a [hidden, 2] float MatMul on one position per row."""
    from onnx import numpy_helper

    rows = _embedding_rows(g, columns, base_dir)
    quantized = _dequantized_head(g, node, columns, base_dir, new_inits)
    if rows is None or quantized is None:
        return False
    values, step = quantized
    weight = rows.T.astype(np.float64)
    if weight.shape != values.shape or not np.all(np.abs(weight - values) <= 1.01 * np.abs(step) + 1e-12):
        return False  # untied (or not the same table): those rows are not lm_head's
    if node.op_type == "MatMulInteger":
        chain = _int8_scale_chain(g, node)
        if chain is None:  # not reached: _dequantized_head found the same chain
            return False
        target = chain[0]
    else:
        if len(node.input) > 5 and node.input[5]:
            return False
        target = node
    new_inits.append(numpy_helper.from_array(np.ascontiguousarray(rows.T), "score.lm_head.float_weight"))
    target.op_type, target.domain = "MatMul", ""
    del target.attribute[:]
    del target.input[:]
    target.input.extend([hidden, "score.lm_head.float_weight"])
    g.consumers[hidden].append(target)
    return True


def _shift_weights_to_uint8(
    g: GraphIndex, matmul: onnx.NodeProto, prefix: str, base_dir: Path, const: Callable[[str, npt.ArrayLike], str]
) -> None:
    """Give a ``MatMulInteger`` the same weights as uint8 (value + 128, zero point + 128).

    Why: the products are unchanged, but ONNX Runtime then takes its u8×u8 kernel, which sums in
    32 bits on every x86 CPU. Its u8×s8 kernel on AVX2 CPUs without VNNI adds pairs of products
    in 16 bits with saturation (``VPMADDUBSW``), which per-token activations, using the whole
    8-bit range on every row, hit often enough to move the gap (docs/benchmarks/q8-rows/).
    """
    weight = g.constant(matmul.input[1], base_dir)
    if weight is None or weight.dtype != np.int8:
        if weight is None or weight.dtype != np.uint8:  # uint8 weights already take the u8×u8 kernel
            log.warning(
                "qwen3-rerank: %s's weights are not a constant int8 tensor; its products stay u8×s8",
                matmul.name or matmul.output[0],
            )
        return
    wzero = g.constant(matmul.input[3], base_dir) if len(matmul.input) > 3 and matmul.input[3] else None
    weight_u8, zero_u8 = _int8_as_uint8(weight, wzero)
    matmul.input[1] = const(f"{prefix}.weight_u8", weight_u8)
    while len(matmul.input) < 4:
        matmul.input.append("")
    matmul.input[3] = const(f"{prefix}.weight_zero_u8", zero_u8)


def _int8_as_uint8(weight: Array, zero: Array | None) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """The same int8 weights as uint8 codes and zero point(s): value + 128, zero point + 128 (0 when
    there is none), so that (code - zero) is unchanged and the products are exactly the same."""
    codes = (weight.astype(np.int16) + 128).astype(np.uint8)
    shifted_zero = ((np.zeros((), np.int16) if zero is None else zero.astype(np.int16)) + 128).astype(np.uint8)
    return codes, shifted_zero


# -- per-row activation quantisation of dynamic-int8 graphs ------------------------------------------


def _splice(
    graph: onnx.GraphProto, replace: dict[str, list[onnx.NodeProto]], new_inits: list[onnx.TensorProto]
) -> None:
    """Put each node whose first output is a key of ``replace`` back as the nodes it maps to, in
    the node's place (so the order stays topological), and add ``new_inits``."""
    nodes = []
    for node in graph.node:
        nodes.extend(replace.get(node.output[0], [node]) if node.output else [node])
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(new_inits)


#: How a per-row scale turns a row into uint8 codes (zero point 128): ``quantize_linear`` is one
#: per-axis ``QuantizeLinear`` over the rows flattened to 2-D (one pass over the activations);
#: ``elementwise`` the same arithmetic as Div → Round → Clip → Add → Cast (five passes; what a
#: graph below opset 13, without per-axis ``QuantizeLinear``, gets).
ROW_QUANTIZER = "quantize_linear"


def _per_row_elementwise(
    x: str, scale: str, quantized: str, p: str, const: Callable[[str, npt.ArrayLike], str]
) -> list[onnx.NodeProto]:
    """``uint8(clip(round(x / scale), -127, 127) + 128)``, one elementwise node per step."""
    from onnx import TensorProto, helper

    return [
        helper.make_node("Div", [x, scale], [p + ".div"]),
        helper.make_node("Round", [p + ".div"], [p + ".round"]),
        helper.make_node(
            "Clip",
            [p + ".round", const("score.rowq.lo", np.float32(-127)), const("score.rowq.hi", np.float32(127))],
            [p + ".clip"],
        ),
        helper.make_node("Add", [p + ".clip", const("score.rowq.128", np.float32(128))], [p + ".shift"]),
        helper.make_node("Cast", [p + ".shift"], [quantized], to=TensorProto.UINT8),
    ]


def _per_row_quantize_linear(
    x: str, scale: str, quantized: str, p: str, const: Callable[[str, npt.ArrayLike], str]
) -> list[onnx.NodeProto]:
    """The same codes with one per-axis ``QuantizeLinear`` (round half to even, saturating to
    [0, 255], which ``|x / scale| <= 127`` never reaches): the rows flattened to ``[rows, hidden]``
    with one scale and zero point 128 per row, then reshaped back."""
    from onnx import helper

    flat = const("score.rowq.flat", np.array([-1], np.int64))
    return [
        helper.make_node("Shape", [x], [p + ".shape"]),
        helper.make_node("Flatten", [x], [p + ".x2d"], axis=-1),
        helper.make_node("Reshape", [scale, flat], [p + ".s1d"]),
        helper.make_node("Shape", [p + ".s1d"], [p + ".rows"]),
        helper.make_node("Expand", [const("score.rowq.zero128", np.array([128], np.uint8)), p + ".rows"], [p + ".z1d"]),
        helper.make_node("QuantizeLinear", [p + ".x2d", p + ".s1d", p + ".z1d"], [p + ".q2d"], axis=0),
        helper.make_node("Reshape", [p + ".q2d", p + ".shape"], [quantized]),
    ]


def _requantize_activations(model: onnx.ModelProto, mode: str, base_dir: Path) -> int:
    """Make every ``DynamicQuantizeLinear`` → ``MatMulInteger`` group quantise its activations per
    row; returns how many MatMuls now do.

    Why: ``DynamicQuantizeLinear`` takes one scale for the whole ``[batch, sequence, hidden]``
    tensor, so a token's result depends on every other token in the run: on the batch's other
    documents, on padding, and on whether the shared prefix ran in a separate pass. With one scale
    per row (token) a token's numbers depend on that token alone. The weights are not touched
    (``row``) or converted exactly (``row-u8`` and ``nbits8``: uint8 = int8 + 128, zero point 128,
    the same scales).
    """
    from onnx import helper, numpy_helper

    mode = resolve_activations(mode)
    graph = model.graph
    g = GraphIndex(graph)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    new_inits: list[onnx.TensorProto] = []
    replace: dict[str, list[onnx.NodeProto]] = {}  # first output of a node -> the nodes that replace it
    count = 0

    def const(name: str, array: npt.ArrayLike) -> str:
        if name not in g.initializers and all(t.name != name for t in new_inits):
            new_inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    for k, node in enumerate(list(graph.node)):
        if node.op_type != "DynamicQuantizeLinear":
            continue
        quantized, scale, zero = node.output
        users = g.consumers.get(quantized, [])
        if not users or any(
            u.op_type != "MatMulInteger" or u.input[0] != quantized or len(u.input) < 3 or u.input[2] != zero
            for u in users
        ):
            continue  # not the quantize_dynamic pattern (the zero point must be the one we replace)
        x = node.input[0]
        if mode in ("row", "row-u8"):
            p = f"score.rowq.{k}"
            axes = const("score.rowq.axes", np.array([-1], np.int64))
            if opset >= 18:
                reduce = helper.make_node("ReduceMax", [p + ".abs", axes], [p + ".max"], keepdims=1)
            else:
                reduce = helper.make_node("ReduceMax", [p + ".abs"], [p + ".max"], keepdims=1, axes=[-1])
            replace[node.output[0]] = [
                helper.make_node("Abs", [x], [p + ".abs"]),
                reduce,
                helper.make_node("Div", [p + ".max", const("score.rowq.127", np.float32(127))], [p + ".s"]),
                helper.make_node("Max", [p + ".s", const("score.rowq.tiny", np.float32(1e-30))], [scale]),
                *(
                    _per_row_quantize_linear
                    if ROW_QUANTIZER == "quantize_linear" and opset >= 13
                    else _per_row_elementwise
                )(x, scale, quantized, p, const),
            ]
            const(zero, np.uint8(128))
            if mode == "row-u8":
                for j, user in enumerate(users):
                    _shift_weights_to_uint8(g, user, f"{p}.{j}", base_dir, const)
            count += len(users)
            continue
        # nbits8: each MatMulInteger chain becomes one MatMulNBits, placed where its final Mul was.
        plans: list[tuple[onnx.NodeProto, onnx.NodeProto, Array, Array, Array | None]] = []
        for user in users:
            chain = _int8_scale_chain(g, user)
            weight = g.constant(user.input[1], base_dir)
            wscale = g.constant(chain[2], base_dir) if chain else None
            if chain is None or weight is None or wscale is None or weight.ndim != 2 or weight.dtype != np.int8:
                plans = []
                break
            wzero = g.constant(user.input[3], base_dir) if len(user.input) > 3 and user.input[3] else None
            plans.append((user, chain[0], weight, wscale, wzero))
        for j, (_user, final, weight, wscale, wzero) in enumerate(plans):
            kdim, n = weight.shape
            blocks = -(-kdim // NBITS8_BLOCK)
            weight_u8, zero_u8 = _int8_as_uint8(weight, wzero)
            zero_col = np.broadcast_to(zero_u8, (n,))
            codes = np.empty((n, blocks * NBITS8_BLOCK), np.uint8)
            codes[:] = zero_col[:, None]  # padding past K dequantises to 0
            codes[:, :kdim] = weight_u8.T
            scales = np.broadcast_to(np.asarray(wscale, np.float32), (n,))
            p = f"score.q8n.{k}.{j}"
            replace[final.output[0]] = [
                helper.make_node(
                    "MatMulNBits",
                    [
                        x,
                        const(p + ".B", codes.reshape(n, blocks, NBITS8_BLOCK)),
                        const(p + ".scales", np.repeat(scales, blocks).astype(np.float32)),
                        const(p + ".zero_points", np.repeat(zero_col, blocks)),
                    ],
                    [final.output[0]],
                    domain="com.microsoft",
                    K=kdim,
                    N=n,
                    bits=8,
                    block_size=NBITS8_BLOCK,
                    accuracy_level=4,
                )
            ]
            count += 1

    _splice(graph, replace, new_inits)
    if mode == "nbits8" and not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return count


# -- 4-bit linears as int8 ------------------------------------------------------------------------------


def _nbits_as_int8(model: onnx.ModelProto, base_dir: Path) -> int:
    """Turn every 4-bit ``MatMulNBits`` into the dynamic-int8 pattern that ``quantize_dynamic``
    writes (``DynamicQuantizeLinear`` → ``MatMulInteger`` → ``Cast`` → ``Mul`` by the activation
    scale times a per-column weight scale); returns how many linears now do.

    Why: ONNX Runtime's ``MatMulNBits`` runs at or barely above fp32 speed on CPU at the document
    pass's shapes (``accuracy_level`` 4 included), while its ``MatMulInteger`` runs 4-8x faster
    (``python -m qwen3_rerank.bench.gemm``). The 4-bit weights are dequantised and requantised to
    int8 with one symmetric scale per output column: a column's int8 step is at most its largest
    4-bit block's step x 15/254, so the added weight error is a small fraction of the 4-bit error
    the file already has. The activations then go through :func:`_requantize_activations` like a
    q8 file's (one scale per token in every mode but ``tensor``), so rows stay independent.

    Nodes that share an input share one ``DynamicQuantizeLinear`` (q, k and v; gate and up).
    """
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    g = GraphIndex(graph)
    types = _element_types(graph)  # read from the graph, without loading any weights
    new_inits: list[onnx.TensorProto] = []
    replace: dict[str, list[onnx.NodeProto]] = {}
    quantizers: dict[str, tuple[str, str, str]] = {}  # activation -> its quantised tensor, scale, zero
    count = 0
    for k, node in enumerate(list(graph.node)):
        if node.op_type != "MatMulNBits" or node.domain != "com.microsoft" or int(attribute(node, "bits", 4)) != 4:
            continue
        if types.get(node.input[2]) != TensorProto.FLOAT:
            continue  # a float16 graph's linears stay as they are
        dequantized = _dequantized_nbits(g, node, base_dir)
        if dequantized is None:
            continue
        weight = dequantized[0]
        column_max = np.abs(weight).max(axis=0)
        scale = np.where(column_max > 0, column_max / 127.0, 1.0)
        codes = np.clip(np.rint(weight / scale), -127, 127).astype(np.int8)
        p = f"score.q4i8.{k}"
        new_inits.append(numpy_helper.from_array(codes, p + ".weight"))
        new_inits.append(numpy_helper.from_array(scale.astype(np.float32), p + ".weight_scale"))
        x = node.input[0]
        nodes: list[onnx.NodeProto] = []
        if x not in quantizers:
            q = f"score.q4i8.x{len(quantizers)}"
            quantizers[x] = (q + ".quantized", q + ".scale", q + ".zero")
            nodes.append(helper.make_node("DynamicQuantizeLinear", [x], list(quantizers[x])))
        quantized, x_scale, x_zero = quantizers[x]
        nodes += [
            helper.make_node("MatMulInteger", [quantized, p + ".weight", x_zero], [p + ".int32"]),
            helper.make_node("Cast", [p + ".int32"], [p + ".float"], to=TensorProto.FLOAT),
            helper.make_node("Mul", [x_scale, p + ".weight_scale"], [p + ".scale"]),
            helper.make_node("Mul", [p + ".float", p + ".scale"], [node.output[0]]),
        ]
        replace[node.output[0]] = nodes
        count += 1
    if count:
        _splice(graph, replace, new_inits)
    return count
