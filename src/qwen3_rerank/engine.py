"""ONNX Runtime session for a Qwen3 causal-LM graph: introspection, feeds, providers.

The engine reads what the graph asks for instead of assuming it: ``position_ids`` and an empty
``past_key_values.*`` cache are fed only when the graph declares them, with the dtype and shape it
declares, and the logits are read at the last position whatever the output's sequence length.

Two kinds of graph give a relevance score, and the engine turns both into the same number, the
yes − no logit gap per row (so the reranker only ever sees gaps):

* a causal LM (``logits`` ``[batch, seq, vocab]``, or a score graph's ``yes_no_logits``): the gap
  is ``logit[yes] - logit[no]``;
* a one-label ``Qwen3ForSequenceClassification`` conversion (``logits`` ``[batch, seq, 1]``, or a
  score graph's ``relevance_logit``): its one logit is that gap already (the score head is
  ``lm_head[yes] - lm_head[no]``), and sigmoid of it is P(yes).
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
import numpy.typing as npt

from .errors import InputError, ModelLoadError
from .layered import DEFAULT_SLICE_TOKENS
from .score_graph import OUTPUT as YES_NO_OUTPUT
from .score_graph import SEQ_CLS_OUTPUT, ScoreGraph

if TYPE_CHECKING:
    from onnxruntime import NodeArg, OrtValue

#: Token ids or an attention mask, ``[batch, seq]``; any integer dtype (cast to the graph's).
IntArray: TypeAlias = "npt.NDArray[np.integer[Any]]"
#: Logits as the graph returns them (float32 or float16).
FloatArray: TypeAlias = "npt.NDArray[np.floating[Any]]"
#: A KV-cache tensor fed to the graph: a numpy array, or an ``OrtValue`` already on the device
#: (see :meth:`OnnxEngine.to_device`). onnxruntime ships no types, so ``OrtValue`` is ``Any`` to mypy.
FeedValue: TypeAlias = "npt.NDArray[np.floating[Any]] | OrtValue"

log = logging.getLogger("qwen3_rerank")

_PAST = re.compile(r"^past_key_values\.(\d+)\.(key|value)$")
_ORT_TYPES: dict[str, type[np.generic] | None] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bfloat16)": None,  # no numpy dtype; rejected with a clear error below
}


#: The ``onnxruntime.SessionOptions`` settings that ``session_options`` may change, and what for.
#: Only these are passed on: a misspelt or unsupported name is an error that lists them, instead
#: of an attribute set on the Python object and silently ignored by ONNX Runtime (or a traceback).
#: ``graph_optimization_level`` and ``execution_mode`` also take the enum member's name as a string.
SESSION_OPTIONS: dict[str, str] = {
    "intra_op_num_threads": "int: threads inside one operator (what `threads` sets)",
    "inter_op_num_threads": "int: threads across independent operators (parallel execution mode)",
    "execution_mode": "ORT_SEQUENTIAL (default) or ORT_PARALLEL",
    "graph_optimization_level": "ORT_DISABLE_ALL, ORT_ENABLE_BASIC, ORT_ENABLE_EXTENDED or ORT_ENABLE_ALL (default)",
    "enable_cpu_mem_arena": "bool: ONNX Runtime's CPU memory arena",
    "enable_mem_pattern": "bool: pre-plan memory from the first run's shapes",
    "enable_mem_reuse": "bool: reuse buffers between operators",
    "use_deterministic_compute": "bool: deterministic kernels where ONNX Runtime has them",
    "enable_profiling": "bool: write a JSON profile of every run",
    "profile_file_prefix": "str: where the profile goes",
    "optimized_model_filepath": "str: save the graph as ONNX Runtime optimized it",
    "log_severity_level": "int: 0 (verbose) to 4 (fatal); 3 by default here",
    "config_entries": "mapping of session config entry names to values (add_session_config_entry)",
}
_ENUM_OPTIONS = {"graph_optimization_level": "GraphOptimizationLevel", "execution_mode": "ExecutionMode"}


@dataclass(frozen=True)
class PastInput:
    """One declared KV-cache input: ``[batch, kv_heads, past_length, head_dim]``."""

    name: str
    kv_heads: int
    head_dim: int
    dtype: type[np.generic]


def providers_for(device: str = "cpu", providers: Sequence[str] | None = None) -> list[str]:
    """ONNX Runtime execution providers for a device name (``cpu``, ``cuda``, ``cuda:N``).

    Args:
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; ignored when ``providers`` is given.
        providers: explicit provider names, checked against what this onnxruntime has.

    Returns:
        The provider names, most preferred first (CUDA falls back to CPU for unsupported nodes).

    Raises:
        ModelLoadError: a provider is not available, or the device name is unknown.
    """
    import onnxruntime as ort

    available = ort.get_available_providers()
    if providers:
        unknown = [p for p in providers if p not in available]
        if unknown:
            raise ModelLoadError(
                f"execution provider(s) {', '.join(unknown)} not available; "
                f"this onnxruntime has: {', '.join(available)}"
            )
        return list(providers)
    kind = device.split(":", 1)[0].lower()
    if kind == "cpu":
        return ["CPUExecutionProvider"]
    if kind == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise ModelLoadError(
                "device 'cuda' asked for, but this onnxruntime has no CUDAExecutionProvider "
                "(install the 'gpu' extra: pip install 'qwen3-rerank[gpu]')"
            )
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise ModelLoadError(f"unknown device {device!r}; use 'cpu', 'cuda' or 'cuda:N'")


class OnnxEngine:
    """Runs a Qwen3 reranker ONNX graph (causal LM or one-label classifier) and returns
    last-position logits or yes − no gaps.

    Args:
        path: the ``.onnx`` file, or the :class:`~qwen3_rerank.score_graph.ScoreGraph` record
            of a score graph (its limits then apply: see :attr:`max_batch_with_past`).
        config: the model's ``config.json``; used for KV-cache shapes and the architecture when
            the graph leaves them open.
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        providers: explicit ONNX Runtime execution providers (overrides ``device``).
        threads: intra-op threads; ``None`` or 0: ONNX Runtime's default.
        io_binding: bind inputs and outputs explicitly; default: on CUDA only.
        session_options: ``SessionOptions`` settings to override, e.g. for measurements; the
            names allowed are the keys of :data:`SESSION_OPTIONS`.
        slice_tokens: for a score graph on the CPU, run it one decoder layer at a time
            (:class:`~qwen3_rerank.layered.LayeredSession`) and feed a row longer than this many
            new tokens through each layer in slices of at most this many and at most
            :data:`~qwen3_rerank.layered.MAX_SLICE_TOKENS`, so that a long document needs
            one layer's KV cache and one slice's attention scores instead of the whole
            sequence's; ``None``: the graph runs in one piece, as one session.

    Raises:
        InputError: an unknown session option, a value of the wrong type, or ``slice_tokens`` below 1.
        ModelLoadError: the file cannot be loaded, the graph's inputs are not those of a Qwen3
            causal LM (with or without a KV cache), or it lacks the output its record names.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | ScoreGraph,
        *,
        config: Mapping[str, Any] | None = None,
        device: str = "cpu",
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        io_binding: bool | None = None,
        session_options: Mapping[str, object] | None = None,
        slice_tokens: int | None = DEFAULT_SLICE_TOKENS,
    ) -> None:
        import onnxruntime as ort

        record = path if isinstance(path, ScoreGraph) else None
        self.path = path.path if isinstance(path, ScoreGraph) else Path(path)
        config = config or {}
        provider_names = providers_for(device, providers)
        provider_list: list[str | tuple[str, dict[str, int]]] = list(provider_names)
        self.device_type, self.device_id = "cpu", 0
        if provider_names[0] == "CUDAExecutionProvider":
            self.device_type = "cuda"
            if ":" in device:
                self.device_id = int(device.split(":", 1)[1])
                provider_list[0] = ("CUDAExecutionProvider", {"device_id": self.device_id})
        #: Bind inputs and outputs explicitly (on CUDA: the KV cache of a shared prefix stays on the
        #: device for all its documents, and only the two logits per row come back).
        self.io_binding = self.device_type == "cuda" if io_binding is None else io_binding

        def make_options() -> Any:
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.log_severity_level = 3
            if threads:
                options.intra_op_num_threads = int(threads)
                options.inter_op_num_threads = 1
            _apply_session_options(options, session_options or {})
            return options

        if slice_tokens is not None and slice_tokens < 1:
            raise InputError(f"slice_tokens must be at least 1 (or None), not {slice_tokens}")
        self._make_options = make_options
        self._providers = provider_list
        self._switch = threading.Lock()
        #: The one-graph session, or once a long row came, the per-layer one (see :meth:`_layered`).
        self.session: Any = self._one_piece()

        self._introspect(config)
        #: Most rows in one batch on top of a KV-cache past (``None``: no limit). ONNX Runtime's
        #: GroupQueryAttention takes several new tokens on top of a past only for a batch of one;
        #: the score graph's record says whether it has that operator.
        self.max_batch_with_past: int | None = None
        if record is not None:
            if self.logits_name != record.output:
                raise ModelLoadError(
                    f"{self.path.name} has no output {record.output!r}, which its score-graph record names "
                    f"(it has {self.logits_name!r}): rebuild it with qwen3-rerank optimize"
                )
            self.max_batch_with_past = record.max_batch_with_past
        #: A row with more new tokens than this runs alone, layer by layer in slices of this many
        #: (None: every batch runs in one piece). Only a score graph that returns its KV cache,
        #: on the CPU provider alone, is cut per layer.
        self.slice_tokens: int | None = None
        if (
            record is not None
            and slice_tokens
            and self.supports_prefix_cache
            and _layered_allowed(provider_names, self.io_binding, session_options)
        ):
            self.slice_tokens = slice_tokens

    def _one_piece(self) -> Any:
        """The whole graph as one ONNX Runtime session."""
        import onnxruntime as ort

        options = self._make_options()  # outside the try: a bad session option is the caller's InputError
        try:
            return ort.InferenceSession(str(self.path), sess_options=options, providers=self._providers)
        except Exception as exc:
            raise ModelLoadError(_explain_session_error(self.path, exc)) from None

    def _layered(self) -> Any:
        """The per-layer session, made on the first long row (None when the graph cannot be cut).

        Why only then: a short-document workload keeps the one-graph session, its load time and
        its behaviour. The one-graph session is let go before the stages load, so the weights
        are never held twice (the stages read them from the same file).
        """
        from .layered import LayeredSession

        with self._switch:
            if isinstance(self.session, LayeredSession) or self.slice_tokens is None:
                return self.session if isinstance(self.session, LayeredSession) else None
            self.session = None
            self.session = _layered_session(self.path, self._make_options, self._providers)
            if self.session is None:
                self.slice_tokens = None
                self.session = self._one_piece()
                return None
            log.info(
                "qwen3-rerank: %s now runs layer by layer (a row of more than %d tokens)",
                self.path.name,
                self.slice_tokens,
            )
            return self.session

    def _current(self) -> Any:
        """The session to run, waiting for a switch to the per-layer one that another thread makes."""
        session = self.session
        if session is None:
            with self._switch:
                session = self.session
        return session

    # -- graph introspection -------------------------------------------------------------------

    def _introspect(self, config: Mapping[str, Any]) -> None:
        inputs = {i.name: i for i in self.session.get_inputs()}
        if "input_ids" not in inputs or "attention_mask" not in inputs:
            raise ModelLoadError(
                f"{self.path.name} is not a causal-LM graph: it needs inputs 'input_ids' and "
                f"'attention_mask' (it has: {', '.join(inputs)})"
            )
        self.ids_dtype = self._np_type(inputs["input_ids"])
        self.mask_dtype = self._np_type(inputs["attention_mask"])
        self.has_position_ids = "position_ids" in inputs
        self.position_dtype = self._np_type(inputs["position_ids"]) if self.has_position_ids else None
        self.past_inputs: list[PastInput] = []
        unknown: list[str] = []
        for name, arg in inputs.items():
            if name in ("input_ids", "attention_mask", "position_ids"):
                continue
            match = _PAST.match(name)
            if not match:
                unknown.append(name)
                continue
            shape = list(arg.shape)
            kv_heads = _dim(shape, 1, config.get("num_key_value_heads"))
            head_dim = _dim(
                shape,
                3,
                config.get("head_dim")
                or (config["hidden_size"] // config["num_attention_heads"] if "hidden_size" in config else None),
            )
            if kv_heads is None or head_dim is None:
                raise ModelLoadError(
                    f"cannot tell the shape of {name} {shape}: the graph leaves it open and config.json "
                    "has no num_key_value_heads/head_dim"
                )
            self.past_inputs.append(PastInput(name, kv_heads, head_dim, self._np_type(arg)))
        if unknown:
            raise ModelLoadError(
                f"{self.path.name} has input(s) this runtime does not know how to feed: {', '.join(unknown)}"
            )
        outputs = [o.name for o in self.session.get_outputs()]
        #: A score graph (see score_graph.py) outputs the (yes, no) logits, or a sequence
        #: classifier's one logit, directly.
        score_output = next((name for name in (YES_NO_OUTPUT, SEQ_CLS_OUTPUT) if name in outputs), None)
        self.is_score_graph = score_output is not None
        self.logits_name = score_output or ("logits" if "logits" in outputs else outputs[0])
        #: One logit per position (a one-label sequence classifier), not a vocabulary of them.
        self.single_logit = self._single_logit(score_output, config)
        # present.N.key -> past_key_values.N.key, when the graph returns its KV cache.
        self.present_for_past = {
            p.name: p.name.replace("past_key_values.", "present.", 1)
            for p in self.past_inputs
            if p.name.replace("past_key_values.", "present.", 1) in outputs
        }
        self.supports_prefix_cache = bool(self.past_inputs) and len(self.present_for_past) == len(self.past_inputs)

    def _single_logit(self, score_output: str | None, config: Mapping[str, Any]) -> bool:
        """Whether the graph outputs one logit per row/position (the yes − no gap) instead of a
        vocabulary: its output's last dim says so, or, when the graph leaves it open,
        ``config.json``'s architecture."""
        if score_output is not None:
            return score_output == SEQ_CLS_OUTPUT
        seq_cls = "Qwen3ForSequenceClassification" in (config.get("architectures") or [])
        output = next(o for o in self.session.get_outputs() if o.name == self.logits_name)
        last = output.shape[-1] if output.shape else None
        if not isinstance(last, int) or last <= 0:
            return seq_cls
        if seq_cls and last != 1:
            raise ModelLoadError(
                f"{self.path.name} is a Qwen3ForSequenceClassification graph with {last} labels; only one-label "
                "conversions (the logit of yes − no, e.g. vLLM's from_2_way_softmax) can be scored"
            )
        return last == 1

    def _np_type(self, arg: NodeArg) -> type[np.generic]:
        np_type = _ORT_TYPES.get(arg.type)
        if np_type is None:
            raise ModelLoadError(f"{self.path.name}: input {arg.name} has unsupported type {arg.type}")
        return np_type

    @property
    def providers(self) -> list[str]:
        """The execution providers the session runs on, most preferred first."""
        providers: list[str] = self._current().get_providers()
        return providers

    # -- running ---------------------------------------------------------------------------------

    def feeds(
        self,
        input_ids: IntArray,
        attention_mask: IntArray,
        past: Mapping[str, FeedValue] | None = None,
    ) -> dict[str, FeedValue]:
        """The graph's inputs for one batch.

        ``attention_mask`` covers the past and the new tokens, ``[batch, past + new]``. Without
        ``past`` the KV cache inputs get empty tensors of the declared dtype and shape.
        Positions count real tokens only, so padding (on either side) never shifts them.

        Args:
            input_ids: the new tokens, ``[batch, new]``.
            attention_mask: 1 for real tokens and 0 for padding, ``[batch, past + new]``.
            past: the KV cache per past input name (see :meth:`prefix_cache`), ``batch`` rows.

        Returns:
            Input name → value, in the dtypes the graph declares.
        """
        batch, new = input_ids.shape
        feed: dict[str, FeedValue] = {
            "input_ids": input_ids.astype(self.ids_dtype, copy=False),
            "attention_mask": attention_mask.astype(self.mask_dtype, copy=False),
        }
        if self.has_position_ids:
            positions = np.cumsum(attention_mask, axis=1, dtype=np.int64)[:, -new:] - 1
            np.maximum(positions, 0, out=positions)
            feed["position_ids"] = positions.astype(self.position_dtype, copy=False)
        for spec in self.past_inputs:
            if past is not None:
                feed[spec.name] = past[spec.name]
            else:
                feed[spec.name] = np.zeros((batch, spec.kv_heads, 0, spec.head_dim), dtype=spec.dtype)
        return feed

    def last_logits(self, input_ids: IntArray, attention_mask: IntArray) -> FloatArray:
        """Logits at the last position, ``[batch, vocab]``, as the graph computed them (full graph).

        Args:
            input_ids: left-padded token ids, ``[batch, seq]``.
            attention_mask: 1 for real tokens and 0 for padding, ``[batch, seq]``.

        Returns:
            The logits output at the last column (a 2-D output is returned as it is).

        Raises:
            RuntimeError: the logits output is neither 2-D nor 3-D.
        """
        logits: FloatArray
        (logits,) = self._current().run([self.logits_name], self.feeds(input_ids, attention_mask))
        if logits.ndim == 3:  # [batch, seq or 1, vocab]
            return logits[:, -1, :]
        if logits.ndim == 2:
            return logits
        raise RuntimeError(f"unexpected logits shape {logits.shape} from {self.path.name}")

    def gaps(
        self,
        input_ids: IntArray,
        attention_mask: IntArray,
        yes_id: int,
        no_id: int,
        past: Mapping[str, FeedValue] | None = None,
    ) -> npt.NDArray[np.float64]:
        """``[batch]`` float64 yes − no logit gaps at each row's last position.

        For a causal graph that is ``logit[yes] - logit[no]``; for a one-label sequence classifier
        its logit (``yes_id``/``no_id`` are then unused). With a full graph the batch must be
        left-padded (its last position is read); a score graph finds each row's last real token
        itself.

        Args:
            input_ids: token ids, ``[batch, new]``.
            attention_mask: ``[batch, past + new]``.
            yes_id: the token id of "yes".
            no_id: the token id of "no".
            past: a KV-cache prefix per past input (score graphs only), ``batch`` rows.

        Returns:
            The gaps, float64.

        Raises:
            ValueError: ``past`` is given for a full (non-score) graph.
        """
        if not self.is_score_graph:
            if past is not None:
                raise ValueError("a KV-cache prefix needs a score graph")
            logits = self.last_logits(input_ids, attention_mask)
        else:
            logits = self._run_score_graph(self.feeds(input_ids, attention_mask, past))
        if self.single_logit:
            return logits[:, 0].astype(np.float64)
        pair = logits if self.is_score_graph else logits[:, [yes_id, no_id]]  # columns (yes, no)
        pair = pair.astype(np.float64)
        return pair[:, 0] - pair[:, 1]

    def _run_score_graph(self, feed: Mapping[str, FeedValue]) -> FloatArray:
        out: FloatArray
        ids = feed["input_ids"]
        if self.slice_tokens is not None and ids.shape[0] == 1 and ids.shape[1] > self.slice_tokens:
            layered = self._layered()
            slices = layered.slices_for(feed, self.slice_tokens) if layered is not None else None
            if slices is not None:  # one long row: layer by layer, slice by slice
                (out,) = layered.run_sliced([self.logits_name], feed, slices)
                return out
        if not self.io_binding:
            (out,) = self._current().run([self.logits_name], feed)
            return out
        binding = self.session.io_binding()
        for name, value in feed.items():
            if isinstance(value, np.ndarray):
                binding.bind_cpu_input(name, value)
            else:  # an OrtValue already on the device (see to_device)
                binding.bind_ortvalue_input(name, value)
        binding.bind_output(self.logits_name, "cpu")
        self.session.run_with_iobinding(binding)
        out = binding.copy_outputs_to_cpu()[0]
        return out

    def to_device(self, array: npt.NDArray[np.floating[Any]]) -> FeedValue:
        """``array`` where the session computes (an OrtValue with IO binding, else unchanged).

        Args:
            array: a KV-cache tensor.

        Returns:
            An ``OrtValue`` on the session's device when IO binding is on, else ``array`` itself.
        """
        if not self.io_binding:
            return array
        import onnxruntime as ort

        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), self.device_type, self.device_id)

    def prefix_cache(self, prefix_ids: Sequence[int]) -> dict[str, npt.NDArray[np.floating[Any]]]:
        """The KV cache of one token sequence, keyed by the past input it feeds (batch of 1).

        Args:
            prefix_ids: the prefix's token ids.

        Returns:
            Past input name → its ``present`` output, ``[1, kv_heads, len(prefix_ids), head_dim]``.

        Raises:
            ValueError: the graph does not return its KV cache.
        """
        if not self.supports_prefix_cache:
            raise ValueError(f"{self.path.name} does not return its KV cache")
        ids = np.asarray([prefix_ids], dtype=np.int64)
        mask = np.ones_like(ids)
        names = list(self.present_for_past.values())
        values: list[npt.NDArray[np.floating[Any]]] = self._current().run(names, self.feeds(ids, mask))
        by_present = dict(zip(names, values, strict=True))
        return {past: by_present[present] for past, present in self.present_for_past.items()}


