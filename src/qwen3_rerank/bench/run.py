"""Run the benchmark matrix: every engine × workload in its own subprocess, one after another.

Writes ``results.json``, PNG plots and ``summary.md`` into ``--out``. Engines:

* ``ours-<dtype>-fast``: this library, score graph + prefix reuse (the defaults);
* ``ours-<dtype>-pr1``: score graph + prefix reuse with ``batch_size=1``: ORT's
  ``GroupQueryAttention`` (the fused attention of the q8/q4/fp16 files) refuses a batch of several
  rows with more than one new token on top of a past KV cache, so the default prefix reuse fails
  on those files; one document per run is what it accepts;
* ``ours-<dtype>-sg``: score graph, no prefix reuse;
* ``ours-<dtype>-plain``: the published graph as is (full logits), no prefix reuse;
* ``torch-fp32`` / ``torch-fp32-ltk1``: the official PyTorch recipe (transformers), full logits /
  ``logits_to_keep=1``; ``torch-bf16`` is run only where the CPU has bf16 instructions;
* ``js-q8`` / ``js-q4``: Transformers.js v4 in Node, the model card's recipe, same files;
* peers (set up by ``scripts/setup_peers.sh``, see :mod:`peers`; skipped with the reason when not):
  ``ov-int8`` / ``ov-int4`` / ``ov-fp32``: OpenVINO (optimum-intel ``OVModelForCausalLM``, weight
  compression by ``optimum-cli export openvino --weight-format``), the recipe's tokenization and
  yes/no logits, in the peer's own venv; ``llamacpp-q8_0`` / ``llamacpp-q4_k_m`` / ``llamacpp-f32``
  (``-f16``): ``llama-server --reranking`` on GGUFs made by llama.cpp's converter and
  ``llama-quantize``, one ``/v1/rerank`` request per call.

Every measured row also records its score agreement with ``torch-fp32`` on the same workload
(``vs_torch_fp32_max_abs_diff``, over the first call's documents both ran).

    python -m qwen3_rerank.bench.run --model ONNX_DIR --checkpoint TORCH_DIR [--quick]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..cpu_features import cpu_info
from .peers import PEER_ENGINES, PeerLaunch, PeerTools, checkpoint_key, locate, package_path, peers_root
from .report import Json
from .workloads import MAIN_WORKLOADS, QUICK_WORKLOADS

DEFAULT_OUT = Path("docs/benchmarks/cpu-0.6B")
OURS_DTYPES = ("q8", "q4", "fp32", "fp16")
REFERENCE_TORCH = "torch-fp32"
REFERENCE_TORCH_LTK = "torch-fp32-ltk1"

# Documents (per query) and queries each engine runs of each workload in the full run, so that the
# whole matrix fits in about 35 minutes on 2 cores; None: all. Throughput is per pair, so a cap
# changes only how long the measurement takes (and the per-call latency, which is per call as run).
DEFAULT_PLAN: dict[str, dict[str, tuple[int | None, int | None]]] = {
    # engine: {workload: (max_queries, max_docs)}
    "ours-q8-fast": {"1x100x128": (None, 4)},
    "ours-q8-pr1": {"1x100x128": (None, 12), "1x20x512": (None, 3), "16x10x256": (2, 4)},
    "ours-q8-sg": {"1x100x128": (None, 12), "1x20x512": (None, 3), "16x10x256": (2, 4)},
    "ours-q8-plain": {"1x100x128": (None, 4)},
    "ours-q4-pr1": {"1x100x128": (None, 12), "1x20x512": (None, 3), "16x10x256": (2, 4)},
    "ours-q4-sg": {"1x100x128": (None, 12), "1x20x512": (None, 3), "16x10x256": (2, 4)},
    "ours-fp32-fast": {"1x100x128": (None, 4)},
    "ours-fp32-sg": {"1x100x128": (None, 4)},
    "ours-fp16-sg": {"1x100x128": (None, 2)},
    "torch-fp32": {"1x100x128": (None, 8), "1x20x512": (None, 2), "16x10x256": (1, 4)},
    "torch-fp32-ltk1": {"1x100x128": (None, 8), "1x20x512": (None, 2), "16x10x256": (1, 4)},
    "torch-bf16": {"1x100x128": (None, 8)},
    "js-q8": {"1x100x128": (None, 3), "1x20x512": (None, 1)},
    "js-q4": {"1x100x128": (None, 3), "1x20x512": (None, 1)},
    # Peers: quantized forms as the main comparison, fp32 forms for the score agreement.
    "ov-int8": {"1x100x128": (None, 12), "1x20x512": (None, 3), "16x10x256": (2, 4)},
    "ov-int4": {"1x100x128": (None, 12), "1x20x512": (None, 3), "16x10x256": (2, 4)},
    "ov-fp32": {"1x100x128": (None, 4)},
    "llamacpp-q8_0": {"1x100x128": (None, 12), "1x20x512": (None, 3), "16x10x256": (2, 4)},
    "llamacpp-q4_k_m": {"1x100x128": (None, 12), "1x20x512": (None, 3), "16x10x256": (2, 4)},
    "llamacpp-f32": {"1x100x128": (None, 4)},
}
QUICK_ENGINES = ("ours-fp32-fast", "ours-fp32-sg", "ours-fp32-plain")


def engine_args(name: str) -> list[str]:
    """Worker flags of an engine name."""
    parts = name.split("-")
    if parts[0] == "ours":
        dtype, mode = parts[1], parts[2]
        flags = ["--engine", "ours", "--dtype", dtype]
        if mode == "sg":
            flags.append("--no-prefix-reuse")
        elif mode == "pr1":  # prefix reuse one document per run (what a GroupQueryAttention graph accepts)
            flags += ["--batch-size", "1"]
        elif mode == "plain":
            flags += ["--no-score-graph", "--no-prefix-reuse"]
        elif mode != "fast":
            raise ValueError(f"unknown engine {name!r}")
        return flags
    if parts[0] == "torch":
        flags = ["--engine", "torch", "--torch-dtype", parts[1]]
        if len(parts) > 2 and parts[2] == "ltk1":
            flags.append("--logits-to-keep")
        return flags
    if parts[0] == "js":
        return ["--engine", "js", "--dtype", parts[1]]
    raise ValueError(f"unknown engine {name!r}")


def run_worker(
    flags: list[str], timeout: float | None = None, python: Path | None = None, pythonpath: Path | None = None
) -> Json:
    """Run :mod:`qwen3_rerank.bench.worker` with ``flags`` in a subprocess.

    Args:
        flags: the worker's command-line flags.
        timeout: seconds before the worker is stopped (default: none).
        python: the interpreter (default: this one); a peer's venv runs its engine.
        pythonpath: put first on the worker's ``PYTHONPATH`` (this package, for another venv).

    Returns:
        The worker's JSON result with ``process_wall_s`` and ``command``, or ``{"error", "command"}``
        when it failed or timed out.
    """
    cmd = [str(python or sys.executable), "-m", "qwen3_rerank.bench.worker", *flags]
    env = None
    if pythonpath is not None:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(pythonpath), os.environ.get("PYTHONPATH")])),
        }
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s", "command": _shell(cmd)}
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr.strip() or proc.stdout.strip())[-1500:], "command": _shell(cmd)}
    result: Json = json.loads(lines[-1])
    result["process_wall_s"] = wall
    result["command"] = _shell(cmd)
    return result


def _shell(cmd: list[str]) -> str:
    import shlex

    return " ".join(shlex.quote(c) for c in cmd).replace(sys.executable, "python")


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- the matrix ------------------------------------------------------------------------------------


def _row_key(row: Json) -> tuple[Any, Any]:
    return (row.get("name"), row.get("workload", {}).get("name"))


def peer_launches(engines: Sequence[str], checkpoint: Path | None, tools: PeerTools) -> dict[str, PeerLaunch | str]:
    """How to run each peer engine among ``engines`` on ``checkpoint``, or why it is skipped."""
    out: dict[str, PeerLaunch | str] = {}
    peers = [e for e in engines if e in PEER_ENGINES]
    if not peers:
        return out
    if checkpoint is None:
        return {e: "no --checkpoint (the peers' model files are made from it)" for e in peers}
    try:
        key = checkpoint_key(checkpoint)
    except FileNotFoundError as err:
        return {e: str(err) for e in peers}
    for engine in peers:
        out[engine] = locate(engine, checkpoint, tools, key)
    return out


def run_matrix(args: argparse.Namespace) -> list[Json]:
    """Every planned engine × workload; each row is also appended to ``rows.jsonl`` as it completes,
    and ``--resume`` takes the measured rows found there instead of running them again."""
    with package_path() as pythonpath:
        return _run_matrix(args, pythonpath)


def _run_matrix(args: argparse.Namespace, pythonpath: Path) -> list[Json]:
    results = []
    peers = peer_launches(args.engines, args.checkpoint, PeerTools(peers_root(args.peers)))
    cpu = cpu_info()
    rows_path = Path(args.out) / "rows.jsonl"
    done = {}
    if args.resume and rows_path.is_file():
        for line in rows_path.read_text().splitlines():
            row = json.loads(line)
            if "pairs_per_s" in row:
                done[_row_key(row)] = row
    elif rows_path.exists():
        rows_path.unlink()
    for workload in args.workloads:
        for engine in args.engines:
            plan = DEFAULT_PLAN.get(engine, {})
            if args.planned_only and workload not in plan:
                continue
            if engine.startswith("torch-bf16") and not cpu["bf16"] and not args.force_bf16:
                results.append(
                    {
                        "name": engine,
                        "workload": {"name": workload},
                        "skipped": "bf16 skipped: no CPU support (no avx512_bf16/amx_bf16)",
                    }
                )
                continue
            if engine.startswith("torch") and not args.checkpoint:
                results.append({"name": engine, "workload": {"name": workload}, "skipped": "no --checkpoint"})
                continue
            peer = peers.get(engine)
            if isinstance(peer, str):
                _log(f"[bench] {engine} skipped: {peer}")
                results.append({"name": engine, "workload": {"name": workload}, "skipped": f"skipped: {peer}"})
                continue
            capped = not (args.quick or args.all_pairs)
            max_q, max_d = plan.get(workload, (None, None)) if capped else (None, None)
            if (engine, workload) in done:
                _log(f"[bench] {engine} on {workload}: from {rows_path.name}")
                results.append(done[(engine, workload)])
                continue
            flags = (peer.flags if peer else engine_args(engine)) + [
                "--workload",
                workload,
                "--repeat",
                str(args.repeat),
            ]
            if engine.startswith("torch"):
                flags += ["--checkpoint", str(args.checkpoint)]
            elif not peer:
                flags += ["--model", str(args.model)]
            if args.threads:
                flags += ["--threads", str(args.threads)]
            if max_q:
                flags += ["--max-queries", str(max_q)]
            if max_d:
                flags += ["--max-docs", str(max_d)]
            flags += ["--warmup-docs", str(1 if engine.startswith("js") else args.warmup_docs)]
            _log(f"[bench] {engine} on {workload} ...")
            if peer and peer.python:
                result = run_worker(flags, timeout=args.timeout, python=peer.python, pythonpath=pythonpath)
            else:
                result = run_worker(flags, timeout=args.timeout)
            result["name"] = engine
            if "error" in result:
                result["workload"] = {"name": workload}
                _log(f"[bench]   error: {result['error'][-300:]}")
            else:
                _log(
                    f"[bench]   {result['pairs_per_s']:.2f} pairs/s, p50 {result['latency_p50_s']:.2f} s, "
                    f"RSS {result['peak_rss_mb']:.0f} MB, load {result['load_s']:.1f} s"
                )
            results.append(result)
            with rows_path.open("a") as handle:
                handle.write(json.dumps(result) + "\n")
    return results


#: Ratio key → peer engine: every row's throughput over the peer's on the same workload.
PEER_RATIOS = (
    ("vs_ov_int8", "ov-int8"),
    ("vs_ov_int4", "ov-int4"),
    ("vs_llamacpp_q8_0", "llamacpp-q8_0"),
    ("vs_llamacpp_q4_k_m", "llamacpp-q4_k_m"),
)


def score_agreement(row: Json, reference: Json) -> tuple[float, int] | None:
    """Largest absolute score difference between two rows of one workload, and how many scores it
    compared: the first call's documents both scored (``call_scores``, else ``first_scores``)."""

    def first_call(r: Json) -> list[float] | None:
        calls = r.get("call_scores")
        value = calls[0] if calls else r.get("first_scores")
        return None if not value else [float(x) for x in value]

    a, b = first_call(row), first_call(reference)
    if not a or not b:
        return None
    n = min(len(a), len(b))
    return max(abs(x - y) for x, y in zip(a[:n], b[:n], strict=True)), n


