"""Build the score graphs of a model ahead of time (``qwen3-rerank optimize``).

A :class:`~qwen3_rerank.Reranker` builds a variant's score graph on its first load and caches it;
an image that is built once and then run many times (or mounted read-only) builds them here
instead, so that no start pays for it.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import InputError, ModelLoadError
from .files import available_dtypes, resolve_model
from .prompt_tokenizer import PromptTokenizer
from .score_graph import ensure_score_graph, score_graph_record


def build_score_graphs(model: str | os.PathLike[str], dtype: str | None = None) -> list[dict[str, str | None]]:
    """Build (or find cached) the score graph of every variant of ``model``, or of ``dtype`` only.

    Args:
        model: a model folder in the published layout, or a Hub repo id.
        dtype: one variant; required for a Hub id (only that variant is downloaded).

    Returns:
        One record per variant: ``{"dtype", "score_graph", "source_sha256", "output"}`` (the
        score graph's output kind: the yes/no pair of a causal model, or a seq-cls logit).

    Raises:
        InputError: a Hub id without ``dtype``.
        ModelLoadError: the folder has no ONNX files, or a file cannot be read or converted.
    """
    if dtype:
        dtypes = [dtype]
    elif Path(model).is_dir():
        dtypes = available_dtypes(Path(model))
        if not dtypes:
            raise ModelLoadError(f"{model} has no onnx/ model files")
    else:
        raise InputError("give a dtype for a Hub repo id (only that variant is downloaded)")
    records = []
    for name in dtypes:
        files = resolve_model(model, name)
        tokenizer = PromptTokenizer.from_file(files.tokenizer, pad_token=files.pad_token)
        path = ensure_score_graph(files.onnx, tokenizer.yes_id, tokenizer.no_id)
        record = score_graph_record(path)
        records.append(
            {
                "dtype": name,
                "score_graph": str(path),
                "source_sha256": record.get("source_sha256"),
                "output": record.get("output"),
            }
        )
    return records
