"""Running a score graph one decoder layer at a time, so that a long document fits in memory.

Why: in one pass, a sequence of ``n`` tokens costs the attention ``heads × n × n`` float32 scores
per layer (16 × 8,192² × 4 B = 4 GiB for Qwen3-0.6B at 8,192 tokens), and feeding the sequence
through the KV cache in slices (chunked prefill, all layers per slice) bounds that but holds every
layer's KV cache for the whole sequence at once: 28 layers × 2 × 8 heads × 128 × 4 B = 229 KB per
token, 1.75 GiB at 8,192 tokens, more than the q8 model's weights (docs/benchmarks/long-doc/).

So the graph is cut into one stage per decoder layer (:func:`split_stages`), each its own ONNX
Runtime session over the same weight file, and a long row runs stage by stage: stage ``L`` takes
every slice of the sequence in turn with layer ``L``'s KV cache of the slices before it (the same
``past_key_values`` mechanism the shared-prefix pass uses), then that cache is dropped and stage
``L + 1`` starts. Memory is then the weights, one layer's KV cache, the hidden states the stages
hand over, and one slice's attention scores. Every token goes through exactly the operators of
the one-pass graph with the same inputs, so the scores are the one-pass scores (fp32 within
float rounding of the attention sums; q8 and q4 quantise activations per token).

A batch that is not sliced runs through the stages as it would through the whole graph, so the
layered session replaces the one-graph session (the weights are loaded once).

Where a stage ends: stage ``L`` holds everything up to and including layer ``L``'s attention (the
first node that reads both its past key and its past value, the "anchor") that earlier stages do
not: the previous layer's MLP, this layer's norms and projections, and its attention. The last
stage also holds the final layer's MLP and the head. Tensors that do not depend on the hidden
states (the attention mask's derived forms, rotary angles, position and length arithmetic: they
are computed from ``attention_mask``, ``position_ids`` and shapes only) are recomputed by every
stage that needs them instead of being handed over; a shape read of another layer's past is
answered with the stage's own past, which has the same shape at every step.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ModelLoadError

if TYPE_CHECKING:
    import onnx
    import onnxruntime

log = logging.getLogger("qwen3_rerank")

#: Rows with more new tokens than this run layer by layer, in slices. Below it one pass is faster
#: and its attention scores still small (16 heads × 2,048² × 4 B = 256 MiB for Qwen3-0.6B): a
#: ~560-token row sliced at 512 ran at 0.47× the speed of one pass (q8, 1 × 20 × 512, 0.29 vs 0.62
#: pairs/s, docs/benchmarks/cpu-0.6B/analysis.md), so the threshold is not the slice size.
DEFAULT_SLICE_TOKENS = 2048
#: The most tokens in one slice. Each slice costs its attention ``heads × slice × (past + slice)``
#: float32 scores: 16 × 512 × 8,192 × 4 B = 256 MiB at the end of an 8,192-token document.
MAX_SLICE_TOKENS = 512

_PAST = re.compile(r"^past_key_values\.(\d+)\.(key|value)$")
#: Operators whose output depends on their input's shape only, not its values.
_SHAPE_OPS = frozenset({"Shape", "Size"})
#: The inputs that run along the new tokens (cut per slice), and the mask (cut to past + slice).
_PER_TOKEN_INPUTS = ("input_ids", "position_ids")
_MASK = "attention_mask"


class StageSplitError(ModelLoadError):
    """The graph does not have the per-layer shape this module cuts (it is then run in one piece)."""


def plan_slices(length: int, slice_tokens: int) -> list[tuple[int, int]]:
    """``[start, end)`` bounds of consecutive slices of at most ``slice_tokens`` tokens covering
    ``length`` tokens (one slice when it fits).

    Raises:
        ValueError: ``length`` or ``slice_tokens`` below 1.
    """
    if length < 1 or slice_tokens < 1:
        raise ValueError("length and slice_tokens must be at least 1")
    bounds = [*range(0, length, slice_tokens), length]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


@dataclass(frozen=True)
class Stage:
    """One decoder layer's part of a graph.

    Attributes:
        layer: the decoder layer whose attention it holds.
        nodes: indices into the graph's nodes, in graph order.
        past: the names of this layer's past key and past value inputs.
        present: the names of its present key and present value outputs.
        inputs: graph inputs (another layer's past renamed to this one's) and tensors handed over
            from earlier stages, in the order the stage graph declares them.
        outputs: tensors later stages read, the presents, and the graph's other outputs made here.
        renamed: input name in the source graph → the name the stage reads it by.
    """

    layer: int
    nodes: tuple[int, ...]
    past: tuple[str, str]
    present: tuple[str, str]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    renamed: Mapping[str, str]


class _Index:
    """Producers and consumers of the tensors of a graph, by node index."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.nodes = list(graph.node)
        self.producer: dict[str, int] = {}
        self.consumers: dict[str, list[int]] = defaultdict(list)
        for i, node in enumerate(self.nodes):
            for name in node.output:
                if name:
                    self.producer[name] = i
            for name in node.input:
                if name:
                    self.consumers[name].append(i)

    def value_descendants(self, sources: Iterable[str]) -> set[int]:
        """Nodes whose outputs depend on the values of ``sources`` (a shape read is not a value read)."""
        seen: set[int] = set()
        stack = [c for s in sources for c in self.consumers.get(s, ()) if self.nodes[c].op_type not in _SHAPE_OPS]
        while stack:
            i = stack.pop()
            if i in seen:
                continue
            seen.add(i)
            for name in self.nodes[i].output:
                stack.extend(c for c in self.consumers.get(name, ()) if self.nodes[c].op_type not in _SHAPE_OPS)
        return seen

    def ancestors(self, start: int, stop: set[int]) -> set[int]:
        """``start`` and the nodes it depends on, not walking into ``stop``."""
        seen: set[int] = set()
        stack = [start]
        while stack:
            i = stack.pop()
            if i in seen or i in stop:
                continue
            seen.add(i)
            stack.extend(self.producer[name] for name in self.nodes[i].input if name in self.producer)
        return seen