def add_ratios(results: list[Json], gemm: Json | None, memory_8k: list[Json] | None = None) -> Json:
    """Ratios of every measured row to the references of the same workload, in place; the targets."""
    by = {(r["name"], r["workload"]["name"]): r for r in results if "pairs_per_s" in r}
    ceilings = (gemm or {}).get("kernels", {})
    for r in results:
        if "pairs_per_s" not in r:
            continue
        w = r["workload"]["name"]
        ratios: dict[str, float | str] = {}
        for key, ref in (
            ("vs_torch_fp32", REFERENCE_TORCH),
            ("vs_torch_fp32_ltk1", REFERENCE_TORCH_LTK),
            ("vs_js_q8", "js-q8"),
            ("vs_js_q4", "js-q4"),
            *PEER_RATIOS,
        ):
            other = by.get((ref, w))
            if other and other is not r:
                ratios[key] = r["pairs_per_s"] / other["pairs_per_s"]
        reference = by.get((REFERENCE_TORCH, w))
        if reference is not None and reference is not r:
            agreement = score_agreement(r, reference)
            if agreement is not None:
                r["vs_torch_fp32_max_abs_diff"], r["vs_torch_fp32_compared"] = agreement
        if r["name"].startswith("ours-"):
            _, dtype, mode = r["name"].split("-")
            if mode in ("fast", "pr1") and (f"ours-{dtype}-sg", w) in by:
                ratios["prefix_reuse_speedup"] = r["pairs_per_s"] / by[(f"ours-{dtype}-sg", w)]["pairs_per_s"]
            if mode in ("fast", "pr1", "sg") and (f"ours-{dtype}-plain", w) in by:
                ratios["vs_plain_graph"] = r["pairs_per_s"] / by[(f"ours-{dtype}-plain", w)]["pairs_per_s"]
            # q4's score graph runs its 4-bit linears as int8 (score_graph_build._nbits_as_int8).
            kernel = {"q8": "int8", "fp32": "fp32", "q4": "int8"}.get(dtype)
            if kernel is not None and kernel in ceilings:
                ratios["fraction_of_gemm_ceiling"] = r["executed_gflops"] / ceilings[kernel]["gflops"]
                ratios["gemm_ceiling_kernel"] = kernel
        r["ratios"] = ratios

    def get(name: str, workload: str, key: str) -> Any:
        row = by.get((name, workload))
        return (
            None
            if row is None
            else row.get("ratios", {}).get(key)
            if key.startswith(("vs_", "prefix", "fraction"))
            else row.get(key)
        )

    w = "1x100x128"

    def best(dtype: str, workload: str, key: str) -> Any:
        """The figure of this dtype's fastest working score-graph variant (fast, pr1 or sg)."""
        rows = [
            by[(f"ours-{dtype}-{m}", workload)] for m in ("fast", "pr1", "sg") if (f"ours-{dtype}-{m}", workload) in by
        ]
        if not rows:
            return None
        top = max(rows, key=lambda row: row["pairs_per_s"])
        chosen[f"{dtype}@{workload}"] = top["name"]
        return get(top["name"], workload, key)

    chosen: dict[str, str] = {}

    def fastest_peer(workload: str, kinds: tuple[str, ...]) -> Json | None:
        rows = [by[(peer, workload)] for peer in kinds if (peer, workload) in by]
        return max(rows, key=lambda row: row["pairs_per_s"]) if rows else None

    def over_fastest_peer(dtype: str, workload: str, kinds: tuple[str, ...]) -> float | None:
        peer = fastest_peer(workload, kinds)
        ours = best(dtype, workload, "pairs_per_s")
        if peer is None or ours is None:
            return None
        chosen[f"fastest {'/'.join(kinds)}@{workload}"] = peer["name"]
        return float(ours) / float(peer["pairs_per_s"])

    quantized_peers = ("ov-int8", "ov-int4", "llamacpp-q8_0", "llamacpp-q4_k_m")
    # Issue 12's targets (docs/benchmarks/cpu-0.6B/analysis.md); the others are reported, no target.
    targets: dict[str, Any] = {}
    for workload in MAIN_WORKLOADS:
        main = workload == w
        targets |= {
            f"q8_fraction_of_int8_ceiling_{workload}": {
                "value": best("q8", workload, "fraction_of_gemm_ceiling"),
                "target": 0.7 if main else None,
            },
            f"q8_vs_fastest_peer_{workload}": {
                "value": over_fastest_peer("q8", workload, quantized_peers),
                "target": 3.0 if main else None,
            },
            f"q8_vs_torch_fp32_{workload}": {
                "value": best("q8", workload, "vs_torch_fp32"),
                "target": 8.0 if main else None,
            },
            f"q8_vs_ov_int8_{workload}": {"value": best("q8", workload, "vs_ov_int8"), "target": None},
            f"q8_vs_llamacpp_q8_0_{workload}": {"value": best("q8", workload, "vs_llamacpp_q8_0"), "target": None},
            f"q4_vs_ov_int4_{workload}": {"value": best("q4", workload, "vs_ov_int4"), "target": 1.2 if main else None},
            f"q4_vs_llamacpp_q4_k_m_{workload}": {
                "value": best("q4", workload, "vs_llamacpp_q4_k_m"),
                "target": 1.2 if main else None,
            },
            f"q4_vs_fastest_4bit_peer_{workload}": {
                "value": over_fastest_peer("q4", workload, ("ov-int4", "llamacpp-q4_k_m")),
                "target": 1.2 if main else None,
            },
            f"q8_peak_rss_mb_{workload}": {
                "value": best("q8", workload, "peak_rss_mb"),
                "target": 1024.0,
                "lower_is_better": True,
            },
            f"q4_peak_rss_mb_{workload}": {
                "value": best("q4", workload, "peak_rss_mb"),
                "target": min(
                    (by[(p, workload)]["peak_rss_mb"] for p in ("ov-int4", "llamacpp-q4_k_m") if (p, workload) in by),
                    default=None,
                ),
                "lower_is_better": True,
            },
        }
    targets |= {
        "q8_vs_torch_fp32_ltk1_1x100x128": {"value": best("q8", w, "vs_torch_fp32_ltk1"), "target": None},
        "q4_vs_js_q4_1x100x128": {"value": best("q4", w, "vs_js_q4"), "target": 3.0},
        "q8_vs_js_q8_1x100x128": {"value": best("q8", w, "vs_js_q8"), "target": None},
        "prefix_reuse_q8_1x100x128": {
            "value": get("ours-q8-fast", w, "prefix_reuse_speedup") or get("ours-q8-pr1", w, "prefix_reuse_speedup"),
            "target": 1.3,
        },
    }
    for row in memory_8k or []:
        if "peak_rss_mb" in row and row.get("name", "").startswith("ours-q8"):
            targets["q8_peak_rss_mb_1x1x8192"] = {
                "value": row["peak_rss_mb"],
                "target": 1200.0,
                "lower_is_better": True,
            }
            targets["q8_seconds_1x1x8192"] = {"value": row.get("seconds"), "target": None}
    targets["_variants_used"] = chosen
    for name, t in targets.items():
        if name.startswith("_"):
            continue
        if t["value"] is None or t["target"] is None:
            t["met"] = None
        elif t.get("lower_is_better"):
            t["met"] = t["value"] <= t["target"]
        else:
            t["met"] = t["value"] >= t["target"]
    return targets


