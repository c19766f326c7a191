"""Resident memory of the runtime: load a model, score 4 documents, print RSS (one JSON line).

    python scripts/memory_check.py MODEL_DIR q8 [--words 500] [--threads 1]

Run it twice: the first run builds the score graph (a one-time cost), the second is what a user
sees on every start. Peak RSS is ``ru_maxrss`` of this process.
"""

from __future__ import annotations

import argparse
import json
import resource
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("dtype")
    parser.add_argument("--words", type=int, default=120, help="words per document (about tokens)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    from qwen3_rerank import Reranker

    started = time.perf_counter()
    reranker = Reranker.from_pretrained(args.model, dtype=args.dtype, threads=args.threads)
    load_s = time.perf_counter() - started
    after_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    documents = [("word " * args.words) + str(i) for i in range(4)]
    request = reranker.prepare("what is a word?", documents)
    reranker.score_requests([request])
    print(
        json.dumps(
            {
                "dtype": args.dtype,
                "graph": reranker.engine.path.name,
                "prompt_tokens": max(len(s) for s in request.sequences),
                "load_s": round(load_s, 2),
                "rss_after_load_mb": round(after_load),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            }
        )
    )


if __name__ == "__main__":
    main()
