"""The timing loop every engine of the benchmark shares: one call per query, after a warm-up call."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

#: One call per query: ``(query, documents)``.
Calls = list[tuple[str, list[str]]]
#: The untimed warm-up call, if any.
Warmup = tuple[str, list[str]] | None


def timed_calls(
    score: Callable[[str, list[str]], Sequence[float]], calls: Calls, warmup: Warmup, repeat: int
) -> dict[str, Any]:
    """Time ``score`` on every call, ``repeat`` times, after one untimed ``warmup`` call.

    Returns:
        ``latencies_s`` (one per call), ``seconds`` (all timed calls), ``pairs``, ``first_scores``
        (the first four scores of the first call) and ``call_scores`` (every score of the first pass,
        one list per call: the score agreement between engines is taken on them).
    """
    if warmup:
        score(*warmup)
    latencies: list[float] = []
    call_scores: list[list[float]] = []
    pairs = 0
    start = time.perf_counter()
    for r in range(repeat):
        for query, docs in calls:
            c0 = time.perf_counter()
            scores = score(query, docs)
            latencies.append(time.perf_counter() - c0)
            pairs += len(docs)
            if r == 0:
                call_scores.append([float(x) for x in scores])
    seconds = time.perf_counter() - start
    first = call_scores[0][:4] if call_scores else None
    return {
        "latencies_s": latencies,
        "seconds": seconds,
        "pairs": pairs,
        "first_scores": first,
        "call_scores": call_scores,
    }