# -- extras: memory at 8k, cold/warm start, session options, profile ---------------------------------


def _linked_copy(model: Path, dtype: str, into: Path) -> Path:
    """A folder of symlinks to ``model``'s files for ``dtype``: its score-graph cache starts empty."""
    from ..files import DTYPE_FILES, OPTIONAL_FILES, REQUIRED_FILES

    into.mkdir(parents=True, exist_ok=True)
    (into / "onnx").mkdir(exist_ok=True)
    for name in (*REQUIRED_FILES, *OPTIONAL_FILES):
        if (model / name).is_file():
            os.symlink((model / name).resolve(), into / name)
    stem = DTYPE_FILES[dtype]
    for path in (model / "onnx").glob(stem + "*"):
        if ".score." not in path.name:
            os.symlink(path.resolve(), into / "onnx" / path.name)
    return into


def run_startup(args: argparse.Namespace, dtypes: Sequence[str] = ("q8",)) -> list[Json]:
    """Load times: cold (no score graph cached: it is built), warm (cached), and the warm score graph
    saved by ONNX Runtime already optimized and loaded with optimizations off (a possible further cache).

    Runs on a folder of symlinks to the model, so the cold start really builds the score graph (the
    model files may still be in the OS page cache: "cold" means no cached graph, not an empty disk cache).
    The warm and ORT-optimized phases also score a small call, and their scores must agree.
    """
    rows = []
    for dtype in dtypes:
        with tempfile.TemporaryDirectory(prefix="qwen3-bench-start-") as tmp:
            folder = _linked_copy(Path(args.model), dtype, Path(tmp) / "model")
            optimized = folder / "onnx" / "model.ort-optimized.onnx"
            save = {
                "optimized_model_filepath": str(optimized),
                "config_entries": {
                    "session.optimized_model_external_initializers_file_name": optimized.name + "_data",
                    "session.optimized_model_external_initializers_min_size_in_bytes": 1024,
                },
            }
            # One document per run with prefix reuse: what every graph accepts (see ours-<dtype>-pr1).
            base = ours_flags(dtype, folder, "1x8x32", "--batch-size", "1")
            if args.threads:
                base += ["--threads", str(args.threads)]
            phases = [
                ("cold", ["--load-only"]),
                ("warm", []),
                ("warm, saving ORT-optimized graph", ["--load-only", "--session-options", json.dumps(save)]),
                (
                    "ORT-optimized graph, optimizations off",
                    [
                        "--onnx-path",
                        str(optimized),
                        "--session-options",
                        json.dumps({"graph_optimization_level": "ORT_DISABLE_ALL"}),
                    ],
                ),
            ]
            for phase, extra in phases:
                _log(f"[bench] start {dtype} {phase} ...")
                result = run_worker(base + extra, timeout=args.timeout)
                result.update(phase=phase, name=f"ours-{dtype}-fast")
                rows.append(result)
                _log(f"[bench]   load {result.get('load_s', float('nan')):.2f} s {result.get('error', '')[-300:]}")
    return rows


