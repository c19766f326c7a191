"""Public API: :class:`Reranker` scores (query, document) pairs with a Qwen3-Reranker ONNX model."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from .batching import pad, plan_batches
from .chunking import Chunk, aggregate, check_chunking, split_windows
from .engine import OnnxEngine
from .errors import InputError, ScoringCancelled
from .files import DEFAULT_DTYPE, DEFAULT_MODEL, ModelFiles, resolve_model
from .prebuild import score_graph_for
from .prompt import PromptTemplate
from .prompt_tokenizer import PromptTokenizer

log = logging.getLogger("qwen3_rerank")

DEFAULT_MAX_LENGTH = 8192
DEFAULT_BATCH_SIZE = 32
DEFAULT_MAX_BATCH_TOKENS = 4096


@dataclass(frozen=True)
class RerankResult:
    """One ranked document: its position in the input, its relevance score and (optionally) text."""

    index: int
    score: float
    document: str | None = None
    #: With chunking: the window of the document that scored best.
    best_chunk: Chunk | None = None

    def to_dict(self) -> dict:
        data = {"index": self.index, "score": self.score}
        if self.document is not None:
            data["document"] = self.document
        if self.best_chunk is not None:
            data["best_chunk"] = self.best_chunk.to_dict()
        return data


@dataclass(frozen=True)
class ScoredDocument:
    """A document's score and, with chunking, its best window."""

    score: float
    best_chunk: Chunk | None = None


@dataclass(frozen=True)
class ScoringRequest:
    """Documents of one query, tokenized and ready to score (see :meth:`Reranker.prepare`).

    A server tokenizes each request as it arrives and hands many of them to
    :meth:`Reranker.score_requests` at once, which batches their documents together.
    """

    sequences: tuple[tuple[int, ...], ...]
    truncated: tuple[bool, ...]
    #: Length of the token prefix (system prompt, instruction, query) that the sequences marked in
    #: ``reuses_prefix`` share, so that it can run once for them all; 0 when there is none.
    shared_prefix: int = 0
    reuses_prefix: tuple[bool, ...] = ()
    #: With chunking: the windows behind the sequences, in order, and how a document's windows
    #: make its score. ``documents`` counts documents (``len()`` counts sequences).
    chunks: tuple[Chunk, ...] | None = None
    window_counts: tuple[int, ...] | None = None
    aggregation: str = "max"

    @property
    def documents(self) -> int:
        return len(self.window_counts) if self.window_counts is not None else len(self.sequences)

    @property
    def num_tokens(self) -> int:
        return sum(len(s) for s in self.sequences)

    def __len__(self) -> int:
        return len(self.sequences)


def sigmoid(gap: np.ndarray) -> np.ndarray:
    """``softmax([yes, no])[0]`` from the gap ``yes - no``, in float64 without overflow."""
    gap = np.asarray(gap, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -gap))


