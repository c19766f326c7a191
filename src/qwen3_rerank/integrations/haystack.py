"""Haystack 2.x component: rerank retrieved ``Document`` objects with Qwen3-Reranker.

    from haystack import Pipeline
    from haystack.components.retrievers.in_memory import InMemoryBM25Retriever
    from qwen3_rerank.integrations.haystack import Qwen3Ranker

    pipeline = Pipeline()
    pipeline.add_component("retriever", InMemoryBM25Retriever(document_store=store, top_k=20))
    pipeline.add_component("ranker", Qwen3Ranker(top_k=3))
    pipeline.connect("retriever.documents", "ranker.documents")
    pipeline.run({"retriever": {"query": query}, "ranker": {"query": query}})

Returned documents are copies, best first, each with the reranker's probability as its ``score``.
The model is loaded in :meth:`Qwen3Ranker.warm_up` (a pipeline calls it before its first run, and
``run`` calls it too), so building and serializing a pipeline never loads a model.
"""

# No ``from __future__ import annotations`` here: older Haystack 2 releases (2.9 among them) compare
# ``run``'s annotations unresolved, and would refuse to connect a retriever's ``list[Document]`` output
# to the string "list[Document]".
import os
from dataclasses import replace
from typing import Any

from .._extras import require

require("haystack", "haystack", "the Haystack integration")

from haystack import Document, component, default_from_dict, default_to_dict  # noqa: E402
from haystack.utils import Secret, deserialize_secrets_inplace  # noqa: E402

from ..files import DEFAULT_DTYPE, DEFAULT_MODEL  # noqa: E402
from ..reranker import Reranker  # noqa: E402


def _check_top_k(top_k: int | None) -> None:
    """Reject a ``top_k`` that is not ``None`` or a positive integer, as Haystack's rankers do.

    Raises:
        ValueError: ``top_k`` is below 1, a bool or not an integer.
    """
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be a positive integer or None, got {top_k!r}")