def ours_flags(dtype: str, model: Path | str, workload: str, *extra: str) -> list[str]:
    """Worker flags that run this library's ``dtype`` files of ``model`` on ``workload``, then ``extra``."""
    return ["--engine", "ours", "--dtype", dtype, "--model", str(model), "--workload", workload, *extra]


def run_memory(args: argparse.Namespace, dtypes: Sequence[str] = ("q8", "fp32")) -> list[Json]:
    """Peak memory and time of each dtype's fast engine on one 8,192-token document."""
    rows = []
    for dtype in dtypes:
        _log(f"[bench] memory ours-{dtype}-fast on 1x1x8192 ...")
        flags = ours_flags(dtype, args.model, "1x1x8192", "--warmup-docs", "0")
        if args.threads:
            flags += ["--threads", str(args.threads)]
        result = run_worker(flags, timeout=args.timeout)
        result["name"] = f"ours-{dtype}-fast"
        rows.append(result)
        _log(
            f"[bench]   RSS {result.get('peak_rss_mb', float('nan')):.0f} MB, "
            f"{result.get('seconds', float('nan')):.1f} s"
        )
    return rows


SWEEP = [
    {"intra_op_num_threads": 2, "enable_cpu_mem_arena": True, "enable_mem_pattern": True},
    {"intra_op_num_threads": 1, "enable_cpu_mem_arena": True, "enable_mem_pattern": True},
    {"intra_op_num_threads": 2, "enable_cpu_mem_arena": False, "enable_mem_pattern": False},
    {"intra_op_num_threads": 2, "config_entries": {"session.disable_prepacking": "1"}},
]


