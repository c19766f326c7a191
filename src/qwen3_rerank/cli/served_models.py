"""``serve --model [NAME=]SOURCE[:DTYPE]``: which models a server runs, under which names.

The rule for one spec, in order (a path may rarely hold ``=`` or ``:``, a Hub id never does):

1. A spec that names an existing file or folder as a whole is that path, nothing else: every
   form that worked before several models could be served still means what it meant.
2. ``NAME=REST``: the text before the first ``=`` is the served name when it is a valid name
   (:data:`NAME_PATTERN`: a letter or digit, then letters, digits and ``._-/:@+``); otherwise the
   whole spec is the source (``/runs/lr=3e-4/model`` stays a path).
3. ``SOURCE:DTYPE``: when REST is not an existing path and its text after the last ``:`` is one
   of the known dtypes (:data:`~qwen3_rerank.files.DTYPES`), that is this model's dtype; any other
   text after a ``:`` is an error (a Hub id has no ``:``, so it can only be a mistyped dtype).
   Without it, the model has ``--dtype``.

A model without a name is served under the name it always had: ``--served-model-name``, or its
folder's name, or its Hub id. The first model is the default, for requests that name none.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..files import DTYPES
from ..reranker import Reranker
from .options import UsageError

log = logging.getLogger("qwen3_rerank.server")

#: what a served model's name may be: what clients send as ``model`` (``rerank-v3.5``,
#: ``BAAI/bge-reranker``, ``qwen3:0.6b``), never blank, never with ``=`` or spaces
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-/:@+]{0,127}")


@dataclass(frozen=True)
class ModelSpec:
    """One model to load and serve.

    Attributes:
        name: the name clients give as ``model`` (unique in one server).
        source: a local folder or a Hub repo id.
        dtype: the model variant (one of :data:`~qwen3_rerank.files.DTYPES`).
        options: the other keyword arguments of :meth:`Reranker.from_pretrained` (shared by
            every model of a server: device, threads, lengths, batching, template).
    """

    name: str
    source: str
    dtype: str
    options: dict[str, Any] = field(default_factory=dict)

    def load(self) -> Reranker:
        """The loaded model."""
        return Reranker.from_pretrained(self.source, dtype=self.dtype, **self.options)


def parse_spec(text: str, default_dtype: str, exists: Callable[[str], bool] | None = None) -> ModelSpec:
    """One ``[NAME=]SOURCE[:DTYPE]`` spec, by the module's rule (its name '' when not given).

    Args:
        text: the spec as given.
        default_dtype: the dtype of a spec without ``:DTYPE`` (``--dtype``).
        exists: whether a path exists (default: on this machine; a test passes its own).

    Raises:
        UsageError: an empty spec, name or source, or a text after the last ``:`` that is not a dtype.
    """
    on_disk = exists if exists is not None else (lambda path: Path(path).exists())
    if not text.strip():
        raise UsageError("--model: empty model spec; expected [NAME=]PATH_OR_HUB_ID[:DTYPE]")
    if on_disk(text):
        return ModelSpec("", text, default_dtype)
    name, equals, rest = text.partition("=")
    if not equals or not NAME_PATTERN.fullmatch(name):
        if equals and not name:
            raise UsageError(f"--model {text!r}: empty name before '='; expected NAME=PATH_OR_HUB_ID[:DTYPE]")
        name, rest = "", text
    if not rest:
        raise UsageError(f"--model {text!r}: nothing after '='; expected NAME=PATH_OR_HUB_ID[:DTYPE]")
    source, colon, suffix = rest.rpartition(":")
    if not colon or on_disk(rest):
        return ModelSpec(name, rest, default_dtype)
    if suffix not in DTYPES:
        raise UsageError(
            f"--model {text!r}: {suffix!r} after the last ':' is not a dtype; choose one of: {', '.join(DTYPES)} "
            "(a path with ':' in it must exist)"
        )
    if not source:
        raise UsageError(f"--model {text!r}: no model before ':{suffix}'")
    return ModelSpec(name, source, suffix)


def env_specs(value: str, exists: Callable[[str], bool] | None = None) -> list[str]:
    """``QWEN3_RERANK_MODEL``'s specs: comma-separated, unless the whole value is an existing path."""
    on_disk = exists if exists is not None else (lambda path: Path(path).exists())
    if on_disk(value):
        return [value]
    return [part.strip() for part in value.split(",") if part.strip()]


def model_specs(
    texts: Sequence[str],
    *,
    dtype: str,
    served_model_name: str | None,
    options: Mapping[str, Any],
    exists: Callable[[str], bool] | None = None,
) -> list[ModelSpec]:
    """The models of ``serve``, the default first, each named and with its own dtype.

    Args:
        texts: the ``--model`` specs (at least one).
        dtype: ``--dtype``, for the specs that give none.
        served_model_name: ``--served-model-name`` (only for a server of one model).
        options: the other :meth:`Reranker.from_pretrained` options, shared by every model.
        exists: whether a path exists (default: on this machine).

    Raises:
        UsageError: a bad spec, an invalid or duplicate name, or ``--served-model-name`` with a
            name given otherwise or with several models.
    """
    on_disk = exists if exists is not None else (lambda path: Path(path).exists())
    parsed = [parse_spec(text, dtype, on_disk) for text in texts]
    if served_model_name is not None:
        if len(parsed) > 1:
            raise UsageError(
                "--served-model-name names the only model; with several --model, name each one: --model NAME=..."
            )
        if parsed[0].name:
            raise UsageError(
                f"--model names the model {parsed[0].name!r} and --served-model-name {served_model_name!r}: "
                "give one name"
            )
    specs: list[ModelSpec] = []
    seen: dict[str, str] = {}
    for spec, text in zip(parsed, texts, strict=True):
        name = spec.name or served_model_name or (Path(spec.source).name if on_disk(spec.source) else spec.source)
        if name in seen:
            raise UsageError(
                f"two models are served as {name!r} ({seen[name]!r} and {text!r}): give each a distinct NAME= prefix"
            )
        seen[name] = text
        specs.append(ModelSpec(name, spec.source, spec.dtype, dict(options)))
    return specs


def load_models(specs: Sequence[ModelSpec]) -> dict[str, Reranker]:
    """Load each model in turn, logging how long it took and how much resident memory it added.

    Returns:
        Name → loaded :class:`~qwen3_rerank.Reranker`, in the order given (the default first).

    Raises:
        RerankError: a model that cannot be loaded (a load error names the model, when several).
    """
    from ..errors import ModelLoadError
    from ..server.memory import growth, resident_bytes

    loaded: dict[str, Reranker] = {}
    done: dict[tuple[str, str], str] = {}
    for spec in specs:
        if (spec.source, spec.dtype) in done:
            log.warning(
                "model %s is the same files as %s (%s, %s): loaded twice, it takes its memory twice",
                spec.name,
                done[spec.source, spec.dtype],
                spec.source,
                spec.dtype,
            )
        done.setdefault((spec.source, spec.dtype), spec.name)
        log.info("loading model %s: %s (%s) on %s", spec.name, spec.source, spec.dtype, spec.options.get("device"))
        before = resident_bytes()
        began = time.perf_counter()
        try:
            loaded[spec.name] = spec.load()
        except ModelLoadError as exc:
            if len(specs) == 1:
                raise
            raise ModelLoadError(f"model {spec.name}: {exc}") from exc
        log.info(
            "model %s loaded in %.1f s; %s", spec.name, time.perf_counter() - began, growth(before, resident_bytes())
        )
    return loaded
