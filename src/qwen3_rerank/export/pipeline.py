"""``export_checkpoint``: a Qwen3-Reranker checkpoint to the published ONNX layout, verified.

Which tool does what:

* ``torch.onnx.export`` (dynamo) writes the fp32 graph from the ``transformers`` model
  (:mod:`.torch_export`).
* ``onnxruntime.transformers.optimizer`` (``model_type="qwen3"``) fuses the RMSNorms
  (``SimplifiedLayerNormalization``/``SkipSimplifiedLayerNormalization``); the fp16, q8 and q4 files
  start from this graph.
* ``onnxruntime.transformers.float16`` converts to fp16.
* :mod:`.gqa` (ours: no maintained tool fuses this graph) fuses attention into
  ``com.microsoft.GroupQueryAttention`` for q8 and q4.
* ``onnxruntime.quantization.quantize_dynamic`` makes q8 (MatMul/Gemm weights, int8) and
  ``onnxruntime.quantization.matmul_nbits_quantizer.MatMulNBitsQuantizer`` makes q4
  (``MatMulNBits``, 4 bits, block size 32).

Checkpoints: ``Qwen3ForCausalLM`` (tied or untied ``lm_head``, any head layout) and one-label
``Qwen3ForSequenceClassification`` (vLLM's ``from_2_way_softmax`` conversion), whose graph has the
same interface with ``logits`` ``[batch, seq, 1]``. The one-column score head of the latter stays
float in q8/q4: it holds ``hidden_size`` weights, so quantizing it saves nothing and only adds
error to the one number the model outputs.

Everything is written into a hidden temporary folder next to ``out`` and moved into place only
once every file is written and verified, so a folder at ``out`` is always complete.
"""

from __future__ import annotations

import errno
import gc
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import onnx

from ..files import DTYPE_FILES
from ..onnx_graph import fold_transposed_initializers, save_with_external_data
from .source import ExportError, is_seq_cls, resolve_source

EXPORT_DTYPES = ("fp32", "fp16", "q8", "q4")
SUPPORTED_ARCHITECTURES = ("Qwen3ForCausalLM", "Qwen3ForSequenceClassification")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
)
COPIED_FILES = ("config.json", "generation_config.json", *TOKENIZER_FILES)
REPORT_NAME = "export_report.json"
Q4_BLOCK_SIZE = 32
PROTOBUF_LIMIT = 2_000_000_000  # bytes; bigger models keep their weights in <file>_data
FP16_MAX = 1.0e4  # constants are clipped to this in fp16, so masks stay finite when added to scores


@dataclass
class ExportResult:
    """What :func:`export_checkpoint` wrote.

    Args:
        out: the output folder.
        files: relative path → size in bytes of every file in ``out``.
        seconds: step → seconds it took.
        report: the verification report (see :func:`.verify.verify_model`), when verified.
    """

    out: Path
    files: dict[str, int] = field(default_factory=dict)  # relative path -> bytes
    seconds: dict[str, float] = field(default_factory=dict)  # step -> seconds
    report: dict[str, Any] | None = None  # JSON object of mixed value types


Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


# -- checks -----------------------------------------------------------------------------------------


def check_checkpoint(folder: Path) -> dict[str, Any]:
    """The checkpoint's config, after checking it is a Qwen3 causal LM with weights and a tokenizer.

    Args:
        folder: the checkpoint folder.

    Returns:
        ``config.json``, parsed.

    Raises:
        ExportError: no readable ``config.json`` (or not a JSON object), an unsupported
            architecture or label count, no weights, or no ``tokenizer.json``.
    """
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ExportError(f"{folder} is not a Hugging Face checkpoint: no config.json")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"cannot read {config_path}: {exc}") from None
    if not isinstance(config, dict):
        raise ExportError(f"cannot read {config_path}: it is not a JSON object")
    architectures = config.get("architectures") or []
    if config.get("model_type") != "qwen3" or not any(a in SUPPORTED_ARCHITECTURES for a in architectures):
        raise ExportError(
            f"unsupported architecture in {config_path}: model_type={config.get('model_type')!r}, "
            f"architectures={architectures!r}; only Qwen3ForCausalLM (Qwen3-Reranker) and one-label "
            "Qwen3ForSequenceClassification checkpoints can be exported"
        )
    if "Qwen3ForSequenceClassification" in architectures:
        labels = num_labels(config)
        if labels != 1:
            raise ExportError(
                f"{config_path} is a Qwen3ForSequenceClassification with num_labels={labels}; only one-label "
                "conversions (score = logit of yes − no, e.g. vLLM's from_2_way_softmax) are supported"
            )
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("pytorch_model*.bin")):
        raise ExportError(f"{folder} has no weights (*.safetensors or pytorch_model*.bin)")
    if not (folder / "tokenizer.json").is_file():
        raise ExportError(
            f"{folder} has no tokenizer files (tokenizer.json is needed): copy them from the base model's repo"
        )
    return config


