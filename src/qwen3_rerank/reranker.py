"""Public API: :class:`Reranker` scores (query, document) pairs with a Qwen3-Reranker ONNX model."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .batching import pad_left, plan_batches
from .engine import OnnxEngine
from .errors import InputError
from .files import DEFAULT_MODEL, ModelFiles, resolve_model
from .prompt import format_content
from .tokenize import PromptTokenizer

DEFAULT_MAX_LENGTH = 8192
DEFAULT_BATCH_SIZE = 32
DEFAULT_MAX_BATCH_TOKENS = 4096


@dataclass(frozen=True)
class RerankResult:
    """One ranked document: its position in the input, its relevance score and (optionally) text."""

    index: int
    score: float
    document: str | None = None

    def to_dict(self) -> dict:
        data = {"index": self.index, "score": self.score}
        if self.document is not None:
            data["document"] = self.document
        return data


@dataclass(frozen=True)
class ScoringRequest:
    """Documents of one query, tokenized and ready to score (see :meth:`Reranker.prepare`).

    A server tokenizes each request as it arrives and hands many of them to
    :meth:`Reranker.score_requests` at once, which batches their documents together.
    """

    sequences: tuple[tuple[int, ...], ...]
    truncated: tuple[bool, ...]

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
    the same as the model card's PyTorch recipe. Build one with :meth:`from_pretrained`.
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
        self.files = files

    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike[str] = DEFAULT_MODEL,
        *,
        dtype: str = "q8",
        device: str = "cpu",
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        max_length: int = DEFAULT_MAX_LENGTH,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
        show_progress: bool = False,
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        local_files_only: bool = False,
        token: str | bool | None = None,
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
        """
        files = resolve_model(
            model, dtype, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token
        )
        tokenizer = PromptTokenizer.from_file(files.tokenizer, pad_token=files.pad_token)
        engine = OnnxEngine(files.onnx, config=files.config, device=device, providers=providers, threads=threads)
        return cls(
            engine,
            tokenizer,
            max_length=max_length,
            batch_size=batch_size,
            max_batch_tokens=max_batch_tokens,
            show_progress=show_progress,
            files=files,
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
    ) -> list[float]:
        """Relevance of each document to ``query``, in input order.

        Scores are probabilities in [0, 1]; ``raw=True`` gives the logit gap ``yes - no`` instead
        (the same order, unbounded). ``truncate=False`` raises :class:`InputError` for a document
        that does not fit ``max_length`` instead of cutting its end.
        """
        _check_text(query, "query")
        documents = _check_documents(documents)
        return self.score_pairs([(query, d) for d in documents], instruction=instruction, raw=raw, truncate=truncate)

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
        request = self._prepare(pairs, instruction=instruction, truncate=truncate, max_doc_tokens=None)
        return self.score_requests([request], raw=raw)[0]

    def prepare(
        self,
        query: str,
        documents: Sequence[str],
        *,
        instruction: str | None = None,
        truncate: bool = True,
        max_doc_tokens: int | None = None,
    ) -> ScoringRequest:
        """Check and tokenize one query's documents for :meth:`score_requests`.

        ``max_doc_tokens`` first cuts each document on its own to about that many tokens (the
        rerank APIs' "max tokens per document"); ``truncate`` then works as in :meth:`score`.
        """
        _check_text(query, "query")
        documents = _check_documents(documents)
        return self._prepare(
            [(query, d) for d in documents], instruction=instruction, truncate=truncate, max_doc_tokens=max_doc_tokens
        )

    def _prepare(self, pairs, *, instruction, truncate, max_doc_tokens) -> ScoringRequest:
        if instruction is not None:
            _check_text(instruction, "instruction")
        if max_doc_tokens is not None:
            pairs = [(q, self.tokenizer.cut_text(d, max_doc_tokens)) for q, d in pairs]
        contents = [format_content(q, d, instruction) for q, d in pairs]
        budget = self.tokenizer.content_budget(self.max_length)
        lengths = self.tokenizer.count_content_tokens(contents)
        sequences = self.tokenizer.encode_contents(contents, self.max_length, truncate=truncate)
        return ScoringRequest(tuple(tuple(s) for s in sequences), tuple(n > budget for n in lengths))

    def score_requests(self, requests: Sequence[ScoringRequest], *, raw: bool = False) -> list[list[float]]:
        """Scores of several prepared requests, batched together; one list per request."""
        flat = [seq for request in requests for seq in request.sequences]
        gaps = self._logit_gaps(flat)
        values = gaps if raw else sigmoid(gaps)
        out, start = [], 0
        for request in requests:
            out.append([float(v) for v in values[start : start + len(request)]])
            start += len(request)
        return out

    def rerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_k: int | None = None,
        instruction: str | None = None,
        return_documents: bool = True,
        truncate: bool = True,
    ) -> list[RerankResult]:
        """Documents ordered best first (ties keep input order), at most ``top_k`` of them."""
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise InputError(f"top_k must be a positive integer, got {top_k!r}")
        documents = _check_documents(documents)
        scores = self.score(query, documents, instruction=instruction, truncate=truncate)
        order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
        if top_k is not None:
            order = order[:top_k]
        return [RerankResult(i, scores[i], documents[i] if return_documents else None) for i in order]

    def _logit_gaps(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        """``logit(yes) - logit(no)`` at the last position for each token sequence, float64."""
        gaps = np.empty(len(sequences), dtype=np.float64)
        batches = plan_batches(
            [len(s) for s in sequences], max_batch_tokens=self.max_batch_tokens, max_batch_size=self.batch_size
        )
        progress = None
        if self.show_progress and len(sequences) > 1:
            from tqdm.auto import tqdm

            progress = tqdm(total=len(sequences), desc="reranking", unit="pair")
        try:
            for batch in batches:
                ids, mask = pad_left([sequences[i] for i in batch], self.tokenizer.pad_id)
                logits = self.engine.last_logits(ids, mask)
                yes = logits[:, self.tokenizer.yes_id].astype(np.float64)
                no = logits[:, self.tokenizer.no_id].astype(np.float64)
                gaps[batch] = yes - no
                if progress is not None:
                    progress.update(len(batch))
        finally:
            if progress is not None:
                progress.close()
        return gaps


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