def run_sweep(args: argparse.Namespace, workload: str = "1x100x128", max_docs: int = 4) -> list[Json]:
    """Throughput and memory of the ``--sweep-dtype`` score graph under each set of session options in ``SWEEP``."""
    rows = []
    for options in SWEEP if not args.quick else SWEEP[:2]:
        _log(f"[bench] sweep q8 {options} ...")
        flags = ours_flags(
            args.sweep_dtype,
            args.model,
            workload,
            *("--max-docs", str(max_docs), "--session-options", json.dumps(options)),
            *("--repeat", str(args.repeat), "--warmup-docs", "2", "--no-prefix-reuse"),
        )
        result = run_worker(flags, timeout=args.timeout)
        result["name"] = f"ours-{args.sweep_dtype}-fast"
        rows.append(result)
        _log(
            f"[bench]   {result.get('pairs_per_s', float('nan')):.2f} pairs/s, "
            f"RSS {result.get('peak_rss_mb', float('nan')):.0f} MB"
        )
    return rows


def run_scaling(args: argparse.Namespace, workload: str = "1x100x128", max_docs: int = 12) -> list[Json]:
    """q8 throughput with one session of 2 threads, one of 1 thread, and two 1-thread sessions in
    two processes at once (what a server with one worker per core does): how a machine's cores
    are best split (issue 12 item 5, README "Scaling")."""

    def flags(threads: int) -> list[str]:
        extra = ("--max-docs", str(max_docs), "--threads", str(threads), "--repeat", str(args.repeat))
        return ours_flags(args.sweep_dtype, args.model, workload, *extra)

    rows = []
    for threads in (2, 1):
        _log(f"[bench] scaling: 1 session x {threads} thread(s) ...")
        result = run_worker(flags(threads), timeout=args.timeout)
        result.update(name=f"ours-{args.sweep_dtype}-fast", sessions=1, threads=threads)
        rows.append(result)
    _log("[bench] scaling: 2 sessions x 1 thread, in two processes at once ...")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        both = list(pool.map(lambda _: run_worker(flags(1), timeout=args.timeout), range(2)))
    errors = [r["error"] for r in both if "error" in r]
    pair = {"name": f"ours-{args.sweep_dtype}-fast", "sessions": 2, "threads": 1, "processes": both}
    if errors:
        pair["error"] = errors[0]
    else:
        pair["pairs_per_s"] = sum(r["pairs_per_s"] for r in both)
        pair["peak_rss_mb"] = sum(r["peak_rss_mb"] for r in both)
    rows.append(pair)
    for r in rows:
        _log(f"[bench]   {r['sessions']} x {r['threads']}: {r.get('pairs_per_s', float('nan')):.2f} pairs/s")
    return rows