def num_labels(config: Mapping[str, Any]) -> int:
    """Labels of a classification config, as ``transformers`` counts them (default 2).

    Args:
        config: a parsed ``config.json``.

    Returns:
        ``len(id2label)`` when it is a mapping, else ``num_labels``, else 2.
    """
    if isinstance(config.get("id2label"), dict):
        return len(config["id2label"])
    return int(config.get("num_labels", 2))


def check_output(out: Path, *, force: bool) -> None:
    """Checks that ``out`` can be written: a missing or empty folder (any folder with ``force``).

    Args:
        out: the output folder.
        force: allow a non-empty folder (it is replaced once the export succeeds).

    Raises:
        ExportError: ``out`` is a file, is not empty without ``force``, or its parent is missing
            or not writable.
    """
    if out.exists() and not out.is_dir():
        raise ExportError(f"output path exists and is not a folder: {out}")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ExportError(f"output folder {out} is not empty; use --force to replace it")
    parent = out.parent
    if not parent.is_dir():
        raise ExportError(f"the folder to write into does not exist: {parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ExportError(f"output folder {out} cannot be written (no write permission on {parent})")


def parse_dtypes(dtypes: str | Sequence[str] | None) -> list[str]:
    """The export dtypes asked for, in ``EXPORT_DTYPES`` order.

    Args:
        dtypes: a comma-separated string, a sequence of names, or None for all.

    Returns:
        The known dtype names, each once.

    Raises:
        ExportError: an unknown name, or none at all.
    """
    if dtypes is None:
        return list(EXPORT_DTYPES)
    if isinstance(dtypes, str):
        dtypes = [d.strip() for d in dtypes.split(",") if d.strip()]
    unknown = [d for d in dtypes if d not in EXPORT_DTYPES]
    if unknown or not dtypes:
        raise ExportError(
            f"unknown export dtype(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(EXPORT_DTYPES)}"
        )
    return [d for d in EXPORT_DTYPES if d in dtypes]


# -- export -----------------------------------------------------------------------------------------


def export_checkpoint(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    dtypes: str | Sequence[str] | None = None,
    force: bool = False,
    verify: bool = True,
    revision: str | None = None,
    log: Log = _quiet,
) -> ExportResult:
    """Export ``source`` (checkpoint folder or Hub id) to ``out`` in the published layout.

    Raises :class:`ExportError` for bad input, a failed write (disk full, permissions) or an fp32
    variant that does not match the checkpoint; ``out`` is then left as it was.

    Args:
        source: a checkpoint folder or Hub id.
        out: the output folder.
        dtypes: the variants to write (see :func:`parse_dtypes`); default all.
        force: replace a non-empty ``out``.
        verify: check the variants against the PyTorch checkpoint before moving them into place.
        revision: the Hub revision of ``source``.
        log: called with one line per step.

    Returns:
        The files written, the seconds per step and the verification report.

    Raises:
        ExportError: see above.
    """
    wanted = parse_dtypes(dtypes)
    out = Path(os.path.expanduser(str(out))).absolute()
    check_output(out, force=force)
    checkpoint = resolve_source(source, revision=revision)
    config = check_checkpoint(checkpoint)
    try:
        work = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    except OSError as exc:
        raise ExportError(f"cannot write into {out.parent}: {exc.strerror or exc}") from None
    result = ExportResult(out=out)
    try:
        _export_into(checkpoint, config, work, wanted, result, log)
        if verify:
            from .verify import verify_model

            started = time.perf_counter()
            log("verifying against the PyTorch checkpoint")
            report = verify_model(
                work,
                reference=checkpoint,
                report_path=work / REPORT_NAME,
                source=_source_label(source),
                model_label=str(out),
            )
            result.seconds["verify"] = time.perf_counter() - started
            result.report = report
            if not report["ok"]:
                raise ExportError(f"verification failed: {report['summary']}")
            # Verification ran the runtime's fast path, which caches score graphs next to the
            # variants; they are derived files (rebuilt on a user's first load), not part of the
            # published layout.
            for derived in (work / "onnx").glob("*.score.*"):
                derived.unlink()
        _move_into_place(work, out)
    except OSError as exc:
        shutil.rmtree(work, ignore_errors=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise ExportError(f"disk full while writing the export next to {out}; nothing was written") from None
        raise ExportError(f"cannot write the export to {out}: {exc.strerror or exc}") from None
    except BaseException as exc:
        shutil.rmtree(work, ignore_errors=True)
        if "No space left on device" in str(exc):  # some writers wrap ENOSPC in their own error
            raise ExportError(f"disk full while writing the export next to {out}; nothing was written") from None
        raise
    result.files = {str(p.relative_to(out)): p.stat().st_size for p in sorted(out.rglob("*")) if p.is_file()}
    return result


def _source_label(source: str | os.PathLike[str]) -> str:
    """A local folder as an absolute path (so ``verify`` finds it later), a Hub id as it is."""
    path = Path(os.path.expanduser(str(source)))
    return str(path.resolve()) if path.exists() else str(source)


def _move_into_place(work: Path, out: Path) -> None:
    trash = None
    if out.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, trash / out.name)
    os.replace(work, out)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


def _timed(result: ExportResult, step: str, log: Log) -> AbstractContextManager[None]:
    class _Timer(AbstractContextManager[None]):
        def __enter__(self) -> None:
            log(f"{step} ...")
            self.start = time.perf_counter()

        def __exit__(
            self,
            *exc: type[BaseException] | BaseException | TracebackType | None,
        ) -> Literal[False]:  # never swallows an exception
            result.seconds[step] = time.perf_counter() - self.start
            if exc[0] is None:
                log(f"{step}: {result.seconds[step]:.1f} s")
            return False

    return _Timer()


def _export_into(
    checkpoint: Path, config: Mapping[str, Any], work: Path, wanted: list[str], result: ExportResult, log: Log
) -> None:
    import onnx

    for name in COPIED_FILES:
        if (checkpoint / name).is_file():
            shutil.copyfile(checkpoint / name, work / name)
    onnx_dir = work / "onnx"
    onnx_dir.mkdir()
    scratch = work / ".scratch"
    scratch.mkdir()
    fp32_path = onnx_dir / DTYPE_FILES["fp32"] if "fp32" in wanted else scratch / "model.onnx"

    with _timed(result, "export fp32 (torch.onnx)", log):
        _export_fp32(checkpoint, fp32_path)

    num_heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or num_heads)
    hidden = int(config["hidden_size"])
    if {"fp16", "q8", "q4"} & set(wanted):
        # One large model in memory at a time: each step reads the previous one's file.
        optimized_path = scratch / "model_optimized.onnx"
        with _timed(result, "optimize (onnxruntime.transformers)", log):
            from onnxruntime.transformers.optimizer import optimize_model

            optimized = optimize_model(
                str(fp32_path), model_type="qwen3", num_heads=num_heads, hidden_size=hidden, opt_level=0
            ).model
            fold_transposed_initializers(optimized.graph, fp32_path.parent)
            if not any(op.domain == "com.microsoft" for op in optimized.opset_import):
                optimized.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
            _save(optimized, optimized_path, external=True)
            del optimized
            gc.collect()
        if "fp16" in wanted:
            with _timed(result, "convert fp16 (onnxruntime.transformers.float16)", log):
                from onnxruntime.transformers.float16 import convert_float_to_float16

                # Shape inference through the file: in memory it stops at protobuf's 2 GB limit.
                inferred_path = scratch / "model_inferred.onnx"
                onnx.shape_inference.infer_shapes_path(str(optimized_path), str(inferred_path))
                fp16 = onnx.load(str(inferred_path))
                fp16 = convert_float_to_float16(
                    fp16,
                    max_finite_val=FP16_MAX,
                    keep_io_types=False,
                    disable_shape_infer=True,
                    node_block_list=_rope_nodes(fp16),
                )
                _save(fp16, onnx_dir / DTYPE_FILES["fp16"])
                del fp16
                gc.collect()
                inferred_path.unlink()
        if {"q8", "q4"} & set(wanted):
            with _timed(result, "fuse GroupQueryAttention", log):
                from .gqa import fuse_group_query_attention

                fused = onnx.load(str(optimized_path))
                fuse_group_query_attention(fused, num_heads=num_heads, kv_num_heads=kv_heads)
                fused_path = scratch / "model_gqa.onnx"
                _save(fused, fused_path, external=True)
                del fused
                gc.collect()
            keep_float = (
                _score_head_nodes(onnx.load(str(fused_path), load_external_data=False)) if is_seq_cls(config) else []
            )
            if "q8" in wanted:
                with _timed(result, "quantize q8 (quantize_dynamic)", log):
                    _quantize_q8(fused_path, onnx_dir / DTYPE_FILES["q8"], scratch, exclude=keep_float)
            if "q4" in wanted:
                with _timed(result, "quantize q4 (MatMulNBitsQuantizer)", log):
                    _quantize_q4(fused_path, onnx_dir / DTYPE_FILES["q4"], exclude=keep_float)
    shutil.rmtree(scratch)