def _past_names(graph: onnx.GraphProto) -> dict[int, tuple[str, str]]:
    """Layer → (past key, past value) input names; every layer with both, and their presents as outputs."""
    found: dict[int, dict[str, str]] = defaultdict(dict)
    for value in graph.input:
        match = _PAST.match(value.name)
        if match:
            found[int(match.group(1))][match.group(2)] = value.name
    outputs = {o.name for o in graph.output}
    if not found:
        raise StageSplitError("the graph has no past_key_values inputs")
    layers = sorted(found)
    for layer in layers:
        if set(found[layer]) != {"key", "value"}:
            raise StageSplitError(f"layer {layer} lacks a past key or value input")
        if not {f"present.{layer}.key", f"present.{layer}.value"} <= outputs:
            raise StageSplitError(f"the graph does not return layer {layer}'s KV cache (present.{layer}.*)")
    return {layer: (found[layer]["key"], found[layer]["value"]) for layer in layers}


def split_stages(graph: onnx.GraphProto) -> list[Stage]:
    """Cut a score graph (or any causal-LM graph with a KV cache) into one stage per decoder layer.

    Args:
        graph: the graph, its nodes in topological order (as ONNX requires).

    Returns:
        The stages, layer 0 first; run in order, the last one makes the graph's other outputs.

    Raises:
        StageSplitError: no KV cache, a node with a subgraph, a layer whose attention cannot be
            found, or a node that reads another layer's past by value (not the shape of a layer).
    """
    if any(attr.type in (5, 10) for node in graph.node for attr in node.attribute):  # GRAPH, GRAPHS
        raise StageSplitError("the graph has control-flow subgraphs")
    pasts = _past_names(graph)
    layers = sorted(pasts)
    index = _Index(graph)
    state = index.value_descendants(["input_ids", *(name for pair in pasts.values() for name in pair)])
    anchors: dict[int, int] = {}
    for layer in layers:
        key, value = pasts[layer]
        both = index.value_descendants([key]) & index.value_descendants([value])
        if not both:
            raise StageSplitError(f"cannot find layer {layer}'s attention (no node reads both its past key and value)")
        anchors[layer] = min(both)
    if [anchors[layer] for layer in layers] != sorted(anchors.values()):
        raise StageSplitError("the layers' attentions are not in layer order")

    stage_of: dict[int, int] = {}
    for layer in layers:  # each node belongs to the first layer whose attention needs it
        for i in index.ancestors(anchors[layer], stop=set(stage_of)):
            stage_of[i] = layer
    for i in range(len(index.nodes)):
        stage_of.setdefault(i, layers[-1])  # after the last attention: the last MLP and the head

    members: dict[int, set[int]] = {}
    for layer in layers:
        own = {i for i in state if stage_of[i] == layer}
        need = set(own)
        stack = [name for i in own for name in index.nodes[i].input]
        while stack:  # the mask/position arithmetic the stage's nodes read, recomputed here
            name = stack.pop()
            j = index.producer.get(name)
            if j is not None and j not in state and j not in need:
                need.add(j)
                stack.extend(index.nodes[j].input)
        members[layer] = need

    graph_inputs = {v.name for v in graph.input}
    initializers = {t.name for t in graph.initializer}
    all_pasts = {name: layer for layer, pair in pasts.items() for name in pair}
    handed: dict[int, list[str]] = {layer: [] for layer in layers}  # produced by the layer, read later
    stage_inputs: dict[int, list[str]] = {}
    renames: dict[int, dict[str, str]] = {}
    for layer in layers:
        need = members[layer]
        inputs: list[str] = []
        renamed: dict[str, str] = {}
        for i in sorted(need):
            node = index.nodes[i]
            for name in node.input:
                if not name or name in initializers:
                    continue
                if name in graph_inputs:
                    if all_pasts.get(name, layer) != layer:
                        if node.op_type not in _SHAPE_OPS:
                            raise StageSplitError(f"{node.name or node.op_type} of layer {layer} reads {name}")
                        renamed[name] = pasts[layer][0]  # every layer's past has the same shape
                        name = renamed[name]
                elif index.producer[name] in need:
                    continue
                else:
                    source = stage_of[index.producer[name]]
                    if source >= layer or index.producer[name] not in state:
                        raise StageSplitError(f"{name} reaches layer {layer}'s stage from layer {source}'s")
                    if name not in handed[source]:
                        handed[source].append(name)
                if name not in inputs:
                    inputs.append(name)
        stage_inputs[layer] = inputs
        renames[layer] = renamed

    graph_outputs = [o.name for o in graph.output]
    stages: list[Stage] = []
    for layer in layers:
        made = {name for i in members[layer] for name in index.nodes[i].output if name}
        present = (f"present.{layer}.key", f"present.{layer}.value")
        extra = [name for name in graph_outputs if name in made and name not in present]
        stages.append(
            Stage(
                layer=layer,
                nodes=tuple(sorted(members[layer])),
                past=pasts[layer],
                present=present,
                inputs=tuple(stage_inputs[layer]),
                outputs=tuple(dict.fromkeys([*handed[layer], *present, *extra])),
                renamed=renames[layer],
            )
        )
    made_anywhere = {name for stage in stages for name in stage.outputs}
    missing = [name for name in graph_outputs if name not in made_anywhere]
    if missing:
        raise StageSplitError(f"no stage makes the graph output(s) {', '.join(missing)}")
    return stages


