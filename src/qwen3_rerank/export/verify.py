"""``verify_model``: score a fixed probe set with every ONNX variant and with the PyTorch checkpoint.

The ONNX side runs through :class:`qwen3_rerank.Reranker` itself, so batches are left-padded the
way the runtime pads them (the probe documents differ a lot in length on purpose). The PyTorch side
tokenizes the probes with the checkpoint's own ``transformers`` tokenizer the way the reference
recipe does (padding and truncation set on the call, so no state saved in ``tokenizer.json``
counts) and runs the checkpoint on those ids, one pair at a time and unpadded, so neither the
tokenization nor the padding and mask code is shared with what is checked. Token ids that differ
from the recipe's fail the verification on their own.

Per variant the report has the max and mean |Δ| of the yes−no logit gap, whether every score is
finite, the Spearman rank correlation per query (mean and minimum) and the share of queries whose
top-1 document agrees with PyTorch. fp32 must be within ``FP32_TOLERANCE``; the others are
reported, not judged (their error depends on the weights).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from ..errors import RerankError
from ..files import available_dtypes

FP32_TOLERANCE = 1e-4

#: The verification report, a JSON object (values of mixed types: numbers, strings, flags, nested objects).
Report: TypeAlias = "dict[str, Any]"

PROBES: list[tuple[str, list[str]]] = [
    (
        "What is the capital of France?",
        [
            "Paris is the capital and most populous city of France.",
            "Berlin is the capital of Germany.",
            "France is a country in Western Europe with a long history, many regions, several overseas "
            "territories and a capital on the Seine that has been the seat of government for centuries.",
            "Lyon.",
            "The Eiffel Tower was built for the 1889 World's Fair.",
        ],
    ),
    (
        "how do vaccines work",
        [
            "Vaccines train the immune system to recognise a pathogen without causing the disease.",
            "A vaccine contains an antigen, such as a weakened virus or a piece of its protein, and the "
            "body responds by making antibodies and memory cells that act quickly on a later infection.",
            "Stock markets fell sharply on Monday.",
            "immune",
        ],
    ),
    (
        "Python list comprehension example",
        [
            "squares = [x * x for x in range(10)]",
            "In Python, a list comprehension builds a list from an iterable in one expression.",
            "Java streams can map and filter collections.",
            "def f(x):\n    return [i for i in x if i % 2 == 0]\n",
        ],
    ),
    (
        "東京の人口は？",
        [
            "東京都の人口は約1400万人です。",
            "大阪は日本第二の都市です。",
            "Tokyo has a population of about 14 million people.",
            "🙂",
        ],
    ),
    (
        "symptoms of dehydration",
        [
            "Thirst, dark urine, fatigue, dizziness and confusion are common signs of dehydration.",
            "Drink water.",
            "The Sahara is the largest hot desert in the world, covering much of North Africa, where "
            "rain is rare and temperatures in summer often pass forty degrees Celsius during the day.",
            "Dehydration occurs when the body loses more fluid than it takes in.",
        ],
    ),
]


class VerifyError(RerankError):
    """The model folder or the reference checkpoint cannot be verified."""


def _spearman(a: list[float], b: list[float]) -> float:
    def ranks(values: list[float]) -> npt.NDArray[np.float64]:
        order = sorted(range(len(values)), key=lambda i: values[i])
        out = [0.0] * len(values)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
                j += 1
            for k in range(i, j + 1):
                out[order[k]] = (i + j) / 2.0
            i = j + 1
        return np.array(out)

    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return 1.0 if ra.std() == rb.std() else 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def reference_token_ids(reference: Path, contents: list[str], max_length: int) -> list[list[int]]:
    """Prompt ids of ``contents`` as the reference recipe builds them with ``transformers``.

    Args:
        reference: the checkpoint folder (its own tokenizer is used).
        contents: formatted (query, document) contents, see :func:`qwen3_rerank.prompt.format_content`.
        max_length: the whole prompt's token budget; the content is truncated to what the prefix
            and suffix leave.

    Returns:
        prefix + content + suffix token ids per content.

    Raises:
        VerifyError: the reference tokenizer cannot be loaded.
    """
    from transformers import AutoTokenizer

    from ..prompt import PREFIX, SUFFIX

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(reference))
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise VerifyError(f"cannot load the tokenizer of the reference checkpoint {reference}: {first}") from None
    prefix = tokenizer.encode(PREFIX, add_special_tokens=False)
    suffix = tokenizer.encode(SUFFIX, add_special_tokens=False)
    encoded = tokenizer(
        contents,
        padding=False,
        truncation="longest_first",
        return_attention_mask=False,
        max_length=max_length - len(prefix) - len(suffix),
    )
    return [prefix + list(ids) + suffix for ids in encoded["input_ids"]]


def _reference_kind(reference: Path) -> str:
    """``"seq_cls"`` for a ``Qwen3ForSequenceClassification`` checkpoint, else ``"causal"``."""
    from .source import is_seq_cls

    try:
        config = json.loads((reference / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "causal"  # the loader below says what is wrong with the folder
    return "seq_cls" if isinstance(config, dict) and is_seq_cls(config) else "causal"


def reference_gaps(reference: Path, sequences: list[list[int]], yes_id: int, no_id: int) -> list[float]:
    """yes−no logit gaps of the PyTorch checkpoint, one unpadded sequence at a time, float64.

    A causal checkpoint gives ``logit[yes] - logit[no]`` at the last position; a one-label
    ``Qwen3ForSequenceClassification`` gives its own pooled logit (transformers pools it at the
    last real token), which is that gap by construction of the conversion.

    Args:
        reference: the checkpoint folder.
        sequences: token ids, one prompt each.
        yes_id: the token id of "yes" (causal checkpoints).
        no_id: the token id of "no" (causal checkpoints).

    Returns:
        One gap per sequence.

    Raises:
        VerifyError: the checkpoint cannot be loaded.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    seq_cls = _reference_kind(reference) == "seq_cls"
    auto = AutoModelForSequenceClassification if seq_cls else AutoModelForCausalLM
    try:
        model = auto.from_pretrained(str(reference), dtype=torch.float32).eval()
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise VerifyError(f"cannot load the reference checkpoint {reference}: {first}") from None
    gaps: list[float] = []
    with torch.no_grad():
        for ids in sequences:
            logits = model(input_ids=torch.tensor([ids])).logits
            if seq_cls:  # pooled: [1, num_labels]
                gaps.append(float(logits[0, 0].double()))
            else:
                last = logits[0, -1].double()
                gaps.append(float(last[yes_id] - last[no_id]))
    del model
    return gaps


