"""Peak memory and time of one long document, per way of running it, each in a fresh process.

    python scripts/long_doc_memory.py MODEL_DIR [--dtype q8] [--tokens 8192 2048]
        [--variants one-pass layered-512 chunked-512] [--threads 2] [--out results.json]
    python scripts/long_doc_memory.py MODEL_DIR --timing --tokens 2048 [--repeats 3]

Variants:

* ``one-pass``: the score graph in one piece, the whole prompt in one run (``slice_tokens=None``);
* ``layered-N``: the default engine, one session per decoder layer, the prompt fed through each
  layer in slices of N tokens (``slice_tokens=N``);
* ``chunked-N``: the graph in one piece, the prompt fed in slices of N tokens through the whole
  model, each slice on the KV cache of all layers that the previous one returned (chunked
  prefill as other engines do it; measured to show what it costs, not offered).

Each variant runs in its own process, and its peak is that process's ``VmHWM`` (peak resident
set, read from ``/proc/self/status``): the first run of a process is what a user sees. The
prompt is the official template with a document long enough to be cut to ``--tokens`` tokens.

``--timing`` compares speed instead: one process holds a one-pass and a layered reranker and
scores the same prompt with each in turn, ``--repeats`` rounds, and reports the median ratio
(the machine may be shared: a ratio measured round-robin is what survives its noise).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

QUERY = "What does the report conclude about river water quality?"
WORDS = "the river report water quality samples upstream downstream measured nitrate levels season".split()


def document(words: int) -> str:
    """A document of about ``words`` tokens (common words, one token each with their space)."""
    return " ".join(WORDS[i % len(WORDS)] for i in range(words))


def status_mb(key: str) -> float:
    """A ``/proc/self/status`` memory line (``VmRSS``, ``VmHWM``) in MB."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key} in /proc/self/status")


def child(args: argparse.Namespace) -> dict[str, Any]:
    """Load, score one prompt of ``args.tokens`` tokens the way ``args.variant`` says, measure."""
    import numpy as np

    from qwen3_rerank import Reranker
    from qwen3_rerank.layered import plan_slices

    kind, _, size = args.variant.partition("-")
    slice_tokens = int(size) if kind == "layered" else None
    started = time.perf_counter()
    reranker = Reranker.from_pretrained(
        args.model, dtype=args.dtype, threads=args.threads, max_length=args.tokens, slice_tokens=slice_tokens
    )
    load_s = time.perf_counter() - started
    after_load = status_mb("VmRSS")
    request = reranker.prepare(QUERY, [document(args.tokens + 200)])
    sequence = request.sequences[0]
    started = time.perf_counter()
    if kind == "chunked":
        engine = reranker.engine
        names = [engine.logits_name, *engine.present_for_past.values()]
        past = None
        for begin, end in plan_slices(len(sequence), int(size)):
            ids = np.asarray([sequence[begin:end]], dtype=np.int64)
            out = engine.session.run(names, engine.feeds(ids, np.ones((1, end), np.int64), past))
            past = dict(zip(engine.present_for_past, out[1:], strict=True))
            gap = float(out[0][0, 0] - out[0][0, 1])
            del out
    else:
        gap = float(reranker.score_requests([request], raw=True)[0][0])
    run_s = time.perf_counter() - started
    return {
        "variant": args.variant,
        "dtype": args.dtype,
        "prompt_tokens": len(sequence),
        "session": type(reranker.engine.session).__name__,
        "load_s": round(load_s, 2),
        "run_s": round(run_s, 2),
        "rss_after_load_mb": round(after_load),
        "peak_rss_mb": round(status_mb("VmHWM")),
        "gap": gap,
        "loadavg_1m_end": round(os.getloadavg()[0], 2),
    }


def timing(args: argparse.Namespace) -> dict[str, Any]:
    """Round-robin seconds of one prompt, one-pass against layered, in this one process."""
    from qwen3_rerank import Reranker

    common = {"dtype": args.dtype, "threads": args.threads, "max_length": args.tokens}
    rerankers = {
        "one-pass": Reranker.from_pretrained(args.model, slice_tokens=None, **common),
        f"layered-{args.slice}": Reranker.from_pretrained(args.model, slice_tokens=args.slice, **common),
    }
    request = rerankers["one-pass"].prepare(QUERY, [document(args.tokens + 200)])
    seconds: dict[str, list[float]] = {name: [] for name in rerankers}
    gaps: dict[str, float] = {}
    for _ in range(args.repeats):
        for name, reranker in rerankers.items():
            started = time.perf_counter()
            gaps[name] = float(reranker.score_requests([request], raw=True)[0][0])
            seconds[name].append(round(time.perf_counter() - started, 2))
    one, layered = seconds["one-pass"], seconds[f"layered-{args.slice}"]
    return {
        "prompt_tokens": len(request.sequences[0]),
        "seconds": seconds,
        "median_ratio_layered_to_one_pass": round(
            statistics.median(b / a for a, b in zip(one, layered, strict=True)), 3
        ),
        "gaps": gaps,
        "loadavg_1m_end": round(os.getloadavg()[0], 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("--dtype", default="q8")
    parser.add_argument("--tokens", type=int, nargs="+", default=[8192, 2048])
    parser.add_argument("--variants", nargs="+", default=["one-pass", "layered-512"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--timing", action="store_true", help="round-robin speed in one process instead")
    parser.add_argument("--slice", type=int, default=512, help="slice of the layered reranker in --timing")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", dest="variant", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.variant:  # one measurement, in this fresh process
        args.tokens = args.tokens[0]
        print(json.dumps(child(args)))
        return 0
    if args.timing:
        rows = []
        for tokens in args.tokens:
            args.tokens = tokens
            rows.append(timing(args))
            print(json.dumps(rows[-1]), flush=True)
        result: dict[str, Any] = {"timing": rows}
    else:
        rows = []
        for tokens in args.tokens:
            for variant in args.variants:
                command = [sys.executable, __file__, args.model, "--dtype", args.dtype, "--threads", str(args.threads)]
                command += ["--tokens", str(tokens), "--child", variant]
                proc = subprocess.run(command, capture_output=True, text=True)
                if proc.returncode != 0:
                    row = {
                        "variant": variant,
                        "prompt_tokens": tokens,
                        "error": proc.stderr.strip()[-500:]
                        or f"exit status {proc.returncode} (killed: out of memory?)",
                    }
                else:
                    row = json.loads(proc.stdout.strip().splitlines()[-1])
                rows.append(row)
                print(json.dumps(row), flush=True)
        result = {"runs": rows}
    result["command"] = "python scripts/long_doc_memory.py " + " ".join(argv if argv is not None else sys.argv[1:])
    result["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform()}
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