def run_profile(args: argparse.Namespace, workload: str = "1x100x128", max_docs: int = 8) -> Json:
    """ORT profile of the q8 score graph, node time grouped by op type."""
    with tempfile.TemporaryDirectory(prefix="qwen3-bench-prof-") as tmp:
        flags = ours_flags(
            args.sweep_dtype,
            args.model,
            workload,
            *("--max-docs", str(max_docs), "--profile", str(Path(tmp) / "ort")),
            *("--warmup-docs", "2", "--no-prefix-reuse"),
        )
        _log(f"[bench] profile {args.sweep_dtype} on {workload} ...")
        result = run_worker(flags, timeout=args.timeout)
        if "error" in result:
            return result
        result["by_op_type"] = summarize_profile(Path(result["profile_file"]))
        result["profile_file"] = Path(result["profile_file"]).name
    return result


def summarize_profile(path: Path) -> list[Json]:
    """Node time per op type (ms and share), from an ORT JSON profile, largest first."""
    events = json.loads(path.read_text())
    totals: dict[str, float] = {}
    counts: dict[str, int] = {}
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        op = e.get("args", {}).get("op_name", "?")
        totals[op] = totals.get(op, 0.0) + e.get("dur", 0) / 1000.0
        counts[op] = counts.get(op, 0) + 1
    whole = sum(totals.values()) or 1.0
    return [
        {"op_type": op, "ms": ms, "share": ms / whole, "calls": counts[op]}
        for op, ms in sorted(totals.items(), key=lambda kv: -kv[1])
    ]