class Reranker:
    """A Qwen3-Reranker on ONNX Runtime.

    Scores are ``softmax([logit_yes, logit_no])[0]`` at the last position of the official prompt,
    the same as the model card's PyTorch recipe. A one-label ``Qwen3ForSequenceClassification``
    conversion scores as ``sigmoid(logit)``, the same number (its logit is the yes − no gap). Build
    one with :meth:`from_pretrained`.
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
        tokenizer.content_budget(max_length)  # fails early when max_length is too small
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
            q8_activations: for dynamic-int8 files (q8), how the score graph quantises
                activations. Every mode but ``"tensor"`` takes one scale per token, so a
                document's score depends on the document alone, whatever its batch and with or
                without prefix reuse: ``"auto"`` (default: ``"row"`` where ONNX Runtime's u8×s8
                products are exact, i.e. CPUs with VNNI and ARM, else ``"row-u8"``), ``"row"``
                (the fast u8×s8 kernel), ``"row-u8"`` (u8×u8, exact everywhere, slower on x86
                without VNNI), ``"nbits8"`` (8-bit ``MatMulNBits``, per token and block of 32: the
                closest to fp32, about half the speed on AVX2) or ``"tensor"`` (as the file does:
                one scale per tensor, so scores move with batch composition).
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

        Raises:
            ModelLoadError: the model cannot be found, downloaded or loaded.
            InputError: an unknown template name, session option, ``q8_activations`` or
                ``yes_no_head``, or an unusable ``max_length``.
        """
        files = resolve_model(
            model, dtype, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token
        )
        tokenizer = PromptTokenizer.from_file(files.tokenizer, pad_token=files.pad_token, template=template)
        graph = None
        if score_graph:
            graph = score_graph_for(
                files, tokenizer, activations=q8_activations, head=yes_no_head, cache=score_graph_cache
            )
        engine = OnnxEngine(
            graph or files.onnx,
            config=files.config,
            device=device,
            providers=providers,
            threads=threads,
            session_options=session_options,
        )
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

    # -- scoring ---------------------------------------------------------------------------------

    def score(
        self,
        query: str,
        documents: Sequence[str],
        *,
        instruction: str | None = None,
        raw: bool = False,
        truncate: bool = True,
        chunking: str | None = None,
        chunk_tokens: int = 512,
        chunk_overlap: int = 64,
    ) -> list[float]:
        """Relevance of each document to ``query``, in input order.

        Scores are probabilities in [0, 1]; ``raw=True`` gives the logit gap ``yes - no`` instead
        (the same order, unbounded). ``truncate=False`` raises :class:`InputError` for a document
        that does not fit ``max_length`` instead of cutting its end.

        ``chunking`` (``"max"``, ``"mean"`` or ``"first"``) splits each document longer than
        ``chunk_tokens`` tokens into windows that overlap by ``chunk_overlap`` tokens, scores every
        window and combines their scores; :meth:`rerank` also reports the best window.
        """
        request = self.prepare(
            query,
            documents,
            instruction=instruction,
            truncate=truncate,
            chunking=chunking,
            chunk_tokens=chunk_tokens,
            chunk_overlap=chunk_overlap,
        )
        return self.score_requests([request], raw=raw)[0]

    def score_pairs(
        self,
        pairs: Iterable[tuple[str, str]],
        *,
        instruction: str | None = None,
        raw: bool = False,
        truncate: bool = True,
    ) -> list[float]:
        """Scores of (query, document) pairs, in input order. See :meth:`score`."""
        pairs = list(pairs)
        if not pairs:
            raise InputError("no (query, document) pairs to score")
        for i, pair in enumerate(pairs):
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                raise InputError(f"pair {i} is not a (query, document) tuple")
            _check_text(pair[0], f"query of pair {i}")
            _check_text(pair[1], f"document of pair {i}")
        # One request per distinct query, so that each query's shared prefix can be reused.
        by_query: dict[str, list[int]] = {}
        for i, (query, _) in enumerate(pairs):
            by_query.setdefault(query, []).append(i)
        requests = [
            self._prepare(
                [pairs[i] for i in indices],
                instruction=instruction,
                truncate=truncate,
                max_doc_tokens=None,
                query=query,
            )
            for query, indices in by_query.items()
        ]
        scores = [0.0] * len(pairs)
        for indices, values in zip(by_query.values(), self.score_requests(requests, raw=raw), strict=True):
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
        chunking: str | None = None,
        chunk_tokens: int = 512,
        chunk_overlap: int = 64,
    ) -> ScoringRequest:
        """Check and tokenize one query's documents for :meth:`score_requests`.

        ``max_doc_tokens`` first cuts each document on its own to about that many tokens (the
        rerank APIs' "max tokens per document"); ``truncate`` and ``chunking`` then work as in
        :meth:`score`.
        """
        _check_text(query, "query")
        documents = _check_documents(documents)
        if chunking is None:
            return self._prepare(
                [(query, d) for d in documents],
                instruction=instruction,
                truncate=truncate,
                max_doc_tokens=max_doc_tokens,
                query=query,
            )
        check_chunking(chunking, chunk_tokens, chunk_overlap)
        if max_doc_tokens is not None:
            documents = [self.tokenizer.cut_text(d, max_doc_tokens) for d in documents]
        windows: list[Chunk] = []
        texts: list[str] = []
        counts: list[int] = []
        for doc in documents:
            encoding = self.tokenizer.tokenizer.encode(doc, add_special_tokens=False)
            doc_windows = split_windows(encoding.offsets, len(doc), chunk_tokens, chunk_overlap)
            windows.extend(doc_windows)
            texts.extend(doc[w.char_start : w.char_end] for w in doc_windows)
            counts.append(len(doc_windows))
        request = self._prepare(
            [(query, t) for t in texts], instruction=instruction, truncate=truncate, max_doc_tokens=None, query=query
        )
        return replace(request, chunks=tuple(windows), window_counts=tuple(counts), aggregation=chunking)

    def _prepare(self, pairs, *, instruction, truncate, max_doc_tokens, query=None) -> ScoringRequest:
        if instruction is not None:
            _check_text(instruction, "instruction")
        if max_doc_tokens is not None:
            pairs = [(q, self.tokenizer.cut_text(d, max_doc_tokens)) for q, d in pairs]
        template = self.template
        contents = [template.format_content(q, d, instruction) for q, d in pairs]
        sequences, cut = self.tokenizer.encode_contents_marking_cuts(contents, self.max_length, truncate=truncate)
        shared, reuses = 0, [False] * len(sequences)
        if query is not None:
            shared, reuses = self.tokenizer.shared_prefix(sequences, template.content_head(query, instruction))
        return ScoringRequest(tuple(tuple(s) for s in sequences), tuple(cut), shared, tuple(reuses))

    def rerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_k: int | None = None,
        instruction: str | None = None,
        return_documents: bool = True,
        truncate: bool = True,
        chunking: str | None = None,
        chunk_tokens: int = 512,
        chunk_overlap: int = 64,
    ) -> list[RerankResult]:
        """Documents ordered best first (ties keep input order), at most ``top_k`` of them.

        With ``chunking`` (see :meth:`score`) each result also names its best window.
        """
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise InputError(f"top_k must be a positive integer, got {top_k!r}")
        documents = _check_documents(documents)
        request = self.prepare(
            query,
            documents,
            instruction=instruction,
            truncate=truncate,
            chunking=chunking,
            chunk_tokens=chunk_tokens,
            chunk_overlap=chunk_overlap,
        )
        scored = self.score_requests_detailed([request])[0]
        order = sorted(range(len(scored)), key=lambda i: (-scored[i].score, i))
        if top_k is not None:
            order = order[:top_k]
        return [
            RerankResult(i, scored[i].score, documents[i] if return_documents else None, scored[i].best_chunk)
            for i in order
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
        score per document (see :meth:`score_requests_detailed` for the best windows).

        ``should_stop``, when given, is called before each model batch (from the calling thread);
        once it returns True the call stops there and raises :class:`ScoringCancelled`, whose
        ``unscored`` says how many sequences were left unscored. A server passes a check that its
        clients have all gone; ``threading.Event().is_set`` works too.
        """
        return [
            [d.score for d in docs] for docs in self.score_requests_detailed(requests, raw=raw, should_stop=should_stop)
        ]

    def score_requests_detailed(
        self,
        requests: Sequence[ScoringRequest],
        *,
        raw: bool = False,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[list[ScoredDocument]]:
        """Like :meth:`score_requests`, with each chunked document's best window."""
        values = self._sequence_scores(requests, raw=raw, should_stop=should_stop)
        out = []
        for request, seq_values in zip(requests, values, strict=True):
            if request.window_counts is None:
                out.append([ScoredDocument(float(v)) for v in seq_values])
                continue
            docs, start = [], 0
            for count in request.window_counts:
                window_values = seq_values[start : start + count]
                best = start + int(np.argmax(window_values))
                docs.append(ScoredDocument(aggregate(window_values, request.aggregation), request.chunks[best]))
                start += count
            out.append(docs)
        return out

    def _sequence_scores(
        self, requests: Sequence[ScoringRequest], *, raw: bool, should_stop: Callable[[], bool] | None = None
    ) -> list[np.ndarray]:
        """One score per token sequence of each request, in order."""
        total = sum(len(r) for r in requests)
        stop = None if should_stop is None else _StopCheck(should_stop, total)
        gaps = np.empty(total, dtype=np.float64)
        plain: list[int] = []
        offsets, start = [], 0
        for request in requests:
            offsets.append(start)
            start += len(request)
        progress = self._progress(total)
        try:
            for request, offset in zip(requests, offsets, strict=True):
                reuse = [i for i, ok in enumerate(request.reuses_prefix) if ok] if self.prefix_reuse else []
                if len(reuse) < 2:  # a prefix pass pays off only when two or more documents share it
                    reuse = []
                if reuse:
                    gaps[[offset + i for i in reuse]] = self._prefix_gaps(request, reuse, progress, stop)
                reused = set(reuse)
                plain.extend(offset + i for i in range(len(request)) if i not in reused)
            if plain:
                flat = [seq for request in requests for seq in request.sequences]
                gaps[plain] = self._logit_gaps([flat[i] for i in plain], progress, stop)
        finally:
            if progress is not None:
                progress.close()
        values = gaps if raw else sigmoid(gaps)
        return [values[o : o + len(r)] for r, o in zip(requests, offsets, strict=True)]

    def _progress(self, total: int):
        if not self.show_progress or total < 2:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, desc="reranking", unit="pair")

    def _logit_gaps(self, sequences: Sequence[Sequence[int]], progress=None, stop=None) -> np.ndarray:
        """``logit(yes) - logit(no)`` at the last position for each token sequence, float64."""
        gaps = np.empty(len(sequences), dtype=np.float64)
        batches = plan_batches(
            [len(s) for s in sequences], max_batch_tokens=self.max_batch_tokens, max_batch_size=self.batch_size
        )
        # A full graph is read at its last column, so it needs left padding; the score graph finds
        # each row's last token and gets right padding, which every attention kernel supports.
        side = "right" if self.engine.is_score_graph else "left"
        for batch in batches:
            if stop is not None:
                stop.check(len(batch))
            ids, mask = pad([sequences[i] for i in batch], self.tokenizer.pad_id, side)
            gaps[batch] = self.engine.gaps(ids, mask, self.tokenizer.yes_id, self.tokenizer.no_id)
            if progress is not None:
                progress.update(len(batch))
        return gaps

    def _prefix_gaps(self, request: ScoringRequest, indices: list[int], progress=None, stop=None) -> np.ndarray:
        """Gaps of the sequences of one request at ``indices``, which share its prefix tokens.

        The prefix runs once (batch of 1); its KV cache is then fed, repeated per row, with the
        remaining tokens of each document. The attention mask covers prefix + document, and the
        positions continue after the prefix, so every token sees exactly what it sees in the
        whole prompt.
        """
        shared = request.shared_prefix
        if stop is not None:
            stop.check(0)
        cache = self.engine.prefix_cache(request.sequences[indices[0]][:shared])
        parts = [request.sequences[i][shared:] for i in indices]
        gaps = np.empty(len(parts), dtype=np.float64)
        batches = plan_batches(
            [len(p) for p in parts],
            max_batch_tokens=self.max_batch_tokens,
            max_batch_size=self.engine.max_batch_with_past or self.batch_size,
        )
        widest = max(len(b) for b in batches)
        # One contiguous copy per request; each batch takes its first rows (still contiguous).
        repeated = {
            name: np.ascontiguousarray(np.broadcast_to(value, (widest, *value.shape[1:])))
            for name, value in cache.items()
        }
        by_rows: dict[int, dict] = {}
        for batch in batches:
            if stop is not None:
                stop.check(len(batch))
            ids, mask = pad([parts[i] for i in batch], self.tokenizer.pad_id, "right")
            full_mask = np.concatenate([np.ones((len(batch), shared), dtype=np.int64), mask], axis=1)
            rows = len(batch)
            if rows not in by_rows:  # on CUDA: copied to the device once per batch size
                by_rows[rows] = {name: self.engine.to_device(value[:rows]) for name, value in repeated.items()}
            past = by_rows[rows]
            gaps[batch] = self.engine.gaps(ids, full_mask, self.tokenizer.yes_id, self.tokenizer.no_id, past=past)
            if progress is not None:
                progress.update(len(batch))
        return gaps


class _StopCheck:
    """Asks ``should_stop`` before each model batch and counts the sequences still unscored."""

    def __init__(self, should_stop: Callable[[], bool], total: int) -> None:
        self.should_stop = should_stop
        self.total = total
        self.left = total

    def check(self, rows: int) -> None:
        """Before a batch of ``rows`` sequences: raise :class:`ScoringCancelled`, or count them done."""
        if self.should_stop():
            raise ScoringCancelled(self.left, self.total)
        self.left -= rows


def _check_text(value, what: str) -> None:
    if not isinstance(value, str):
        raise InputError(f"{what} must be a string, got {type(value).__name__}")


def _check_documents(documents) -> list[str]:
    if isinstance(documents, str):
        raise InputError("documents must be a list of strings, not one string")
    documents = list(documents)
    if not documents:
        raise InputError("no documents to rerank")
    for i, doc in enumerate(documents):
        _check_text(doc, f"document {i}")
    return documents
