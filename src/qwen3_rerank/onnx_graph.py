"""Helpers for editing ONNX graphs as plain ``onnx`` protos, shared by the score graph and the exporter.

Both :mod:`qwen3_rerank.score_graph` (the reranking-specialised copy of a graph) and
:mod:`qwen3_rerank.export` (attention fusion, the transposed-weight fold) rewrite graphs node by
node. They need the same few things, kept here so that there is one algorithm of each:

* :class:`GraphIndex`: who produces and who consumes each tensor, the initializers, the value of a
  constant tensor (an initializer, a ``Constant`` node, or a ``Transpose`` of an initializer: how
  tied embeddings reach ``lm_head``), and the nodes upstream of a tensor.
* :func:`toposort` and :func:`insert_nodes`: ONNX requires nodes in topological order, and the
  rewrites append new nodes at the end; the sort keeps the given order wherever the dependencies
  allow, so a rewritten graph reads (and diffs) like its source.
* :func:`prune`: after a rewrite, drop what no graph output needs, unused weights included.
* :func:`fold_transposed_initializers`: ``Transpose(W)`` of an initializer becomes a transposed
  initializer, because quantizers only quantize MatMuls whose weight is an initializer.
* :func:`tensor_value`: an initializer's value, reading external data ourselves, and
  :func:`save_with_external_data`.

Nodes inside subgraphs (``If``, ``Loop``, ``Scan``) are not looked into, so a subgraph's reads of
outer tensors are not seen: the exported Qwen3 graphs have no such nodes (checked on this
project's fp32, fp16, q8 and q4 exports).

``onnx`` is imported inside the functions, not with the module: :mod:`qwen3_rerank.engine` imports
:mod:`qwen3_rerank.score_graph`, which imports this module, and ``import qwen3_rerank`` should not
pay for ``onnx`` (0.2-0.4 s) when no graph is edited.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from .errors import RerankError

if TYPE_CHECKING:
    import onnx

__all__ = [
    "GraphError",
    "GraphIndex",
    "attribute",
    "fold_transposed_initializers",
    "insert_nodes",
    "prune",
    "save_with_external_data",
    "set_attribute",
    "tensor_value",
    "toposort",
]

Array = npt.NDArray[Any]


class GraphError(RerankError):
    """A graph cannot be edited as asked: a cycle, or external data outside the model folder."""


# -- attributes and tensor values -------------------------------------------------------------------


def attribute(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    """The value of ``node``'s attribute ``name`` (an int, float, list, tensor, ...), or ``default``
    when the node does not have it."""
    from onnx import helper

    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return default


def set_attribute(node: onnx.NodeProto, name: str, value: Any) -> None:
    """Set ``node``'s attribute ``name`` to ``value``, replacing an existing one of that name
    (protobuf has no keyed update: a second attribute of the same name would make the node invalid)."""
    from onnx import helper

    for i, attr in enumerate(node.attribute):
        if attr.name == name:
            del node.attribute[i]
            break
    node.attribute.append(helper.make_attribute(name, value))


def tensor_value(tensor: onnx.TensorProto, base_dir: Path | None = None) -> Array:
    """An initializer's value, reading its external data ourselves when it has some.

    Why not ``onnx``'s loader: it refuses external data behind a symbolic link, and the Hugging
    Face cache is made of symbolic links (snapshot files point into ``blobs/``); ONNX Runtime
    follows them, so do we. Only a plain relative location inside ``base_dir`` is accepted.

    Args:
        tensor: an initializer (or any ``TensorProto``).
        base_dir: the folder of the model file, which external locations are relative to.

    Raises:
        GraphError: the tensor's data is external and ``base_dir`` is not given, the location
            leaves the folder, or the data file is shorter than the tensor.
    """
    from onnx import TensorProto, numpy_helper

    if tensor.data_location != TensorProto.EXTERNAL:
        return numpy_helper.to_array(tensor)
    info = {entry.key: entry.value for entry in tensor.external_data}
    location = Path(info["location"])
    if location.is_absolute() or ".." in location.parts:
        raise GraphError(f"external data location {info['location']!r} is outside the model folder")
    if base_dir is None:
        raise GraphError(f"{tensor.name} has external data, and the model's folder was not given")
    offset = int(info.get("offset", 0))
    length = int(info["length"]) if "length" in info else -1
    with open(base_dir / location, "rb") as handle:
        handle.seek(offset)
        raw = handle.read(length)
    if length >= 0 and len(raw) != length:
        raise GraphError(f"external data of {tensor.name} is truncated in {location}")
    inline = TensorProto()
    inline.CopyFrom(tensor)
    del inline.external_data[:]
    inline.data_location = TensorProto.DEFAULT
    inline.raw_data = raw
    return numpy_helper.to_array(inline)


def _transposed(array: Array, node: onnx.NodeProto) -> Array:
    """``array`` as the ``Transpose`` ``node`` makes it (no ``perm``: the axes reversed, as ONNX says)."""
    perm = attribute(node, "perm")
    return np.transpose(array, list(perm) if perm else None)


# -- the index ----------------------------------------------------------------------------------------


class GraphIndex:
    """Producer, consumer and initializer indexes over one ``GraphProto``.

    Built once before a rewrite. The indexes are not updated by later edits of the graph; a caller
    that rewires a node and reads the indexes again updates them itself (``consumers`` is a
    ``defaultdict``, so appending to a new name works). Empty names (an omitted optional input)
    are not indexed.

    Args:
        graph: the graph to index; kept as :attr:`graph`.
    """

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.initializers: dict[str, onnx.TensorProto] = {t.name: t for t in graph.initializer}
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: defaultdict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in graph.node:
            for out in node.output:
                if out:
                    self.producer[out] = node
            for inp in node.input:
                if inp:
                    self.consumers[inp].append(node)

    def ancestors(self, tensor: str, depth: int) -> list[onnx.NodeProto]:
        """Nodes upstream of ``tensor`` up to ``depth`` steps, nearest first (breadth first), each once."""
        seen: set[int] = set()
        order: list[onnx.NodeProto] = []
        frontier = [tensor]
        for _ in range(depth):
            nxt: list[str] = []
            for name in frontier:
                node = self.producer.get(name)
                if node is None or id(node) in seen:
                    continue
                seen.add(id(node))
                order.append(node)
                nxt.extend(node.input)
            frontier = nxt
        return order

    def constant(
        self, name: str, base_dir: Path | None = None, pending: Iterable[onnx.TensorProto] = ()
    ) -> Array | None:
        """The value of tensor ``name`` if the graph fixes it, else ``None``.

        Fixed values are: an initializer; the output of a ``Constant`` node (its ``value``,
        ``value_float(s)`` or ``value_int(s)``); the ``Transpose`` of an initializer (how an
        exported graph with tied embeddings feeds the embedding table to ``lm_head``).

        Args:
            name: the tensor; an empty name (an omitted input) gives ``None``.
            base_dir: the model's folder, where external data is read from (see :func:`tensor_value`).
            pending: initializers made during a rewrite and not yet added to the graph; looked up
                first.

        Raises:
            GraphError: as :func:`tensor_value`.
        """
        if not name:
            return None
        for tensor in pending:
            if tensor.name == name:
                return tensor_value(tensor, base_dir)
        if name in self.initializers:
            return tensor_value(self.initializers[name], base_dir)
        node = self.producer.get(name)
        if node is None:
            return None
        if node.op_type == "Transpose" and node.input[0] in self.initializers:
            return _transposed(tensor_value(self.initializers[node.input[0]], base_dir), node)
        if node.op_type == "Constant":
            return _constant_node_value(node)
        return None


def _constant_node_value(node: onnx.NodeProto) -> Array | None:
    from onnx import helper, numpy_helper

    for attr in node.attribute:
        if attr.name == "value":
            return numpy_helper.to_array(attr.t)
        if attr.name in ("value_float", "value_floats"):
            return np.asarray(helper.get_attribute_value(attr), np.float32)
        if attr.name in ("value_int", "value_ints"):
            return np.asarray(helper.get_attribute_value(attr), np.int64)
    return None  # sparse or string constants: not needed by any rewrite here


# -- order and pruning --------------------------------------------------------------------------------


def toposort(nodes: Sequence[onnx.NodeProto]) -> list[onnx.NodeProto]:
    """``nodes`` in a topological order: Kahn's algorithm, stable.

    Among the nodes whose inputs are ready, the one earliest in ``nodes`` goes first, so nodes
    already in order keep it and a node appended at the end moves up only as far as needed. A
    tensor that no node in ``nodes`` produces (a graph input, an initializer, an omitted optional
    input) counts as ready.

    Raises:
        GraphError: the nodes form a cycle (the message names the first node that cannot be placed).
    """
    producer_of = {out: i for i, node in enumerate(nodes) for out in node.output if out}
    waiting = [0] * len(nodes)
    users: defaultdict[int, list[int]] = defaultdict(list)
    for i, node in enumerate(nodes):
        deps = {producer_of[name] for name in node.input if name in producer_of}
        waiting[i] = len(deps)
        for dep in deps:
            users[dep].append(i)
    ready = [i for i, count in enumerate(waiting) if count == 0]
    heapq.heapify(ready)
    ordered: list[onnx.NodeProto] = []
    while ready:
        i = heapq.heappop(ready)
        ordered.append(nodes[i])
        for user in users[i]:
            waiting[user] -= 1
            if waiting[user] == 0:
                heapq.heappush(ready, user)
    if len(ordered) != len(nodes):
        stuck = next(nodes[i] for i, count in enumerate(waiting) if count > 0)
        label = stuck.name or f"{stuck.op_type} -> {', '.join(stuck.output)}"
        raise GraphError(
            f"the graph has a cycle: {len(nodes) - len(ordered)} nodes cannot be ordered, the first {label}"
        )
    return ordered


def insert_nodes(graph: onnx.GraphProto, nodes: Iterable[onnx.NodeProto]) -> None:
    """Add ``nodes`` to ``graph`` and put all its nodes in topological order (:func:`toposort`:
    the graph's own order is kept where it can be, each new node goes right before its first
    consumer needs it).

    Raises:
        GraphError: the nodes would form a cycle; ``graph`` is then unchanged.
    """
    ordered = toposort([*graph.node, *nodes])
    del graph.node[:]
    graph.node.extend(ordered)


def prune(graph: onnx.GraphProto) -> None:
    """Drop the nodes and initializers that no graph output depends on, and the ``value_info`` of
    tensors no node makes any more. The order of what is kept does not change; graph inputs are
    never removed (they are the model's interface).

    Works on a graph in any order: what is kept is what the outputs reach through producers.
    """
    index = GraphIndex(graph)
    needed: set[str] = set()
    stack = [o.name for o in graph.output]
    while stack:
        name = stack.pop()
        if name in needed:
            continue
        needed.add(name)
        node = index.producer.get(name)
        if node is not None:
            stack.extend(i for i in node.input if i and i not in needed)
    nodes = [n for n in graph.node if any(o in needed for o in n.output)]
    initializers = [t for t in graph.initializer if t.name in needed]
    produced = {o for n in nodes for o in n.output}
    value_info = [v for v in graph.value_info if v.name in produced]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    del graph.value_info[:]
    graph.value_info.extend(value_info)


# -- folding and saving -------------------------------------------------------------------------------


def fold_transposed_initializers(graph: onnx.GraphProto, base_dir: Path | None = None) -> int:
    """Replace each ``Transpose`` of an initializer by an initializer holding the transposed value
    (named as the ``Transpose``'s output, so consumers need no rewiring); returns how many.

    Why: quantizers (``quantize_dynamic``, ``MatMulNBitsQuantizer``) only quantize a MatMul whose
    weight is an initializer, and an exported graph with tied embeddings feeds ``lm_head`` through
    ``Transpose(embed_tokens.weight)``. An untied ``lm_head`` (and a sequence classifier's score
    head) is an initializer already, so nothing downstream depends on the embeddings being tied.
    The source initializer stays (the embedding ``Gather`` still reads it); :func:`prune` drops it
    where nothing does.

    Raises:
        GraphError: as :func:`tensor_value`.
    """
    from onnx import numpy_helper

    initializers = {t.name: t for t in graph.initializer}
    keep: list[onnx.NodeProto] = []
    folded: list[onnx.TensorProto] = []
    for node in graph.node:
        if node.op_type != "Transpose" or node.input[0] not in initializers:
            keep.append(node)
            continue
        value = _transposed(tensor_value(initializers[node.input[0]], base_dir), node)
        folded.append(numpy_helper.from_array(np.ascontiguousarray(value), node.output[0]))
    del graph.node[:]
    graph.node.extend(keep)
    graph.initializer.extend(folded)
    return len(folded)


def save_with_external_data(model: onnx.ModelProto, path: Path, *, size_threshold: int = 1024) -> Path:
    """Save ``model`` at ``path`` with every tensor of ``size_threshold`` bytes or more in one file,
    ``<name>_data``, next to it (the layout of the published files); returns that file's path.

    Why a helper: ``onnx`` appends to an existing data file instead of replacing it, so a stale one
    would grow the file and leave dead bytes; it is removed first.
    """
    import onnx

    data = path.with_name(path.name + "_data")
    data.unlink(missing_ok=True)
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=data.name,
        size_threshold=size_threshold,
    )
    return data