# -- main ------------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the benchmark's flags to ``p`` (shared by ``qwen3-rerank bench`` and ``python -m``)."""
    p.add_argument("--model", required=True, help="ONNX model folder in the published layout")
    p.add_argument(
        "--checkpoint", default=None, help="PyTorch checkpoint folder of the same model (torch and peer engines)"
    )
    p.add_argument(
        "--peers",
        default=None,
        help="the peers' cache folder made by scripts/setup_peers.sh (default: $QWEN3_RERANK_PEERS or "
        "~/.cache/qwen3-rerank/peers)",
    )
    p.add_argument("--out", default=str(DEFAULT_OUT), help=f"output folder (default: {DEFAULT_OUT})")
    p.add_argument("--workloads", default=None, help="comma-separated workload names (QxDxT)")
    p.add_argument("--engines", default=None, help="comma-separated engine names (see module doc)")
    p.add_argument("--repeat", type=int, default=1, help="timed passes over each workload (default 1)")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads for every engine (default: library's)")
    p.add_argument(
        "--quick", action="store_true", help="small workloads, our fp32 engines, no extras (tests, tiny model)"
    )
    p.add_argument("--all-pairs", action="store_true", help="run every engine on every pair of every workload")
    p.add_argument(
        "--extras",
        default=None,
        help="comma-separated: gemm,startup,memory,sweep,scaling,profile (default: all; quick: none)",
    )
    p.add_argument("--warmup-docs", type=int, default=2, help="documents in each untimed warm-up call (js: 1)")
    p.add_argument("--update", action="store_true", help="rerun only --extras into the existing results.json in --out")
    p.add_argument("--resume", action="store_true", help="reuse the measured rows of rows.jsonl in --out")
    p.add_argument("--sweep-dtype", default="q8")
    p.add_argument("--memory-dtypes", default="q8,q4,fp32", help="dtypes scored on an 8,192-token document")
    p.add_argument("--force-bf16", action="store_true", help="run torch-bf16 even without CPU bf16 support")
    p.add_argument("--timeout", type=float, default=900, help="seconds per worker process")
    p.add_argument("--no-plots", action="store_true")


def run(args: argparse.Namespace) -> Json:
    """Run the benchmark the flags of :func:`add_arguments` describe and write its files into ``--out``.

    Returns:
        The report, as written to ``results.json``.
    """
    args.model = Path(args.model)
    args.checkpoint = Path(args.checkpoint) if args.checkpoint else None
    explicit = bool(args.engines and args.workloads)
    args.workloads = (
        args.workloads.split(",") if args.workloads else list(QUICK_WORKLOADS if args.quick else MAIN_WORKLOADS)
    )
    args.engines = args.engines.split(",") if args.engines else list(QUICK_ENGINES if args.quick else DEFAULT_PLAN)
    # The full run follows DEFAULT_PLAN; --quick, --all-pairs or explicit engines + workloads run every pair.
    args.planned_only = not (args.quick or args.all_pairs or explicit)
    extras = (
        args.extras.split(",")
        if args.extras is not None
        else ([] if args.quick else ["gemm", "startup", "memory", "sweep", "scaling", "profile"])
    )
    extras = [e for e in extras if e]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    report: Json = {
        "schema": "qwen3-rerank-bench/1",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(["qwen3-rerank", *sys.argv[1:]])
        if args.from_cli
        else _shell([sys.executable, "-m", "qwen3_rerank.bench.run", *sys.argv[1:]]),
        "machine": cpu_info(),
        "versions": _versions(),
        "peer_versions": peer_versions(PeerTools(peers_root(args.peers)))
        if any(e in PEER_ENGINES for e in args.engines)
        else None,
        "model": str(args.model),
        "checkpoint": str(args.checkpoint) if args.checkpoint else None,
        "quick": args.quick,
        "plan": {e: DEFAULT_PLAN.get(e) for e in args.engines} if not (args.quick or args.all_pairs) else "all pairs",
    }
    if args.update:
        # Rerun only the listed extras into an existing report; the matrix and the rest are kept.
        previous = json.loads((out / "results.json").read_text())
        previous.setdefault("updates", []).append(
            {"command": report["command"], "extras": extras, "created": report["created"]}
        )
        report = previous
    if "gemm" in extras:
        _log("[bench] GEMM ceilings ...")
        report["gemm"] = _in_subprocess("gemm", args)
    # The short extras first, the matrix, then the long 8k-token memory runs.
    if "profile" in extras:
        report["profile"] = run_profile(args)
    if "sweep" in extras:
        report["session_sweep"] = run_sweep(args)
    if "startup" in extras:
        report["startup"] = run_startup(args)
    if "scaling" in extras:
        report["scaling"] = run_scaling(args)
    if not args.update:
        report["results"] = run_matrix(args)
    if "memory" in extras:
        report["memory_8k"] = run_memory(args, dtypes=args.memory_dtypes.split(","))
    report["targets"] = add_ratios(report["results"], report.get("gemm"), report.get("memory_8k"))
    if not args.update:
        report["wall_s"] = time.time() - started
    (out / "results.json").write_text(json.dumps(report, indent=1) + "\n")
    if not args.no_plots:
        from .report import write_plots

        report["plots"] = write_plots(report, out)
    from .report import write_summary

    write_summary(report, out / "summary.md")
    (out / "results.json").write_text(json.dumps(report, indent=1) + "\n")
    _log(f"[bench] wrote {out / 'results.json'} and {out / 'summary.md'} in {report['wall_s']:.0f} s")
    return report


def _in_subprocess(kind: str, args: argparse.Namespace) -> Json:
    cmd = [sys.executable, "-m", "qwen3_rerank.bench.gemm", "--repeat", "3" if args.quick else "5"]
    if args.quick:
        cmd += ["--rows", "128"]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip()[-1500:]}
    result: Json = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _versions() -> Json:
    import importlib.metadata as md

    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("qwen3-rerank", "onnxruntime", "onnx", "numpy", "torch", "transformers", "tokenizers"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    node = shutil.which("node")
    if node:
        versions["node"] = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    lock = Path(__file__).resolve().parent / "js" / "package-lock.json"
    if lock.is_file():
        packages = json.loads(lock.read_text()).get("packages", {})
        for key in ("node_modules/@huggingface/transformers", "node_modules/onnxruntime-node"):
            if key in packages:
                versions[key.split("/", 1)[1]] = packages[key].get("version")
    return versions


def peer_versions(tools: PeerTools) -> Json:
    """The peers' versions: the OpenVINO venv's packages and llama.cpp's source (from setup)."""
    out: Json = {}
    if tools.ov_python.is_file():
        script = (
            "import importlib.metadata as m, json\n"
            "names = ('openvino', 'optimum-intel', 'optimum', 'nncf', 'torch', 'transformers', 'gguf')\n"
            "v = {}\n"
            "for n in names:\n"
            "    try: v[n] = m.version(n)\n"
            "    except m.PackageNotFoundError: v[n] = None\n"
            "print(json.dumps(v))"
        )
        proc = subprocess.run([str(tools.ov_python), "-c", script], capture_output=True, text=True, timeout=120)
        out["ov_venv"] = json.loads(proc.stdout) if proc.returncode == 0 else {"error": proc.stderr[-300:]}
    source = tools.llama_src / "SOURCE"
    if source.is_file():
        out["llama_cpp_source"] = source.read_text().strip()
    if tools.llama_server.is_file():
        proc = subprocess.run([str(tools.llama_server), "--version"], capture_output=True, text=True, timeout=60)
        out["llama_server_version"] = (proc.stdout + proc.stderr).strip().splitlines()[-2:]
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m qwen3_rerank.bench.run``: run the benchmark; returns 0."""
    # __doc__ is None under python -OO
    description = (__doc__ or "Run the benchmark matrix.").splitlines()[0]
    p = argparse.ArgumentParser(prog="python -m qwen3_rerank.bench.run", description=description)
    add_arguments(p)
    args = p.parse_args(argv)
    args.from_cli = False
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
