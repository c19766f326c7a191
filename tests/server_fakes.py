"""A fake model for in-process server tests: word tokens, scores by word count, optional sleep.

It has what the server calls on a :class:`~qwen3_rerank.Reranker` (``prepare``,
``score_requests_with_best_chunks``, ``max_length``) and records every step, so tests
can see which requests reached the model, and in which batches, in milliseconds. With
``batch_size`` it also splits a step into model batches as the library does, asks ``should_stop``
before each and records them (``batches``); ``gate`` makes each batch run until a test lets it end.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from qwen3_rerank import ChunkingOptions, ScoredDocument, ScoringRequest, Truncation
from qwen3_rerank.errors import InputError, RerankError, ScoringCancelled


@dataclass(frozen=True)
class LabelledRequest(ScoringRequest):
    """A prepared request that carries a name, so a test can tell which ones the model saw."""

    label: str = ""


def request_of(tokens: int, label: str) -> LabelledRequest:
    """One document of ``tokens`` tokens."""
    return LabelledRequest(sequences=(tuple(range(tokens)),), truncated=(False,), label=label)


class WordCutter:
    """One token per whitespace-separated word."""

    def cut_text(self, text: str, max_tokens: int) -> str:
        words = text.split()
        return text if len(words) <= max_tokens else " ".join(words[:max_tokens])

    def cut_text_start(self, text: str, max_tokens: int) -> str:
        words = text.split()
        return text if len(words) <= max_tokens else " ".join(words[-max_tokens:])


class FakeReranker:
    """Sleeps ``delay`` s per step; fails a step holding a request labelled ``fail_label``."""

    max_length = 8192

    def __init__(
        self,
        delay: float = 0.0,
        fail_label: str | None = None,
        library_error: bool = False,
        batch_size: int | None = None,
    ) -> None:
        self.tokenizer = WordCutter()
        self.delay = delay
        self.fail_label = fail_label
        self.library_error = library_error
        #: documents per model batch (None: a step is one batch, as before)
        self.batch_size = batch_size
        #: (labels, rows) of each model batch run, in order
        self.batches: list[tuple[list[str], int]] = []
        #: when set to a semaphore, each model batch, once started, takes one permit to finish
        self.gate: threading.Semaphore | None = None
        #: set once a model batch has started (a test clears it and waits for the next)
        self.batch_started = threading.Event()
        #: labels of the requests of each step, in order
        self.steps: list[list[str]] = []
        #: set while a step runs (a test waits on it to know the model is busy)
        self.busy = threading.Event()

    def prepare(
        self,
        query: str,
        documents: Sequence[str],
        *,
        instruction: str | None = None,
        chunking: str | ChunkingOptions | None = None,
        truncation: Truncation | None = None,
    ) -> LabelledRequest:
        if not query.strip():
            raise InputError("query must not be empty")
        # The library's own policy (cut either end, or refuse), over word tokens.
        documents = (truncation or Truncation()).apply(documents, self.tokenizer)
        sequences = tuple(tuple(range(len(query.split()) + len(d.split()))) for d in documents)
        return LabelledRequest(sequences=sequences, truncated=(False,) * len(documents), label=query)

    def score_requests_with_best_chunks(
        self,
        requests: Sequence[ScoringRequest],
        *,
        raw: bool = False,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[list[ScoredDocument]]:
        self.busy.set()
        try:
            labels = [getattr(r, "label", "") for r in requests]
            self.steps.append(labels)
            time.sleep(self.delay)
            if self.batch_size is not None:
                self._run_batches(requests, labels, should_stop)
            if self.fail_label is not None and self.fail_label in labels:
                if self.library_error:
                    raise RerankError("the model says no")
                raise RuntimeError("a bug deep in the model")
            sign = -1.0 if raw else 1.0
            return [[ScoredDocument(sign * len(seq)) for seq in r.sequences] for r in requests]
        finally:
            self.busy.clear()

    def _run_batches(
        self, requests: Sequence[ScoringRequest], labels: list[str], should_stop: Callable[[], bool] | None
    ) -> None:
        """The step's sequences in batches of ``batch_size``, ``should_stop`` asked before each."""
        owners = [label for label, r in zip(labels, requests, strict=True) for _ in r.sequences]
        assert self.batch_size is not None
        for start in range(0, len(owners), self.batch_size):
            if should_stop is not None and should_stop():
                raise ScoringCancelled(len(owners) - start, len(owners))
            rows = owners[start : start + self.batch_size]
            self.batches.append((sorted(set(rows)), len(rows)))
            self.batch_started.set()
            if self.gate is not None:  # the batch "runs" until the test lets it finish
                self.gate.acquire()

    def seen(self) -> list[str]:
        """Every label that reached the model, in order."""
        return [label for step in self.steps for label in step]
