"""From a query and its documents to token sequences ready to score: :class:`RequestBuilder`.

Everything before the model runs, and nothing of how it runs: input checks, the truncation policy
(:class:`~qwen3_rerank.truncation.Truncation`), chunk windows
(:class:`~qwen3_rerank.chunking.ChunkingOptions`), the prompt template, and which sequences may
reuse the query's shared prefix. Its product, a :class:`ScoringRequest`, is plain data that the
model runner (:mod:`~qwen3_rerank.model_runner`) executes, in the same process or, in the server,
in a worker thread after it waited in a queue.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from .chunking import Chunk, ChunkingOptions, split_windows
from .errors import InputError
from .prompt_tokenizer import PromptTokenizer
from .truncation import Truncation


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
        """How many documents the request holds (with chunking, fewer than its sequences)."""
        return len(self.window_counts) if self.window_counts is not None else len(self.sequences)

    @property
    def num_tokens(self) -> int:
        """Tokens in all its sequences, prompt template included (what a server bills)."""
        return sum(len(s) for s in self.sequences)

    def __len__(self) -> int:
        return len(self.sequences)


def check_text(value: object, what: str) -> None:
    """Check that ``value`` is a string, before any work on it.

    Args:
        value: what the caller passed.
        what: how the error names it (``"query"``, ``"document 3"``).

    Raises:
        InputError: ``value`` is not a string.
    """
    if not isinstance(value, str):
        raise InputError(f"{what} must be a string, got {type(value).__name__}")


def check_documents(documents: Iterable[str]) -> list[str]:
    """The documents as a list, once checked to be a non-empty list of strings.

    Args:
        documents: the caller's documents (any iterable but one string).

    Returns:
        The documents, as a new list.

    Raises:
        InputError: one string instead of a list, no documents, or a document that is no string.
    """
    if isinstance(documents, str):
        raise InputError("documents must be a list of strings, not one string")
    texts = list(documents)
    if not texts:
        raise InputError("no documents to rerank")
    for i, doc in enumerate(texts):
        check_text(doc, f"document {i}")
    return texts


class RequestBuilder:
    """Builds :class:`ScoringRequest` values for one tokenizer, template and ``max_length``.

    Args:
        tokenizer: the model's prompt tokenizer (it holds the template).
        max_length: most tokens in one prompt.

    Raises:
        InputError: ``max_length`` leaves no room for content after the template's prefix and suffix.
    """

    def __init__(self, tokenizer: PromptTokenizer, max_length: int) -> None:
        tokenizer.content_budget(max_length)  # fails early when max_length is too small
        self.tokenizer = tokenizer
        self.max_length = max_length

    def build(
        self,
        query: str,
        documents: Sequence[str],
        *,
        instruction: str | None = None,
        truncation: Truncation | None = None,
        chunking: ChunkingOptions | None = None,
    ) -> ScoringRequest:
        """One query's documents as prompt token sequences.

        Documents are first held to ``truncation.max_doc_tokens``; with ``chunking`` each is then
        split into windows (every window a sequence of its own); every text is placed in the
        template and tokenized, the content's end cut to ``max_length`` (or refused, with
        ``truncation.enabled=False``); last, the sequences that start with the query's shared
        prefix tokens are marked for prefix reuse.

        Args:
            query: the search query.
            documents: the texts to score.
            instruction: the task instruction (None: the template's default).
            truncation: what happens to too-long texts (None: ``Truncation()``, cut the end).
            chunking: windows instead of one sequence per document, or None.

        Returns:
            The request; with chunking it also holds the windows and their count per document.

        Raises:
            InputError: a query, document or instruction that is no string, no documents, or a
                too-long text under ``truncation.enabled=False``.
        """
        check_text(query, "query")
        truncation = truncation or Truncation()
        texts = truncation.apply(check_documents(documents), self.tokenizer)
        if chunking is None:
            return self._encode(query, texts, instruction, truncate=truncation.enabled)
        windows, window_texts, counts = self._windows(texts, chunking)
        request = self._encode(query, window_texts, instruction, truncate=truncation.enabled)
        return replace(request, chunks=tuple(windows), window_counts=tuple(counts), aggregation=chunking.aggregation)

    def build_pairs(
        self, pairs: Iterable[tuple[str, str]], *, instruction: str | None = None, truncate: bool = True
    ) -> tuple[list[ScoringRequest], list[list[int]]]:
        """(query, document) pairs as one request per distinct query, so each query's prefix can be reused.

        Args:
            pairs: ``(query, document)`` tuples (or two-item lists).
            instruction: the task instruction for all pairs.
            truncate: cut a too-long prompt's content (True) or refuse it.

        Returns:
            The requests, in order of each query's first pair, and for each the indices of its pairs.

        Raises:
            InputError: no pairs, an item that is not a pair of strings, or a too-long prompt
                with ``truncate=False``.
        """
        checked = list(pairs)
        if not checked:
            raise InputError("no (query, document) pairs to score")
        for i, pair in enumerate(checked):
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                raise InputError(f"pair {i} is not a (query, document) tuple")
            check_text(pair[0], f"query of pair {i}")
            check_text(pair[1], f"document of pair {i}")
        by_query: dict[str, list[int]] = {}
        for i, pair in enumerate(checked):
            by_query.setdefault(pair[0], []).append(i)
        requests = [
            self._encode(query, [checked[i][1] for i in indices], instruction, truncate=truncate)
            for query, indices in by_query.items()
        ]
        return requests, list(by_query.values())

    def _windows(self, documents: list[str], chunking: ChunkingOptions) -> tuple[list[Chunk], list[str], list[int]]:
        """Each document's windows (on its own tokens), their texts, and how many each document has."""
        windows: list[Chunk] = []
        texts: list[str] = []
        counts: list[int] = []
        for doc in documents:
            encoding = self.tokenizer.tokenizer.encode(doc, add_special_tokens=False)
            doc_windows = split_windows(encoding.offsets, len(doc), chunking.chunk_tokens, chunking.chunk_overlap)
            windows.extend(doc_windows)
            texts.extend(doc[w.char_start : w.char_end] for w in doc_windows)
            counts.append(len(doc_windows))
        return windows, texts, counts

    def _encode(self, query: str, documents: list[str], instruction: str | None, *, truncate: bool) -> ScoringRequest:
        """Template, tokens (cut or refused at ``max_length``) and prefix-reuse marks of one query's texts."""
        if instruction is not None:
            check_text(instruction, "instruction")
        template = self.tokenizer.template
        contents = [template.format_content(query, d, instruction) for d in documents]
        sequences, cut = self.tokenizer.encode_contents_with_cut_flags(contents, self.max_length, truncate=truncate)
        shared, reuses = self.tokenizer.shared_prefix(sequences, template.content_head(query, instruction))
        return ScoringRequest(tuple(tuple(s) for s in sequences), tuple(cut), shared, tuple(reuses))