def stage_model(model: onnx.ModelProto, stage: Stage, types: Mapping[str, int]) -> onnx.ModelProto:
    """The ONNX model of one stage: its nodes, the initializers they read (external data keeps
    pointing at the source's data file), and its inputs and outputs.

    Args:
        model: the whole graph's model, loaded without its external data.
        stage: the stage (see :func:`split_stages`).
        types: element type of each tensor handed over from an earlier stage (as ONNX Runtime
            inferred it for that stage's output).

    Raises:
        StageSplitError: an input handed over from an earlier stage has no known type.
    """
    import onnx
    from onnx import helper

    graph = model.graph
    declared = {v.name: v for v in [*graph.input, *graph.output]}
    nodes = []
    for i in stage.nodes:
        node = onnx.NodeProto()
        node.CopyFrom(graph.node[i])
        for k, name in enumerate(node.input):
            if name in stage.renamed:
                node.input[k] = stage.renamed[name]
        nodes.append(node)
    read = {name for node in nodes for name in node.input}
    inputs = []
    for name in stage.inputs:
        if name in declared:
            inputs.append(declared[name])
        elif name in types:
            inputs.append(helper.make_tensor_value_info(name, types[name], None))
        else:
            raise StageSplitError(f"the type of {name}, handed to layer {stage.layer}'s stage, is not known")
    outputs = [
        declared[name] if name in declared else helper.make_empty_tensor_value_info(name) for name in stage.outputs
    ]
    initializers = [t for t in graph.initializer if t.name in read]
    sub = helper.make_graph(nodes, f"{graph.name or 'graph'}.layer{stage.layer}", inputs, outputs, initializers)
    out = helper.make_model(sub, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    out.functions.extend(model.functions)
    return out


@dataclass(frozen=True)
class GraphArg:
    """What ONNX Runtime's ``NodeArg`` tells of a graph input or output (the engine reads these)."""

    name: str
    type: str
    shape: list[int | str | None]

    @classmethod
    def of(cls, value: onnx.ValueInfoProto) -> GraphArg:
        """The name, ``tensor(<type>)`` string and dims (int, symbolic name or None) of ``value``."""
        from onnx import TensorProto

        tensor = value.type.tensor_type
        dims: list[int | str | None] = [
            d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim
        ]
        kind = TensorProto.DataType.Name(tensor.elem_type).lower()
        return cls(value.name, f"tensor({kind})", dims)


def _element_type(ort_type: str) -> int:
    """``tensor(float)`` → ``TensorProto.FLOAT`` (ONNX Runtime's type strings are the enum names in lower case)."""
    from onnx import TensorProto

    inner = ort_type[len("tensor(") : -1] if ort_type.startswith("tensor(") else ort_type
    return int(TensorProto.DataType.Value(inner.upper()))


def _without_arena(options: onnxruntime.SessionOptions) -> None:
    """Let the stage allocate from the system allocator instead of an ONNX Runtime arena.

    Why: an arena keeps the most memory its runs ever took, and never gives it back. A layered
    model has one session per layer (28 for 0.6B), each of whose arenas would keep a slice's
    attention scores; and even one arena shared by the stages grows with every slice, because
    each slice's scores are a larger block than the last (they span the past), so no freed block
    fits the next one. Blocks this large are mapped and unmapped by the system allocator, so
    the memory held is what the running stage needs (measured: docs/benchmarks/long-doc/).
    """
    options.enable_cpu_mem_arena = False


class LayeredSession:
    """A score graph as one ONNX Runtime session per decoder layer, with the calls of an
    ``InferenceSession`` that the engine makes, and :meth:`run_sliced` for a long row.

    Args:
        path: the ``.onnx`` file (its external data beside it).
        make_options: a fresh ``SessionOptions`` for each stage, with the caller's settings.
        providers: ONNX Runtime execution providers (CPU: the stages hand over numpy arrays).

    Raises:
        StageSplitError: the graph cannot be cut per layer.
        Exception: what ONNX Runtime raises for a stage it refuses (the caller falls back).
    """

    def __init__(
        self,
        path: str | Path,
        make_options: Callable[[], onnxruntime.SessionOptions],
        providers: Sequence[str | tuple[str, dict[str, Any]]],
    ) -> None:
        import onnx
        import onnxruntime as ort

        path = Path(path)
        model = onnx.load(str(path), load_external_data=False)
        self.stages = split_stages(model.graph)
        self._inputs = [GraphArg.of(v) for v in model.graph.input]
        self._outputs = [GraphArg.of(v) for v in model.graph.output]
        folder = str(path.resolve().parent)
        types: dict[str, int] = {}
        self._sessions: list[ort.InferenceSession] = []
        for stage in self.stages:
            options = make_options()
            options.add_session_config_entry("session.model_external_initializers_file_folder_path", folder)
            _without_arena(options)
            proto = stage_model(model, stage, types)
            session = ort.InferenceSession(proto.SerializeToString(), sess_options=options, providers=list(providers))
            types.update((o.name, _element_type(o.type)) for o in session.get_outputs())
            self._sessions.append(session)
        # after which stage each handed-over tensor is no longer read
        self._last_reader: dict[str, int] = {}
        for k, stage in enumerate(self.stages):
            for name in stage.inputs:
                self._last_reader[name] = k

    # -- the InferenceSession calls the engine makes -----------------------------------------------

    def get_inputs(self) -> list[GraphArg]:
        """The whole graph's inputs."""
        return list(self._inputs)

    def get_outputs(self) -> list[GraphArg]:
        """The whole graph's outputs."""
        return list(self._outputs)

    def get_providers(self) -> list[str]:
        """The execution providers the stages run on."""
        providers: list[str] = self._sessions[0].get_providers()
        return providers

    def get_session_options(self) -> onnxruntime.SessionOptions:
        """The options of the first stage (every stage gets the same caller settings)."""
        return self._sessions[0].get_session_options()

    def run(self, output_names: Sequence[str], feeds: Mapping[str, Any]) -> list[Any]:
        """Run the whole batch through every stage in turn; the named graph outputs.

        Args:
            output_names: graph outputs to return (the score, presents).
            feeds: every graph input, as for the one-graph session.
        """
        wanted = set(output_names)
        results: dict[str, Any] = {}
        handed: dict[str, Any] = {}
        for k, (stage, session) in enumerate(zip(self.stages, self._sessions, strict=True)):
            feed = {name: handed[name] if name in handed else feeds[name] for name in stage.inputs}
            names = [n for n in stage.outputs if n in wanted or self._last_reader.get(n, -1) > k]
            for name, value in zip(names, session.run(names, feed), strict=True):
                if name in wanted:
                    results[name] = value
                if self._last_reader.get(name, -1) > k:
                    handed[name] = value
            for name in [n for n in handed if self._last_reader[n] <= k]:
                del handed[name]
        return [results[name] for name in output_names]

    # -- long rows -----------------------------------------------------------------------------------

    def slices_for(self, feeds: Mapping[str, Any], slice_tokens: int) -> list[tuple[int, int]] | None:
        """The slices to run ``feeds`` in, or None when it should run whole: more than one row,
        no more new tokens than ``slice_tokens``, a padded mask, or an input this module does not
        know how to cut. A slice holds at most ``min(slice_tokens, MAX_SLICE_TOKENS)`` tokens."""
        ids = feeds["input_ids"]
        mask = feeds[_MASK]
        if ids.shape[0] != 1 or ids.shape[1] <= slice_tokens or not np.all(mask):
            return None
        past_names = {name for stage in self.stages for name in stage.past}
        if any(name not in (*_PER_TOKEN_INPUTS, _MASK) and name not in past_names for name in feeds):
            return None
        return plan_slices(int(ids.shape[1]), min(slice_tokens, MAX_SLICE_TOKENS))

    def run_sliced(
        self, output_names: Sequence[str], feeds: Mapping[str, Any], slices: Sequence[tuple[int, int]]
    ) -> list[Any]:
        """Run one row layer by layer, each layer over every slice of its new tokens in turn.

        The row's past (``past_key_values.*``: empty, or a shared prefix's cache) is where each
        layer's KV cache starts; a slice sees it and the slices before it, as in one pass.

        Args:
            output_names: graph outputs to return, made by the last stage (not the presents).
            feeds: every graph input for one row, no padding (see :meth:`slices_for`).
            slices: ``[start, end)`` bounds over the new tokens, in order, covering them.

        Returns:
            The named outputs of the last slice (the row's last token).
        """
        mask = feeds[_MASK]
        past_length = int(mask.shape[1] - feeds["input_ids"].shape[1])
        handed: list[dict[str, Any]] = [{} for _ in slices]
        wanted = set(output_names)
        results: dict[str, Any] = {}
        for k, (stage, session) in enumerate(zip(self.stages, self._sessions, strict=True)):
            key, value = feeds[stage.past[0]], feeds[stage.past[1]]
            keep = [n for n in stage.outputs if self._last_reader.get(n, -1) > k]
            names = [*stage.present, *keep, *(n for n in stage.outputs if n in wanted)]
            for i, (start, end) in enumerate(slices):
                feed: dict[str, Any] = {}
                for name in stage.inputs:
                    if name in _PER_TOKEN_INPUTS:
                        feed[name] = np.ascontiguousarray(feeds[name][:, start:end])
                    elif name == _MASK:
                        feed[name] = np.ascontiguousarray(mask[:, : past_length + end])
                    elif name == stage.past[0]:
                        feed[name] = key
                    elif name == stage.past[1]:
                        feed[name] = value
                    else:
                        feed[name] = handed[i][name]
                out = dict(zip(names, session.run(names, feed), strict=True))
                key, value = out[stage.present[0]], out[stage.present[1]]
                for name in [n for n in handed[i] if self._last_reader[n] <= k]:
                    del handed[i][name]
                handed[i].update((name, out[name]) for name in keep)
                if i == len(slices) - 1:
                    results.update((name, out[name]) for name in wanted if name in out)
            del key, value  # this layer's cache is not needed again
        return [results[name] for name in output_names]