def _layered_allowed(providers: Sequence[str], io_binding: bool, session_options: Mapping[str, object] | None) -> bool:
    """Whether a score graph may run as a :class:`~qwen3_rerank.layered.LayeredSession`: on the
    CPU provider alone, without IO binding (the stages hand over numpy arrays), and not when the
    caller profiles or saves the optimised graph (every stage would write the same file)."""
    overrides = session_options or {}
    return (
        list(providers) == ["CPUExecutionProvider"]
        and not io_binding
        and not overrides.get("enable_profiling")
        and not overrides.get("optimized_model_filepath")
    )


def _layered_session(path: Path, make_options: Any, providers: Sequence[Any]) -> Any:
    """A :class:`~qwen3_rerank.layered.LayeredSession` of ``path``, or None (with the reason
    logged) when the graph cannot be cut per layer or a stage does not load: the one-graph
    session then runs it, as before."""
    from .layered import LayeredSession, StageSplitError

    try:
        return LayeredSession(path, make_options, providers)
    except StageSplitError as exc:
        log.info("qwen3-rerank: %s runs in one piece: %s", path.name, exc)
    except Exception as exc:  # a stage ONNX Runtime refuses: the whole graph still runs
        log.warning("qwen3-rerank: %s runs in one piece: its per-layer stages do not load (%s)", path.name, exc)
    return None