@component
class Qwen3Ranker:
    """Orders documents by their relevance to the query, as :meth:`Reranker.rerank` does.

    Each returned document is a copy of an input one (the inputs are not changed, as with
    Haystack's own rankers) whose ``score`` is the reranker's probability that it answers the query.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] = DEFAULT_MODEL,
        *,
        dtype: str = DEFAULT_DTYPE,
        device: str = "cpu",
        threads: int | None = None,
        top_k: int | None = 10,
        instruction: str | None = None,
        meta_fields_to_embed: list[str] | None = None,
        meta_data_separator: str = "\n",
        score_threshold: float | None = None,
        token: Secret | None = None,
        model_kwargs: dict[str, Any] | None = None,
    ) -> None:
        """Describe the ranker; the model is loaded later, by :meth:`warm_up`.

        Every argument is kept as given so that :meth:`to_dict` can write it to a pipeline file.

        Args:
            model: a local folder in the published layout, or a Hub repo id.
            dtype: which ONNX file (``fp32``, ``fp16``, ``q8``, ``q4``, ...), as in
                :meth:`Reranker.from_pretrained`.
            device: ``cpu``, ``cuda`` or ``cuda:N``.
            threads: ONNX Runtime intra-op threads (None: its own choice).
            top_k: how many documents to return (``None``: all of them, reordered); ``run`` can
                override it.
            instruction: the task instruction for the prompt (default: the model's web-search one).
            meta_fields_to_embed: metadata fields whose values are put before the content, one per
                line, in the text the reranker reads (Haystack's rankers' name for this).
            meta_data_separator: what joins those values and the content.
            score_threshold: drop documents whose probability is below it.
            token: a Hugging Face token for private or gated repos, as a Haystack ``Secret`` so that
                it is written to a pipeline file as an environment variable name, not a value
                (None: ``huggingface_hub``'s own lookup, e.g. ``HF_TOKEN``).
            model_kwargs: more keyword arguments of :meth:`Reranker.from_pretrained`
                (``max_length``, ``batch_size``, ``revision``, ``template``, ...).

        Raises:
            ValueError: ``top_k`` is not a positive integer or None, or ``model_kwargs`` repeats an
                argument that has its own parameter here.
        """
        _check_top_k(top_k)
        model_kwargs = dict(model_kwargs or {})
        clash = sorted({"model", "dtype", "device", "threads", "token"} & model_kwargs.keys())
        if clash:
            raise ValueError(f"pass {', '.join(clash)} as Qwen3Ranker arguments, not in model_kwargs")
        self.model = os.fspath(model)
        self.dtype = dtype
        self.device = device
        self.threads = threads
        self.top_k = top_k
        self.instruction = instruction
        self.meta_fields_to_embed = list(meta_fields_to_embed or [])
        self.meta_data_separator = meta_data_separator
        self.score_threshold = score_threshold
        self.token = token
        self.model_kwargs = model_kwargs
        self._reranker: Reranker | None = None

    @property
    def reranker(self) -> Reranker | None:
        """The loaded reranker, or None before :meth:`warm_up`."""
        return self._reranker

    def warm_up(self) -> None:
        """Load the model, once (later calls do nothing).

        A ``Pipeline`` calls it before running; loading here rather than in ``__init__`` keeps
        building, validating and serializing a pipeline cheap.

        Raises:
            ModelLoadError: the model cannot be found, downloaded or loaded.
        """
        if self._reranker is not None:
            return
        token = self.token.resolve_value() if self.token is not None else None
        self._reranker = Reranker.from_pretrained(
            self.model,
            dtype=self.dtype,
            device=self.device,
            threads=self.threads,
            token=token,
            **self.model_kwargs,
        )

    def to_dict(self) -> dict[str, Any]:
        """The component's init parameters, for a saved pipeline (YAML).

        Returns:
            Haystack's ``{"type": ..., "init_parameters": {...}}`` form; the token, if any, is
            written as the name of its environment variable (a token given as a plain value cannot
            be written, and Haystack raises).
        """
        return default_to_dict(
            self,
            model=self.model,
            dtype=self.dtype,
            device=self.device,
            threads=self.threads,
            top_k=self.top_k,
            instruction=self.instruction,
            meta_fields_to_embed=self.meta_fields_to_embed,
            meta_data_separator=self.meta_data_separator,
            score_threshold=self.score_threshold,
            token=self.token.to_dict() if self.token is not None else None,
            model_kwargs=self.model_kwargs,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Qwen3Ranker":
        """Rebuild the component from :meth:`to_dict`'s output (without loading the model).

        Args:
            data: the serialized component.

        Returns:
            A new, not yet warmed-up, ``Qwen3Ranker``.

        Raises:
            DeserializationError: ``data`` is not a serialized ``Qwen3Ranker``.
        """
        data = {**data, "init_parameters": dict(data.get("init_parameters", {}))}  # leave the caller's dict alone
        deserialize_secrets_inplace(data["init_parameters"], keys=["token"])
        return default_from_dict(cls, data)

    def _text(self, document: Document) -> str:
        """The text the reranker reads for ``document``: the chosen metadata values, then the content."""
        parts = [str(document.meta[k]) for k in self.meta_fields_to_embed if document.meta.get(k) is not None]
        parts.append(document.content or "")
        return self.meta_data_separator.join(parts)

    @component.output_types(documents=list[Document])
    def run(self, query: str, documents: list[Document], top_k: int | None = None) -> dict[str, list[Document]]:
        """The documents most relevant to ``query``, best first, each with its score.

        Loads the model first if :meth:`warm_up` has not (as Haystack's own components do), so a
        component used outside a pipeline works too.

        Args:
            query: the query.
            documents: the candidates; their content (with ``meta_fields_to_embed``) is scored.
            top_k: how many to return, for this call (None: the component's ``top_k``).

        Returns:
            ``{"documents": [...]}``: at most ``top_k`` copies of the inputs, best first (ties keep
            input order), with ``score`` set to the reranker's probability and, with a
            ``score_threshold``, none below it.

        Raises:
            ValueError: ``top_k`` is not a positive integer or None.
            InputError: the reranker rejects the input (see :meth:`Reranker.rerank`).
            ModelLoadError: the model cannot be loaded.
        """
        _check_top_k(top_k)
        if not documents:
            return {"documents": []}
        self.warm_up()
        assert self._reranker is not None  # set by warm_up
        results = self._reranker.rerank(
            query,
            [self._text(doc) for doc in documents],
            top_k=top_k if top_k is not None else self.top_k,
            instruction=self.instruction,
            return_documents=False,
        )
        if self.score_threshold is not None:
            results = [r for r in results if r.score >= self.score_threshold]
        return {"documents": [replace(documents[r.index], score=r.score) for r in results]}
