"""``qwen3-rerank serve`` with a slowed-down model, for tests of the server as a real process.

    python tests/slow_server.py SECONDS serve --model DIR [serve options ...]

Loads the real model as ``serve`` does, wraps it so that every scoring step first sleeps
SECONDS, and runs it through the production start, signal handling and drain
(:func:`qwen3_rerank.server.run.serve`). Requests then stay in flight long enough to send
the process a signal while they are; the production settings need no test hook for it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from qwen3_rerank import Reranker, ScoredDocument, ScoringRequest
from qwen3_rerank.cli import build_parser
from qwen3_rerank.cli.serve import resolve
from qwen3_rerank.server import logs
from qwen3_rerank.server.run import serve


class SlowReranker:
    """A :class:`Reranker` whose ``score_requests_with_best_chunks`` sleeps ``delay`` s first."""

    def __init__(self, inner: Reranker, delay: float) -> None:
        self.inner = inner
        self.delay = delay

    @property
    def tokenizer(self) -> Any:
        return self.inner.tokenizer

    @property
    def max_length(self) -> int:
        return self.inner.max_length

    def prepare(self, query: str, documents: Sequence[str], **options: Any) -> ScoringRequest:
        return self.inner.prepare(query, documents, **options)

    def score_requests_with_best_chunks(
        self,
        requests: Sequence[ScoringRequest],
        *,
        raw: bool = False,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[list[ScoredDocument]]:
        time.sleep(self.delay)
        return self.inner.score_requests_with_best_chunks(requests, raw=raw, should_stop=should_stop)


def main(argv: list[str]) -> int:
    delay = float(argv[0])
    settings, specs = resolve(build_parser().parse_args(argv[1:]))
    logs.configure(settings.log_level)
    models = {spec.name: SlowReranker(spec.load(), delay) for spec in specs}
    return serve(settings, models)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