def verify_model(
    model_dir: str | os.PathLike[str],
    *,
    reference: str | os.PathLike[str] | None = None,
    dtypes: list[str] | None = None,
    report_path: str | os.PathLike[str] | None = None,
    source: str | None = None,
    threads: int | None = None,
    model_label: str | None = None,
) -> Report:
    """Check every ONNX variant in ``model_dir`` against the checkpoint ``reference``.

    Writes the report as JSON to ``report_path`` (default ``model_dir/export_report.json``) and
    returns it; ``report["ok"]`` is false when fp32 is off or any score is not finite.

    Args:
        model_dir: the exported model folder.
        reference: the checkpoint folder or Hub id; default: the ``source`` recorded in the
            folder's ``export_report.json``.
        dtypes: the variants to check; default: every one present.
        report_path: where to write the report.
        source: the ``source`` to record in the report (default: ``reference``).
        threads: ONNX Runtime threads.
        model_label: the ``model`` to record (default: ``model_dir``'s absolute path).

    Returns:
        The report.

    Raises:
        VerifyError: the folder or a requested variant is missing, there is no reference, the
            reference cannot be loaded, or the report cannot be written.
    """
    from ..prompt import format_content
    from ..reranker import Reranker

    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise VerifyError(f"model folder not found: {model_dir}")
    report_path = Path(report_path) if report_path else model_dir / "export_report.json"
    if reference is None:  # the checkpoint the export recorded
        reference = _recorded_source(model_dir / "export_report.json")
    if reference is None:
        raise VerifyError("no reference checkpoint: pass --reference SOURCE (a checkpoint folder or Hub id)")
    from .source import resolve_source

    reference_path = resolve_source(reference)
    present = available_dtypes(model_dir)
    dtypes = [d for d in (dtypes or present)]
    missing = [d for d in dtypes if d not in present]
    if missing or not dtypes:
        raise VerifyError(
            f"{model_dir} has no {', '.join(missing) or 'ONNX'} variant to verify "
            f"(it has: {', '.join(present) or 'none'})"
        )

    variants: dict[str, dict[str, object]] = {}
    sequences: list[list[int]] | None = None
    yes_id = no_id = 0  # set with sequences, from the first variant's tokenizer
    contents: list[str] = []
    max_length = 0
    onnx_gaps: dict[str, list[float]] = {}
    for dtype in dtypes:
        reranker = Reranker.from_pretrained(
            model_dir, dtype=dtype, threads=threads, batch_size=64, max_batch_tokens=1 << 16
        )
        if sequences is None:
            tok = reranker.tokenizer
            contents = [format_content(q, d) for q, docs in PROBES for d in docs]
            max_length = reranker.max_length
            sequences = tok.encode_contents(contents, max_length)
            yes_id, no_id = tok.yes_id, tok.no_id
        # every probe in one left-padded batch: the heaviest padding the probe set can give
        onnx_gaps[dtype] = reranker.score_pairs([(q, d) for q, docs in PROBES for d in docs], raw=True)
        del reranker
    assert sequences is not None  # dtypes is not empty (checked above), so the loop set it
    ref_sequences = reference_token_ids(reference_path, contents, max_length)
    ref = reference_gaps(reference_path, ref_sequences, yes_id, no_id)
    reference_class = (
        "Qwen3ForSequenceClassification (pooled logit)"
        if _reference_kind(reference_path) == "seq_cls"
        else "causal LM (yes − no)"
    )

    ok = True
    problems: list[str] = []
    ids_match = [list(a) == list(b) for a, b in zip(sequences, ref_sequences, strict=True)]
    if not all(ids_match):
        ok = False
        problems.append(
            f"token ids differ from the reference recipe's for {ids_match.count(False)} of {len(ids_match)} probes"
        )
    for dtype in dtypes:
        gaps = onnx_gaps[dtype]
        finite = all(math.isfinite(g) for g in gaps)
        diffs = [abs(a - b) for a, b in zip(gaps, ref, strict=True)] if finite else [math.inf]
        max_diff = max(diffs)
        entry: dict[str, object] = {
            "file": f"onnx/{_file(dtype)}",
            "max_abs_gap_diff": max_diff,
            "mean_abs_gap_diff": sum(diffs) / len(diffs),
            "all_finite": finite,
        }
        if dtype != "fp32":
            spearman: list[float] = []
            top1: list[bool] = []
            start = 0
            for _, docs in PROBES:
                a, b = gaps[start : start + len(docs)], ref[start : start + len(docs)]
                start += len(docs)
                spearman.append(_spearman(a, b) if finite else float("nan"))
                top1.append(int(np.argmax(a)) == int(np.argmax(b)) if finite else False)
            entry["spearman_mean"] = float(np.mean(spearman))
            entry["spearman_min"] = float(np.min(spearman))
            entry["top1_agreement"] = sum(top1) / len(top1)
        else:
            entry["tolerance"] = FP32_TOLERANCE
            within = finite and max_diff <= FP32_TOLERANCE
            entry["within_tolerance"] = within
            if not within:
                ok = False
                problems.append(f"fp32 max |Δgap| {max_diff:.3g} > {FP32_TOLERANCE:g}")
        if not finite:
            ok = False
            problems.append(f"{dtype} gives non-finite scores")
        variants[dtype] = entry

    report: Report = {
        "model": model_label or str(model_dir.resolve()),
        "source": source if source is not None else str(reference),
        "reference": f"PyTorch (transformers) {reference_class} fp32, the recipe's own token ids, one pair at a time, "
        "unpadded",
        "token_ids_match_reference": all(ids_match),
        "probe_queries": len(PROBES),
        "probe_pairs": len(ref),
        "probe_lengths": {"min": min(map(len, sequences)), "max": max(map(len, sequences))},
        "variants": variants,
        "ok": ok,
        "summary": "; ".join(problems) if problems else "all checks passed",
    }
    try:
        report_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise VerifyError(f"cannot write {report_path}: {exc.strerror or exc}") from None
    return report


def _file(dtype: str) -> str:
    from ..files import DTYPE_FILES

    return DTYPE_FILES[dtype]


def _recorded_source(report_path: Path) -> str | None:
    try:
        source = json.loads(report_path.read_text(encoding="utf-8")).get("source")
    except (OSError, ValueError, AttributeError):
        return None
    return source if isinstance(source, str) else None  # a non-string "source" is no checkpoint