def _apply_session_options(options: Any, overrides: Mapping[str, object]) -> None:
    """Set the whitelisted :data:`SESSION_OPTIONS` on an ``onnxruntime.SessionOptions``.

    Raises:
        InputError: a name outside the whitelist, an unknown enum name, or a value of the wrong type.
    """
    import onnxruntime as ort

    unknown = sorted(set(overrides) - set(SESSION_OPTIONS))
    if unknown:
        raise InputError(
            f"unknown session option(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(SESSION_OPTIONS)}"
        )
    for key, value in overrides.items():
        if key == "config_entries":
            try:  # a mapping, or (name, value) pairs as JSON lists them
                entries = dict(value)  # type: ignore[call-overload]
            except (TypeError, ValueError):
                raise InputError(
                    f"session option 'config_entries' must be a mapping, not {type(value).__name__}"
                ) from None
            for name, entry in entries.items():
                options.add_session_config_entry(str(name), str(entry))
            continue
        if key in _ENUM_OPTIONS and isinstance(value, str):
            enum = getattr(ort, _ENUM_OPTIONS[key])
            if not hasattr(enum, value):
                raise InputError(f"session option {key!r}: unknown value {value!r} ({SESSION_OPTIONS[key]})")
            value = getattr(enum, value)
        try:
            setattr(options, key, value)
        except TypeError:
            raise InputError(
                f"session option {key!r}: {value!r} is not a valid value ({SESSION_OPTIONS[key]})"
            ) from None


def _dim(shape: Sequence[int | str | None], axis: int, fallback: int | None) -> int | None:
    value = shape[axis] if len(shape) > axis else None
    return value if isinstance(value, int) and value > 0 else fallback


def _explain_session_error(path: Path, exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    lowered = text.lower()
    if (
        "protobuf parsing failed" in lowered
        or "invalid_protobuf" in lowered
        or "load model" in lowered
        and "failed" in lowered
    ):
        return f"cannot load {path}: the file is corrupt or truncated ({text})"
    if any(k in lowered for k in ("external data", "external initializer", "onnx_data", "data file")):
        return f"cannot load {path}: its external weight file is missing or truncated ({text})"
    return f"cannot load {path}: {text}"
