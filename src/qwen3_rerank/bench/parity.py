"""Do the peers compute the same function as the PyTorch recipe? Their scores against ``torch-fp32``.

Runs the recipe (``torch-fp32``) and each peer engine on one workload, every pair, through the
benchmark's own worker, and compares every score; for llama.cpp also the token ids its server feeds
the model against the recipe's. The fp32 forms (``ov-fp32``, ``llamacpp-f32``) must agree within
:data:`FP32_TOLERANCE`; the quantized forms are reported, not judged. The peers' model files must
exist (``scripts/setup_peers.sh CHECKPOINT``); an engine without them is reported as skipped.

    python -m qwen3_rerank.bench.parity --checkpoint DIR --out docs/benchmarks/peers/parity-tiny.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..cpu_features import cpu_info
from .peers import PEER_ENGINES, PeerTools, checkpoint_key, locate, package_path, peers_root
from .run import _shell, peer_versions, run_worker

#: Largest |score - recipe score| an fp32 peer may show: the same function, float32 throughout.
FP32_TOLERANCE = 1e-4
FP32_ENGINES = ("ov-fp32", "llamacpp-f32")
DEFAULT_ENGINES = ("ov-fp32", "ov-int8", "ov-int4", "llamacpp-f32", "llamacpp-q8_0", "llamacpp-q4_k_m")
DEFAULT_WORKLOAD = "4x8x64"

Json = dict[str, Any]


def _flat(row: Json) -> list[float]:
    return [float(s) for call in row.get("call_scores") or [] for s in call]


def peer_parity(
    checkpoint: Path,
    tools: PeerTools,
    engines: Sequence[str] = DEFAULT_ENGINES,
    workload: str = DEFAULT_WORKLOAD,
    threads: int | None = 2,
    timeout: float = 1800,
) -> Json:
    """Every score of each peer engine against the recipe's, on ``workload`` (all its pairs).

    Returns:
        ``reference`` (the recipe's row summary and scores) and ``engines``: per engine its scores,
        ``max_abs_diff``, ``mean_abs_diff``, the fp32 ``tolerance`` and ``within_tolerance`` (fp32 forms
        only), llama.cpp's ``token_check``, or ``skipped`` / ``error``.
    """
    unknown = [e for e in engines if e not in PEER_ENGINES]
    if unknown:
        raise ValueError(f"not peer engines: {', '.join(unknown)}")
    common = ["--workload", workload, "--warmup-docs", "1"] + (["--threads", str(threads)] if threads else [])
    key = checkpoint_key(checkpoint)
    reference = run_worker(["--engine", "torch", "--checkpoint", str(checkpoint), *common], timeout=timeout)
    if "error" in reference:
        raise RuntimeError(f"the PyTorch recipe failed: {reference['error']}")
    ref_scores = _flat(reference)
    out: Json = {
        "reference": {"engine": "torch-fp32", "command": reference.get("command"), "scores": ref_scores},
        "engines": {},
    }
    with package_path() as pythonpath:
        for engine in engines:
            found = locate(engine, checkpoint, tools, key)
            if isinstance(found, str):
                out["engines"][engine] = {"skipped": found}
                continue
            row = run_worker(found.flags + common, timeout=timeout, python=found.python, pythonpath=pythonpath)
            if "error" in row:
                out["engines"][engine] = {"error": row["error"], "command": row.get("command")}
                continue
            scores = _flat(row)
            diffs = [abs(a - b) for a, b in zip(scores, ref_scores, strict=True)]
            entry: Json = {
                "command": row.get("command"),
                "pairs": len(scores),
                "max_abs_diff": max(diffs),
                "mean_abs_diff": sum(diffs) / len(diffs),
                "scores": scores,
            }
            if engine in FP32_ENGINES:
                entry["tolerance"] = FP32_TOLERANCE
                entry["within_tolerance"] = entry["max_abs_diff"] <= FP32_TOLERANCE
            for field in ("token_check", "ov_inference_precision", "gguf", "server_command"):
                if field in row:
                    entry[field] = row[field]
            out["engines"][engine] = entry
    return out


def _one_line(entry: Json) -> str:
    """An engine's outcome in a line."""
    if "skipped" in entry or "error" in entry:
        return str(entry.get("skipped") or entry["error"][-200:])
    text = f"max |Δ| {entry['max_abs_diff']:.2e} over {entry['pairs']} pairs"
    check = entry.get("token_check")
    if check:
        text += f", token ids identical {check.get('identical')}/{check.get('checked')}"
    return text


def main(argv: list[str] | None = None) -> int:
    """``python -m qwen3_rerank.bench.parity``: write the comparison as JSON; 1 if an fp32 peer disagrees."""
    p = argparse.ArgumentParser(prog="python -m qwen3_rerank.bench.parity", description=(__doc__ or "").split("\n")[0])
    p.add_argument("--checkpoint", required=True, type=Path, help="the PyTorch checkpoint the peers were made from")
    p.add_argument("--out", type=Path, default=None, help="write the JSON here (default: print it)")
    p.add_argument("--engines", default=",".join(DEFAULT_ENGINES))
    p.add_argument("--workload", default=DEFAULT_WORKLOAD)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--peers", default=None, help="the peers' cache folder (default: $QWEN3_RERANK_PEERS or the user cache)"
    )
    args = p.parse_args(argv)
    tools = PeerTools(peers_root(args.peers))
    started = time.time()
    try:
        result = peer_parity(args.checkpoint, tools, args.engines.split(","), args.workload, args.threads)
    except (ValueError, RuntimeError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    report: Json = {
        "schema": "qwen3-rerank-peer-parity/1",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "command": _shell(
            [sys.executable, "-m", "qwen3_rerank.bench.parity", *(argv if argv is not None else sys.argv[1:])]
        ),
        "checkpoint": str(args.checkpoint),
        "checkpoint_key": checkpoint_key(args.checkpoint),
        "workload": args.workload,
        "threads": args.threads,
        "machine": cpu_info(),
        "peer_versions": peer_versions(tools),
        "fp32_tolerance": FP32_TOLERANCE,
        **result,
        "wall_s": time.time() - started,
    }
    text = json.dumps(report, indent=1) + "\n"
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    else:
        print(text, end="")
    for engine, entry in result["engines"].items():
        print(f"[parity] {engine}: {_one_line(entry)}", file=sys.stderr)
    bad = [e for e, entry in result["engines"].items() if entry.get("within_tolerance") is False]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
