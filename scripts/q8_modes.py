"""q8 activation modes of the score graph: error against fp32 and speed, on one exported model.

Error: every mode's yes−no gaps against the same export's fp32 variant (itself equal to the
PyTorch recipe within 1e-5, tests/test_parity.py), default settings otherwise (score graph,
prefix reuse, batches). Speed: all modes loaded in one process and timed round-robin on the same
documents, best of ``--rounds``, so that a shared machine's load falls on every mode alike; the
ratio to ``tensor`` (the file's own per-tensor scheme, the former default) is the figure to read.

    PYTHONPATH=src python scripts/q8_modes.py --model EXPORTED_DIR --out docs/benchmarks/q8-rows/modes-0.6B.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from qwen3_rerank import Reranker
from qwen3_rerank.cpu_features import cpu_info
from qwen3_rerank.score_graph import resolve_activations

WORDS = (
    "the of and to in is was for on that with as by at from his her an were are which this be or had it not "
    "but also has they Paris capital France river city"
).split()


def documents(count: int, low: int, high: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, int(rng.integers(low, high)))) for _ in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="exported folder with fp32 and q8")
    parser.add_argument("--modes", default="tensor,row,row-u8,nbits8")
    parser.add_argument("--error-docs", type=int, default=16)
    parser.add_argument("--speed-docs", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    modes = args.modes.split(",")
    query = "capital of France"

    def load(dtype: str, mode: str = "auto") -> Reranker:
        return Reranker.from_pretrained(args.model, dtype=dtype, q8_activations=mode, threads=args.threads)

    error_docs = documents(args.error_docs, 20, 100, seed=2)
    reference = np.asarray(load("fp32").score(query, error_docs, raw=True))
    errors = {}
    for mode in modes:
        delta = np.abs(np.asarray(load("q8", mode).score(query, error_docs, raw=True)) - reference)
        errors[mode] = {"max": float(delta.max()), "mean": float(delta.mean()), "p95": float(np.percentile(delta, 95))}
        print(mode, errors[mode], flush=True)

    speed_docs = documents(args.speed_docs, 100, 101, seed=1)
    rerankers = {mode: load("q8", mode) for mode in modes}
    for reranker in rerankers.values():
        reranker.score(query, speed_docs[:2])
    load_before = os.getloadavg()
    best = dict.fromkeys(modes, float("inf"))
    for _ in range(args.rounds):
        for mode, reranker in rerankers.items():
            start = time.perf_counter()
            reranker.score(query, speed_docs)
            best[mode] = min(best[mode], time.perf_counter() - start)
    pairs_per_s = {mode: len(speed_docs) / seconds for mode, seconds in best.items()}
    result = {
        "model": str(args.model),
        "machine": {**cpu_info(), "threads": args.threads},
        "auto_resolves_to": resolve_activations("auto"),
        "fp32_abs_gap": {"max": float(np.abs(reference).max()), "mean": float(np.abs(reference).mean())},
        "error_vs_fp32": errors,
        "pairs_per_s_best": pairs_per_s,
        "ratio_to_tensor": {m: v / pairs_per_s["tensor"] for m, v in pairs_per_s.items()} if "tensor" in modes else {},
        "load_average_before_after": [load_before, os.getloadavg()],
        "speed_docs": len(speed_docs),
        "rounds": args.rounds,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
