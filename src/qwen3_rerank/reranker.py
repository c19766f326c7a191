"""Public API: :class:`Reranker` scores (query, document) pairs with a Qwen3-Reranker ONNX model.

The Reranker is a facade: it checks a call's arguments, has a
:class:`~qwen3_rerank.request_builder.RequestBuilder` turn them into token sequences
(template, truncation, chunk windows, prefix-reuse marks), has a
:class:`~qwen3_rerank.model_runner.ModelRunner` score those (batch plans, prefix passes,
progress, stop checks) and shapes the answer (:mod:`~qwen3_rerank.results`).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from .chunking import DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_TOKENS, ChunkingOptions
from .engine import OnnxEngine
from .errors import InputError, ModelLoadError
from .files import DEFAULT_DTYPE, DEFAULT_MODEL, ModelFiles, resolve_model
from .layered import DEFAULT_SLICE_TOKENS
from .model_runner import ModelRunner, tqdm_progress
from .prebuild import score_graph_for
from .prompt import PromptTemplate
from .prompt_tokenizer import PromptTokenizer
from .request_builder import RequestBuilder, ScoringRequest, check_documents, check_text
from .results import RerankResult, ScoredDocument, best_first, scored_documents, sigmoid
from .truncation import Truncation

# Names other modules and users import from here (their homes are the modules above).
__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_MAX_BATCH_TOKENS",
    "DEFAULT_MAX_LENGTH",
    "Reranker",
    "RerankResult",
    "ScoredDocument",
    "ScoringRequest",
    "sigmoid",
]

log = logging.getLogger("qwen3_rerank")

DEFAULT_MAX_LENGTH = 8192
DEFAULT_BATCH_SIZE = 32
DEFAULT_MAX_BATCH_TOKENS = 4096


class Reranker:
    """A Qwen3-Reranker on ONNX Runtime.

    Scores are ``softmax([logit_yes, logit_no])[0]`` at the last position of the official prompt,
    the same as the model card's PyTorch recipe. A one-label ``Qwen3ForSequenceClassification``
    conversion scores as ``sigmoid(logit)``, the same number (its logit is the yes − no gap). Build
    one with :meth:`from_pretrained`.

    Args:
        engine: the ONNX Runtime session of the model (full graph or score graph).
        tokenizer: the model's prompt tokenizer, with its template.
        max_length: most tokens in one prompt (see :meth:`from_pretrained`).
        batch_size: most pairs in one model batch.
        max_batch_tokens: most tokens in one model batch once padded.
        show_progress: a progress bar over the pairs of long jobs.
        prefix_reuse: run a query's shared prefix once (only where the engine supports it).
        files: the resolved model files, when loaded by :meth:`from_pretrained`.

    Raises:
        InputError: ``batch_size`` or ``max_batch_tokens`` below 1, or a ``max_length`` that leaves
            no room for content.
    """

    def __init__(
        self,
        engine: OnnxEngine,
        tokenizer: PromptTokenizer,
        *,
        max_length: int = DEFAULT_MAX_LENGTH,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
        show_progress: bool = False,
        prefix_reuse: bool = True,
        files: ModelFiles | None = None,
    ) -> None:
        if batch_size < 1 or max_batch_tokens < 1:
            raise InputError("batch_size and max_batch_tokens must be at least 1")
        self.engine = engine
        self.tokenizer = tokenizer
        RequestBuilder(tokenizer, max_length)  # fails early when max_length is too small
        self.max_length = max_length
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.show_progress = show_progress
        self.prefix_reuse = prefix_reuse and engine.supports_prefix_cache and engine.is_score_graph
        self.files = files

    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike[str] = DEFAULT_MODEL,
        *,
        dtype: str = DEFAULT_DTYPE,
        device: str = "cpu",
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        max_length: int = DEFAULT_MAX_LENGTH,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
        show_progress: bool = False,
        score_graph: bool = True,
        prefix_reuse: bool = True,
        q8_activations: str = "auto",
        yes_no_head: str = "auto",
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        local_files_only: bool = False,
        token: str | bool | None = None,
        template: str | PromptTemplate | None = None,
        session_options: Mapping[str, object] | None = None,
        score_graph_cache: str | os.PathLike[str] | None = None,
        slice_tokens: int | None = DEFAULT_SLICE_TOKENS,
    ) -> Reranker:
        """Load a model from a local folder or a Hub repo id.

        Args:
            model: folder in the published layout, or Hub repo id
                (default ``onnx-community/Qwen3-Reranker-0.6B-ONNX``).
            dtype: which ONNX file: ``fp32``, ``fp16``, ``q8``, ``q4``, ``int8``, ``uint8``,
                ``q4f16`` or ``bnb4`` (Transformers.js names).
            device: ``cpu``, ``cuda`` or ``cuda:N``; ``providers`` overrides it with ONNX Runtime
                execution provider names.
            threads: intra-op threads (default: ONNX Runtime's choice, one per physical core).
            max_length: most tokens in one prompt; longer documents lose their end, as in the
                reference recipe. The prompt's fixed prefix and suffix are always kept.
            batch_size, max_batch_tokens: a batch holds at most ``batch_size`` pairs and at most
                ``max_batch_tokens`` tokens once padded.
            show_progress: a progress bar over the pairs of long jobs.
            score_graph: run the reranking-specialised graph (only the yes/no logits at the last
                position), built from the model file on first use and kept next to it, or in
                the score-graph cache when the model folder is not writable.
            prefix_reuse: run the part of the prompt that all documents of a query share
                (system prompt, instruction, query) once, and reuse its KV cache for them all.
            q8_activations: for quantised files, how the score graph runs the linears. A
                4-bit file's (q4) ``MatMulNBits`` linears become int8 ones in every mode but
                ``"tensor"`` (ONNX Runtime's int8 kernel is several times faster than its 4-bit
                one on CPU; the added weight error is a fraction of the file's own), then
                follow the mode like a dynamic-int8 (q8) file's. The mode says how activations
                are quantised. Every mode but ``"tensor"`` takes one scale per token, so a
                document's score depends on the document alone, whatever its batch and with or
                without prefix reuse: ``"auto"`` (default: ``"row"`` where ONNX Runtime's u8×s8
                products are exact, i.e. CPUs with VNNI and ARM, else ``"row-u8"``), ``"row"``
                (the fast u8×s8 kernel), ``"row-u8"`` (u8×u8, exact everywhere, slower on x86
                without VNNI), ``"nbits8"`` (8-bit ``MatMulNBits``, per token and block of 32: the
                closest to fp32, about half the speed on AVX2) or ``"tensor"`` (as the file does:
                a q8 file's one scale per tensor, so scores move with batch composition; a q4
                file's own 4-bit kernels).
            yes_no_head: for quantised files, score with the float rows of "yes"/"no" that the
                tied embedding table holds (``"float"``), with the quantised ``lm_head`` rows
                (``"quantized"``), or (``"auto"``) the float ones for 4-bit heads, where they
                measured closer to fp32, and the file's own for int8 heads, where they did not.
            template: the prompt, by name or as a :class:`~qwen3_rerank.prompt.PromptTemplate`:
                ``official`` (default, the reference recipe's) or ``card`` (the ONNX model
                card's Transformers.js code, to reproduce its numbers).
            session_options: ONNX Runtime ``SessionOptions`` settings to override, applied after
                ``threads``, e.g. ``{"enable_mem_pattern": False}`` or
                ``{"config_entries": {"session.disable_prepacking": "1"}}``. Only the names in
                :data:`qwen3_rerank.engine.SESSION_OPTIONS` are accepted.
            score_graph_cache: the folder for score graphs of models whose folder is not
                writable, keyed by the model file's content (default: ``$QWEN3_RERANK_CACHE``,
                else the platform's user cache directory). Not ``cache_dir``, the Hub's download
                cache.
            slice_tokens: on the CPU, the score graph runs one decoder layer at a time and a
                prompt longer than this many tokens (default 2,048) goes through each layer in
                slices of at most this many and at most 512 (chunked prefill, layer by layer): a
                long document then needs the memory of one layer's KV cache and one slice's
                attention instead of the whole prompt's (an 8,192-token document on q8:
                docs/benchmarks/cpu-0.6B/). Shorter rows run in one pass, which is faster; a
                smaller value uses less memory on shorter rows; ``None`` runs the graph in one
                piece, as one session.

        Raises:
            ModelLoadError: the model cannot be found, downloaded or loaded.
            InputError: an unknown template name, session option, ``q8_activations`` or
                ``yes_no_head``, an unusable ``max_length``, or ``slice_tokens`` below 1.
        """
        if slice_tokens is not None and slice_tokens < 1:
            raise InputError(f"slice_tokens must be at least 1 (or None), not {slice_tokens}")
        files = resolve_model(
            model, dtype, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token
        )
        tokenizer = PromptTokenizer.from_file(files.tokenizer, pad_token=files.pad_token, template=template)
        graph = None
        if score_graph:
            graph = score_graph_for(
                files, tokenizer, activations=q8_activations, head=yes_no_head, cache=score_graph_cache
            )
        engine_options: dict[str, Any] = {
            "config": files.config,
            "device": device,
            "providers": providers,
            "threads": threads,
            "session_options": session_options,
        }
        try:
            if graph is None:
                engine = OnnxEngine(files.onnx, **engine_options)
            else:
                engine = OnnxEngine(graph, **engine_options, slice_tokens=slice_tokens)
        except ModelLoadError as exc:
            if graph is None:
                raise
            # A score graph ONNX Runtime refuses (an op layout the builder did not foresee) must
            # not cost the user the model: the published graph gives the same numbers, slower.
            log.warning(
                "qwen3-rerank: using the full graph of %s: its score graph does not load (%s)", files.onnx.name, exc
            )
            engine = OnnxEngine(files.onnx, **engine_options)
        return cls(
            engine,
            tokenizer,
            max_length=max_length,
            batch_size=batch_size,
            max_batch_tokens=max_batch_tokens,
            show_progress=show_progress,
            prefix_reuse=prefix_reuse,
            files=files,
        )

    @property
    def template(self) -> PromptTemplate:
        """The prompt template the scores are computed with."""
        return self.tokenizer.template

    # -- the two units, made from the current settings (attributes stay plain and settable) ------

    def _request_builder(self) -> RequestBuilder:
        """The unit that turns texts into token sequences, with this reranker's tokenizer and ``max_length``."""
        return RequestBuilder(self.tokenizer, self.max_length)

    def _model_runner(self) -> ModelRunner:
        """The unit that runs token sequences through the model, with this reranker's batch settings."""
        show = self.show_progress
        return ModelRunner(
            self.engine,
            pad_id=self.tokenizer.pad_id,
            yes_id=self.tokenizer.yes_id,
            no_id=self.tokenizer.no_id,
            batch_size=self.batch_size,
            max_batch_tokens=self.max_batch_tokens,
            prefix_reuse=self.prefix_reuse,
            make_progress=lambda total: tqdm_progress(total, show),
        )

    # -- scoring ---------------------------------------------------------------------------------

    def score(
        self,
        query: str,
        documents: Sequence[str],
        *,
        instruction: str | None = None,
        raw: bool = False,
        truncate: bool = True,
        chunking: str | ChunkingOptions | None = None,
        chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
        chunk_overlap: int = DEFAULT_CHUNK_OVERLAP,
    ) -> list[float]:
        """Relevance of each document to ``query``, in input order.

        Args:
            query: the search query.
            documents: the texts to score (a list, not one string).
            instruction: the task instruction (None: the template's default).
            raw: the logit gap ``yes - no`` instead of the probability (the same order, unbounded).
            truncate: cut the end of a document that does not fit ``max_length`` (True), or raise.
            chunking: ``"max"``, ``"mean"`` or ``"first"`` (or a :class:`ChunkingOptions`): split
                each document longer than ``chunk_tokens`` tokens into windows that overlap by
                ``chunk_overlap`` tokens, score every window and combine their scores;
                :meth:`rerank` also reports the best window.
            chunk_tokens: window length, with ``chunking`` given by name.
            chunk_overlap: window overlap, with ``chunking`` given by name.

        Returns:
            One score per document: probabilities in [0, 1], or gaps with ``raw``.

        Raises:
            InputError: bad arguments, or a too-long document with ``truncate=False``.
        """
        options = ChunkingOptions.from_keywords(chunking, chunk_tokens, chunk_overlap)
        request = self.prepare(query, documents, instruction=instruction, truncate=truncate, chunking=options)
        return self.score_requests([request], raw=raw)[0]

    def score_pairs(
        self,
        pairs: Iterable[tuple[str, str]],
        *,
        instruction: str | None = None,
        raw: bool = False,
        truncate: bool = True,
    ) -> list[float]:
        """Scores of (query, document) pairs, in input order. See :meth:`score`.

        Pairs of one query are scored together, so that the query's shared prefix can be reused.

        Args:
            pairs: ``(query, document)`` tuples.
            instruction: the task instruction for all pairs.
            raw: gaps instead of probabilities.
            truncate: cut the end of a too-long document (True), or raise.

        Returns:
            One score per pair.

        Raises:
            InputError: no pairs, an item that is not a pair of strings, or a too-long document
                with ``truncate=False``.
        """
        requests, groups = self._request_builder().build_pairs(pairs, instruction=instruction, truncate=truncate)
        scores = [0.0] * sum(len(g) for g in groups)
        for indices, values in zip(groups, self.score_requests(requests, raw=raw), strict=True):
            for i, value in zip(indices, values, strict=True):
                scores[i] = value
        return scores

    def prepare(
        self,
        query: str,
        documents: Sequence[str],
        *,
        instruction: str | None = None,
        truncate: bool = True,
        max_doc_tokens: int | None = None,
        chunking: str | ChunkingOptions | None = None,
        chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
        chunk_overlap: int = DEFAULT_CHUNK_OVERLAP,
        truncation: Truncation | None = None,
    ) -> ScoringRequest:
        """Check and tokenize one query's documents for :meth:`score_requests`.

        Args:
            query: the search query.
            documents: the texts to score.
            instruction: the task instruction (None: the template's default).
            truncate: as in :meth:`score`.
            max_doc_tokens: first cut each document on its own to about that many tokens (the
                rerank APIs' "max tokens per document"), whatever ``truncate`` says.
            chunking: as in :meth:`score`.
            chunk_tokens: as in :meth:`score`.
            chunk_overlap: as in :meth:`score`.
            truncation: the whole truncation policy as one value (a server's: cut the start or
                the end, or refuse a document over ``max_doc_tokens``), instead of ``truncate``
                and ``max_doc_tokens``.

        Returns:
            The tokenized request.

        Raises:
            InputError: bad arguments; a too-long text the truncation policy refuses; or
                ``truncation`` together with ``truncate=False`` or ``max_doc_tokens``.
        """
        check_text(query, "query")
        documents = check_documents(documents)
        options = ChunkingOptions.from_keywords(chunking, chunk_tokens, chunk_overlap)
        if truncation is None:
            if max_doc_tokens is not None:  # cut first, as documented, even with truncate=False
                documents = Truncation(max_doc_tokens=max_doc_tokens).apply(documents, self.tokenizer)
            truncation = Truncation(enabled=truncate)
        elif not truncate or max_doc_tokens is not None:
            raise InputError("give either truncation or truncate/max_doc_tokens, not both")
        return self._request_builder().build(
            query, documents, instruction=instruction, truncation=truncation, chunking=options
        )

    def rerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_k: int | None = None,
        instruction: str | None = None,
        return_documents: bool = True,
        truncate: bool = True,
        chunking: str | ChunkingOptions | None = None,
        chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
        chunk_overlap: int = DEFAULT_CHUNK_OVERLAP,
    ) -> list[RerankResult]:
        """Documents ordered best first (ties keep input order), at most ``top_k`` of them.

        Args:
            query: the search query.
            documents: the texts to rank.
            top_k: how many to return (None: all).
            instruction: the task instruction (None: the template's default).
            return_documents: put each document's text in its result.
            truncate: as in :meth:`score`.
            chunking: as in :meth:`score`; each result then also names its best window.
            chunk_tokens: as in :meth:`score`.
            chunk_overlap: as in :meth:`score`.

        Returns:
            The results, best first.

        Raises:
            InputError: bad arguments (``top_k`` below 1 included), or a too-long document with
                ``truncate=False``.
        """
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise InputError(f"top_k must be a positive integer, got {top_k!r}")
        documents = check_documents(documents)
        options = ChunkingOptions.from_keywords(chunking, chunk_tokens, chunk_overlap)
        request = self.prepare(query, documents, instruction=instruction, truncate=truncate, chunking=options)
        scored = self.score_requests_with_best_chunks([request])[0]
        return [
            RerankResult(i, scored[i].score, documents[i] if return_documents else None, scored[i].best_chunk)
            for i in best_first([d.score for d in scored], top_k)
        ]

    def score_requests(
        self,
        requests: Sequence[ScoringRequest],
        *,
        raw: bool = False,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[list[float]]:
        """Scores of several prepared requests, batched together; one list per request.

        Requests with a shared prefix (and a model that returns its KV cache) run that prefix once;
        all other sequences are batched together across requests. A chunked request gets one
        score per document (see :meth:`score_requests_with_best_chunks` for the best windows).

        Args:
            requests: from :meth:`prepare`.
            raw: gaps instead of probabilities.
            should_stop: when given, called before each model batch (from the calling thread);
                once it returns True the call stops there. A server passes a check that its
                clients have all gone; ``threading.Event().is_set`` works too.

        Returns:
            Per request, one score per document.

        Raises:
            ScoringCancelled: ``should_stop`` returned True; its ``unscored`` says how many
                sequences were left unscored.
        """
        return [
            [d.score for d in docs]
            for docs in self.score_requests_with_best_chunks(requests, raw=raw, should_stop=should_stop)
        ]

    def score_requests_with_best_chunks(
        self,
        requests: Sequence[ScoringRequest],
        *,
        raw: bool = False,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[list[ScoredDocument]]:
        """Like :meth:`score_requests`, with each chunked document's best window.

        Args:
            requests: from :meth:`prepare`.
            raw: gaps instead of probabilities.
            should_stop: as in :meth:`score_requests`.

        Returns:
            Per request, one :class:`ScoredDocument` per document (``best_chunk`` set with chunking).

        Raises:
            ScoringCancelled: as in :meth:`score_requests`.
        """
        gaps = self._model_runner().gaps(requests, should_stop=should_stop)
        return [
            scored_documents(request, values if raw else sigmoid(values))
            for request, values in zip(requests, gaps, strict=True)
        ]

    def score_requests_detailed(
        self,
        requests: Sequence[ScoringRequest],
        *,
        raw: bool = False,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[list[ScoredDocument]]:
        """Deprecated name of :meth:`score_requests_with_best_chunks` (same arguments and result)."""
        warnings.warn(
            "score_requests_detailed is now score_requests_with_best_chunks",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.score_requests_with_best_chunks(requests, raw=raw, should_stop=should_stop)
