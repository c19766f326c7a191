"""Score graphs for a resolved model: the one place that builds them, at load or ahead of time.

A :class:`~qwen3_rerank.Reranker` builds a variant's score graph on its first load and caches it
(:func:`score_graph_for`, falling back to the full graph with a warning when none can be made);
``qwen3-rerank optimize`` (:func:`build_score_graphs`) builds them ahead of time, for an image
that is built once and then run many times (or mounted read-only), and fails loudly instead.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .errors import InputError, ModelLoadError
from .files import ModelFiles, available_dtypes, resolve_model
from .prompt_tokenizer import PromptTokenizer
from .score_graph import (
    ACTIVATION_MODES,
    DEFAULT_ACTIVATIONS,
    DEFAULT_HEAD,
    HEAD_MODES,
    ScoreGraph,
    ScoreGraphError,
    ensure_score_graph,
)

log = logging.getLogger("qwen3_rerank")


def score_graph_for(
    files: ModelFiles,
    tokenizer: PromptTokenizer,
    *,
    activations: str = DEFAULT_ACTIVATIONS,
    head: str = DEFAULT_HEAD,
    fallback: bool = True,
    cache: str | os.PathLike[str] | None = None,
    into_cache: bool = False,
) -> ScoreGraph | None:
    """The score graph of ``files.onnx`` for ``tokenizer``'s yes/no ids, built on first use.

    Args:
        files: the resolved model.
        tokenizer: its prompt tokenizer (the ids of "yes" and "no" are sliced out of ``lm_head``).
        activations: see ``q8_activations`` of :meth:`~qwen3_rerank.Reranker.from_pretrained`.
        head: see ``yes_no_head`` there.
        fallback: when the graph cannot be built or written, log one warning and return ``None``
            (the caller runs the full graph, which gives the same scores, slower) instead of raising.
        cache: the score-graph cache folder, used when the model folder is not writable
            (default: ``$QWEN3_RERANK_CACHE``, else the platform's user cache directory).
        into_cache: look in and build into ``cache`` only (see
            :func:`~qwen3_rerank.score_graph.ensure_score_graph`).

    Returns:
        The score graph's record, or ``None`` (only with ``fallback``).

    Raises:
        InputError: an unknown ``activations`` or ``head``.
        ModelLoadError: (without ``fallback``) the graph cannot be built or written.
    """
    if activations not in ACTIVATION_MODES:
        raise InputError(f"q8_activations must be one of {', '.join(ACTIVATION_MODES)}, got {activations!r}")
    if head not in HEAD_MODES:
        raise InputError(f"yes_no_head must be one of {', '.join(HEAD_MODES)}, got {head!r}")
    source = files.onnx
    try:
        return ensure_score_graph(
            source,
            tokenizer.yes_id,
            tokenizer.no_id,
            activations=activations,
            head=head,
            cache=cache,
            into_cache=into_cache,
        )
    except (ScoreGraphError, OSError, ImportError) as exc:
        if not fallback:
            if isinstance(exc, ModelLoadError):
                raise
            raise ModelLoadError(f"cannot write the score graph of {source}: {_first_line(exc)}") from None
        log.warning("qwen3-rerank: using the full graph of %s: no score graph (%s)", source.name, _first_line(exc))
        return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def build_score_graphs(
    model: str | os.PathLike[str], dtype: str | None = None, cache: str | os.PathLike[str] | None = None
) -> list[dict[str, str | None]]:
    """Build (or find cached) the score graph of every variant of ``model``, or of ``dtype`` only.

    Args:
        model: a model folder in the published layout, or a Hub repo id.
        dtype: one variant; required for a Hub id (only that variant is downloaded).
        cache: build into this score-graph cache folder instead of beside the model (for an image
            built once whose model folder is mounted read-only later: point ``QWEN3_RERANK_CACHE``
            or ``score_graph_cache`` at it when loading).

    Returns:
        One record per variant: ``{"dtype", "score_graph", "source_sha256", "output"}`` (the
        score graph's output kind: the yes/no pair of a causal model, or a seq-cls logit).

    Raises:
        InputError: a Hub id without ``dtype``.
        ModelLoadError: the folder has no ONNX files, or a file cannot be read, converted or written.
    """
    if dtype:
        dtypes = [dtype]
    elif Path(model).is_dir():
        dtypes = available_dtypes(Path(model))
        if not dtypes:
            raise ModelLoadError(f"{model} has no onnx/ model files")
    else:
        raise InputError("give a dtype for a Hub repo id (only that variant is downloaded)")
    records: list[dict[str, str | None]] = []
    for name in dtypes:
        files = resolve_model(model, name)
        tokenizer = PromptTokenizer.from_file(files.tokenizer, pad_token=files.pad_token)
        graph = score_graph_for(files, tokenizer, fallback=False, cache=cache, into_cache=cache is not None)
        if graph is None:  # not reached: without fallback a failure raises
            raise ModelLoadError(f"no score graph for {files.onnx}")
        records.append(
            {
                "dtype": name,
                "score_graph": str(graph.path),
                "source_sha256": graph.source_sha256,
                "output": graph.output,
            }
        )
    return records