def _export_fp32(checkpoint: Path, path: Path) -> None:
    from .torch_export import export_model, load_checkpoint

    try:
        model = load_checkpoint(checkpoint)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ExportError(f"cannot load the checkpoint {checkpoint} with transformers: {first}") from None
    try:
        export_model(model, path, with_past=True)
    finally:
        del model
        gc.collect()


def _save(model: onnx.ModelProto, path: Path, *, external: bool | None = None) -> None:
    """Save, with the weights in ``<name>_data`` when the model is past protobuf's limit."""
    import onnx

    if external is None:
        external = _weights_bytes(model) > PROTOBUF_LIMIT
    if external:
        save_with_external_data(model, path)
    else:
        path.with_name(path.name + "_data").unlink(missing_ok=True)
        onnx.save_model(model, str(path))


def _weights_bytes(model: onnx.ModelProto) -> int:
    return sum(len(t.raw_data) for t in model.graph.initializer) + sum(
        len(a.t.raw_data) for n in model.graph.node for a in n.attribute if a.type == a.TENSOR
    )


def _rope_nodes(model: onnx.ModelProto) -> list[str]:
    """Nodes from ``position_ids`` to the rotary ``Cos``/``Sin``: kept in fp32 (positions > 2048 are not
    exact in fp16)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    names: set[str] = set()
    stack = [n for n in model.graph.node if n.op_type in ("Cos", "Sin")]
    while stack:
        node = stack.pop()
        if node.name in names:
            continue
        names.add(node.name)
        for name in node.input:
            parent = producer.get(name)
            if parent is not None:
                stack.append(parent)
    return sorted(names)


def _score_head_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the MatMul/Gemm nodes that make ``logits`` (a sequence classifier's score head)."""
    names = [n.name for n in model.graph.node if n.op_type in ("MatMul", "Gemm") and "logits" in n.output]
    if len(names) != 1 or not names[0]:
        raise ExportError("cannot find the score head (one named MatMul making 'logits') in the exported graph")
    return names


def _quantize_q8(src: Path, dst: Path, scratch: Path, *, exclude: Sequence[str] = ()) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = scratch / "model_quantized.onnx"
    quantize_dynamic(
        str(src),
        str(tmp),
        op_types_to_quantize=["MatMul", "Gemm"],
        weight_type=QuantType.QInt8,
        per_channel=False,
        reduce_range=False,
        use_external_data_format=True,
        nodes_to_exclude=list(exclude),
        extra_options={"MatMulConstBOnly": True},
    )
    _save(onnx.load(str(tmp)), dst)


def _quantize_q4(src: Path, dst: Path, *, exclude: Sequence[str] = ()) -> None:
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    model = onnx.load(str(src))
    quantizer = MatMulNBitsQuantizer(
        model, bits=4, block_size=Q4_BLOCK_SIZE, is_symmetric=True, nodes_to_exclude=list(exclude)
    )
    quantizer.process()
    _save(quantizer.model.model, dst)
