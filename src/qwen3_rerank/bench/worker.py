"""One engine × one workload, in its own process; prints one JSON line.

    python -m qwen3_rerank.bench.worker --engine ours --model DIR --dtype q8 --workload 1x100x128
    python -m qwen3_rerank.bench.worker --engine torch --checkpoint DIR [--logits-to-keep] --workload ...
    python -m qwen3_rerank.bench.worker --engine js --model DIR --dtype q4 --workload ...
    python -m qwen3_rerank.bench.worker --engine ov --ov-model IR_DIR --checkpoint DIR --workload ...
    python -m qwen3_rerank.bench.worker --engine llamacpp --gguf FILE --llama-server BIN --checkpoint DIR ...

Every engine scores the same texts (see :mod:`workloads`). One *call* is one query with its
documents, tokenization included; the figures are taken over the timed calls, after an untimed
warm-up call on a few documents. Peak RSS is the process's ``ru_maxrss`` (for ``js``, Node's own
``maxRSS``; for ``llamacpp``, the server process's ``VmHWM``), so it includes the loaded model. The
peers (``ov``, ``llamacpp``) are in :mod:`peer_workers`; ``ov`` runs in the OpenVINO peer's venv.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .flops import QWEN3_06B, workload_flops
from .peer_workers import LLAMA_CTX, LLAMA_PARALLEL, run_llamacpp, run_ov
from .timing import Calls, Warmup, timed_calls
from .workloads import get_workload, make_inputs

if TYPE_CHECKING:
    from ..prompt_tokenizer import PromptTokenizer
    from ..reranker import Reranker


JS_DIR = Path(__file__).resolve().parent / "js"


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _tokenizer(folder: Path) -> PromptTokenizer:
    from ..prompt_tokenizer import PromptTokenizer

    tok_config = folder / "tokenizer_config.json"
    pad: str | None = None
    if tok_config.is_file():
        value = json.loads(tok_config.read_text(encoding="utf-8")).get("pad_token")
        pad = value.get("content") if isinstance(value, dict) else value
    return PromptTokenizer.from_file(folder / "tokenizer.json", pad_token=pad)


def _config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    return {**QWEN3_06B, **json.loads(path.read_text())} if path.is_file() else dict(QWEN3_06B)


def _select(calls: Sequence[tuple[str, list[str]]], max_queries: int | None, max_docs: int | None) -> Calls:
    calls = calls[: max_queries or None]
    return [(q, docs[: max_docs or None]) for q, docs in calls]


def _summary(latencies: list[float], seconds: float, pairs: int, tokens: int) -> dict[str, float]:
    lat = np.asarray(latencies, dtype=np.float64)
    return {
        "calls": len(latencies),
        "pairs": pairs,
        "tokens": tokens,
        "seconds": seconds,
        "pairs_per_s": pairs / seconds,
        "tokens_per_s": tokens / seconds,
        "latency_p50_s": float(np.percentile(lat, 50)),
        "latency_p95_s": float(np.percentile(lat, 95)),
        "latency_mean_s": float(lat.mean()),
    }


# -- engines ---------------------------------------------------------------------------------------


def _reranker_on_file(args: argparse.Namespace, session_options: dict[str, Any]) -> Reranker:
    """A Reranker on the ONNX file ``--onnx-path`` (e.g. a graph ONNX Runtime saved already
    optimized: the cold/warm start study), built from public parts only. With ``--score-graph``
    the file is taken for a copy of the model's score graph, so that graph's limits apply to it."""
    import dataclasses

    from ..engine import OnnxEngine
    from ..files import resolve_model
    from ..prompt_tokenizer import PromptTokenizer
    from ..reranker import Reranker
    from ..score_graph import ScoreGraph, ensure_score_graph

    files = resolve_model(args.model, args.dtype)
    tokenizer = PromptTokenizer.from_file(files.tokenizer, pad_token=files.pad_token)
    model: Path | ScoreGraph = Path(args.onnx_path)
    if args.score_graph:
        graph = ensure_score_graph(files.onnx, tokenizer.yes_id, tokenizer.no_id)
        model = dataclasses.replace(graph, path=Path(args.onnx_path))
    engine = OnnxEngine(
        model, config=files.config, device=args.device, threads=args.threads, session_options=session_options
    )
    return Reranker(
        engine,
        tokenizer,
        prefix_reuse=args.prefix_reuse,
        files=files,
        batch_size=args.batch_size,
        max_batch_tokens=args.max_batch_tokens,
    )


def run_ours(args: argparse.Namespace, calls: Calls, warmup: Warmup) -> dict[str, Any]:
    """This library (:class:`Reranker`), as the options in ``args`` set it up."""
    from ..model_runner import prefix_pass_rows
    from ..reranker import Reranker

    t0 = time.perf_counter()
    session_options = json.loads(args.session_options) if args.session_options else {}
    if args.profile:
        session_options["enable_profiling"] = True
        session_options["profile_file_prefix"] = args.profile
    if args.onnx_path:
        reranker = _reranker_on_file(args, session_options)
    else:
        reranker = Reranker.from_pretrained(
            args.model,
            dtype=args.dtype,
            device=args.device,
            threads=args.threads,
            score_graph=args.score_graph,
            prefix_reuse=args.prefix_reuse,
            max_batch_tokens=args.max_batch_tokens,
            batch_size=args.batch_size,
            session_options=session_options or None,
        )
    load_s = time.perf_counter() - t0
    out: dict[str, Any] = {"load_s": load_s, "rss_after_load_mb": _peak_rss_mb()}
    out["score_graph_active"] = reranker.engine.is_score_graph
    out["prefix_reuse_active"] = reranker.prefix_reuse
    out["onnx_file"] = reranker.engine.path.name
    if args.load_only:
        return out
    out.update(timed_calls(reranker.score, calls, warmup, args.repeat))
    segments: list[tuple[int, int]] = []
    # What the engine actually ran, for the FLOP count (prefix once per call when it is reused).
    for _ in range(args.repeat):
        for query, docs in calls:
            request = reranker.prepare(query, docs)
            reuse = prefix_pass_rows(request, reranker.prefix_reuse)  # the runner's own rule
            if reuse:
                segments.append((request.shared_prefix, 0))
            for i, seq in enumerate(request.sequences):
                segments.append(
                    (len(seq) - request.shared_prefix, request.shared_prefix) if i in reuse else (len(seq), 0)
                )
    if args.profile:
        out["profile_file"] = reranker.engine.session.end_profiling()
    out["executed_segments"] = segments
    return out


def run_torch(args: argparse.Namespace, calls: Calls, warmup: Warmup) -> dict[str, Any]:
    """The model card's PyTorch recipe (transformers), batches of ``--batch`` pairs."""
    import torch
    from transformers import AutoModelForCausalLM

    from .recipe import RecipeTokenizer

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.torch_dtype]
    t0 = time.perf_counter()
    recipe = RecipeTokenizer(args.checkpoint)
    model = AutoModelForCausalLM.from_pretrained(str(args.checkpoint), dtype=dtype)
    model = model.eval().to(args.device)  # type: ignore[no-untyped-call]  # transformers leaves eval() unannotated
    load_s = time.perf_counter() - t0
    out: dict[str, Any] = {
        "load_s": load_s,
        "rss_after_load_mb": _peak_rss_mb(),
        "torch": torch.__version__,
        "device": args.device,
    }
    if args.load_only:
        return out

    @torch.no_grad()
    def compute_scores(query: str, docs: Sequence[str]) -> list[float]:
        scores: list[float] = []
        for s in range(0, len(docs), args.batch):
            inputs = recipe.batch(query, docs[s : s + args.batch]).to(args.device)
            kwargs = {"logits_to_keep": 1} if args.logits_to_keep else {}
            scores.extend(recipe.scores(model(**inputs, **kwargs).logits[:, -1, :]))
        return scores

    out.update(timed_calls(compute_scores, calls, warmup, args.repeat))
    return out


def run_js(args: argparse.Namespace, calls: Calls, warmup: Warmup) -> dict[str, Any]:
    """Transformers.js v4 in Node (``js/bench.mjs``); Node's own timings and maxRSS."""
    from ..prompt import format_prompt

    if not (JS_DIR / "node_modules" / "@huggingface" / "transformers").is_dir():
        raise SystemExit(
            f"Transformers.js is not installed: run 'ONNXRUNTIME_NODE_INSTALL_CUDA=skip npm ci' in {JS_DIR}"
        )
    spec = {
        "model_dir": str(Path(args.model).resolve()),
        "dtype": args.dtype,
        "calls": [[format_prompt(q, d) for d in docs] for q, docs in calls],
        "warmup": [format_prompt(warmup[0], d) for d in warmup[1]] if warmup else [],
        "repeat": args.repeat,
        "batch": args.batch if args.batch_given else 1,
        "threads": args.threads,
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(spec, handle)
    try:
        proc = subprocess.run(
            ["node", str(JS_DIR / "bench.mjs"), handle.name], capture_output=True, text=True, cwd=JS_DIR
        )
    finally:
        os.unlink(handle.name)
    if proc.returncode != 0:
        raise SystemExit(f"node failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1]
    result: dict[str, Any] = json.loads(line)
    result["js_stderr_tail"] = proc.stderr.strip()[-500:]
    return result


# -- main ------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The worker's command line (one engine, one workload)."""
    # __doc__ is None under python -OO
    description = (__doc__ or "One engine × one workload, in its own process; prints one JSON line.").splitlines()[0]
    p = argparse.ArgumentParser(prog="python -m qwen3_rerank.bench.worker", description=description)
    p.add_argument("--engine", choices=("ours", "torch", "js", "ov", "llamacpp"), required=True)
    p.add_argument("--model", help="ONNX folder in the published layout (ours, js)")
    p.add_argument("--checkpoint", help="PyTorch checkpoint folder (torch; ov and llamacpp: its tokenizer)")
    p.add_argument("--dtype", default="q8")
    p.add_argument("--torch-dtype", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--score-graph", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--prefix-reuse", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--logits-to-keep", action="store_true", help="torch: logits_to_keep=1")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu", help="ours: cpu, cuda, cuda:N; torch: a torch device")
    p.add_argument("--batch", type=int, default=None, help="torch: pairs per forward (8); js: prompts per call (1)")
    p.add_argument("--batch-size", type=int, default=32, help="ours: most pairs per batch")
    p.add_argument("--max-batch-tokens", type=int, default=4096, help="ours: token budget per batch")
    p.add_argument("--session-options", default=None, help="ours: JSON of onnxruntime SessionOptions attributes")
    p.add_argument(
        "--onnx-path",
        default=None,
        help="ours: load this ONNX file instead (a copy of the score graph unless --no-score-graph)",
    )
    p.add_argument("--profile", default=None, help="ours: write an ORT profile with this file prefix")
    p.add_argument("--ov-model", default=None, help="ov: OpenVINO IR folder exported by optimum-cli")
    p.add_argument("--ov-precision", default=None, help="ov: INFERENCE_PRECISION_HINT (f32; default: OpenVINO's)")
    p.add_argument("--gguf", default=None, help="llamacpp: the GGUF file")
    p.add_argument("--llama-server", default=None, help="llamacpp: the llama-server executable")
    p.add_argument("--llama-ctx", type=int, default=LLAMA_CTX, help="llamacpp: -c, shared by the slots (-kvu)")
    p.add_argument("--llama-parallel", type=int, default=LLAMA_PARALLEL, help="llamacpp: -np, slots")
    p.add_argument("--llama-kv-type", default=None, help="llamacpp: -ctk/-ctv (default: llama.cpp's f16)")
    p.add_argument(
        "--llama-flash-attn", default=None, choices=("on", "off", "auto"), help="llamacpp: -fa (default: auto)"
    )
    p.add_argument("--workload", required=True)
    p.add_argument("--max-queries", type=int, default=None)
    p.add_argument("--max-docs", type=int, default=None)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--warmup-docs", type=int, default=4, help="documents in the untimed warm-up call (0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--load-only", action="store_true", help="only load the model (cold/warm start)")
    p.add_argument("--label", default=None)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one engine on one workload and print the result as one JSON line; returns 0."""
    args = build_parser().parse_args(argv)
    args.batch_given = args.batch is not None
    if args.batch is None:
        args.batch = 8
    if args.engine in ("ours", "js") and not args.model:
        raise SystemExit("--model is needed for this engine")
    if args.engine in ("torch", "ov", "llamacpp") and not args.checkpoint:
        raise SystemExit("--checkpoint is needed for this engine")
    if args.engine == "ov" and not args.ov_model:
        raise SystemExit("--ov-model is needed for the ov engine")
    if args.engine == "llamacpp" and not (args.gguf and args.llama_server):
        raise SystemExit("--gguf and --llama-server are needed for the llamacpp engine")
    folder = Path(args.model or args.checkpoint)
    tokenizer = _tokenizer(folder)
    workload = get_workload(args.workload)
    calls = _select(make_inputs(workload, tokenizer, seed=args.seed), args.max_queries, args.max_docs)
    warmup = (calls[0][0], calls[0][1][: args.warmup_docs]) if args.warmup_docs > 0 else None
    runner = {"ours": run_ours, "torch": run_torch, "js": run_js, "ov": run_ov, "llamacpp": run_llamacpp}[args.engine]
    load_before = os.getloadavg()[0]
    raw = runner(args, calls, warmup)

    result: dict[str, Any] = {
        "engine": args.engine,
        "label": args.label,
        "workload": workload.to_dict(),
        "dtype": args.torch_dtype if args.engine == "torch" else args.dtype,
        "threads": args.threads,
        "repeat": args.repeat,
        "max_queries": args.max_queries,
        "max_docs": args.max_docs,
        "load_s": raw["load_s"],
        # 1-minute load average before and after: other processes on this (shared) machine.
        "loadavg_1m": [load_before, os.getloadavg()[0]],
    }
    if args.engine == "ours":
        result.update(score_graph=args.score_graph, prefix_reuse=args.prefix_reuse)
        for key in ("score_graph_active", "prefix_reuse_active", "onnx_file", "rss_after_load_mb", "profile_file"):
            if key in raw:
                result[key] = raw[key]
        if args.session_options:
            result["session_options"] = json.loads(args.session_options)
    elif args.engine == "torch":
        result.update(logits_to_keep=1 if args.logits_to_keep else None, batch=args.batch, torch=raw.get("torch"))
    elif args.engine == "js":
        result.update(batch=raw.get("batch"), transformers_js=raw.get("transformers_js"))
    elif args.engine == "ov":
        result["batch"] = args.batch
        for key in ("openvino", "ov_config", "ov_inference_precision", "ov_model", "rss_after_load_mb"):
            result[key] = raw[key]
    else:
        result.update(llama_kv_type=args.llama_kv_type, llama_flash_attn=args.llama_flash_attn)
        for key in ("gguf", "server_command", "llama_cpp_version", "rss_after_load_mb", "token_check"):
            if key in raw:
                result[key] = raw[key]
    if args.load_only:
        result["peak_rss_mb"] = raw["server_peak_rss_mb"] if args.engine == "llamacpp" else _peak_rss_mb()
        print(json.dumps(result))
        return 0

    config = _config(folder)
    lengths: list[list[int]] = []
    from ..prompt import format_content

    for query, docs in calls:
        lengths.append([len(s) for s in tokenizer.encode_contents([format_content(query, d) for d in docs], 8192)])
    tokens = sum(map(sum, lengths)) * args.repeat
    result.update(_summary(raw["latencies_s"], raw["seconds"], raw["pairs"], tokens))
    result["pairs_per_call"] = [len(docs) for _, docs in calls]
    result["mean_prompt_tokens"] = tokens / raw["pairs"]
    # js: Node's own maxRSS; llamacpp: the server process's VmHWM (this process is only its client).
    result["peak_rss_mb"] = {"js": raw.get("peak_rss_mb"), "llamacpp": raw.get("server_peak_rss_mb")}.get(
        args.engine, _peak_rss_mb()
    )
    full_segments = [(n, 0) for row in lengths for n in row] * args.repeat
    lm_rows = 0
    # llama.cpp's rank pooling runs its two-row yes/no head on the last position only: no lm_head.
    if args.engine in ("torch", "js", "ov") and not args.logits_to_keep:
        # full logits at every position of every padded row
        if args.engine == "js" and result.get("batch", 1) == 1:
            lm_rows = tokens
        else:
            lm_rows = (
                sum(
                    len(row[s : s + args.batch]) * max(row[s : s + args.batch])
                    for row in lengths
                    for s in range(0, len(row), args.batch)
                )
                * args.repeat
            )
    elif args.engine == "torch":
        lm_rows = raw["pairs"]
    work = workload_flops(config, full_segments, lm_head_rows=lm_rows)
    executed = workload_flops(config, raw.get("executed_segments") or full_segments, lm_head_rows=lm_rows)
    result["flops"] = {"work": work, "executed": executed}
    result["effective_gflops"] = work["model_gflop"] / raw["seconds"]
    result["executed_gflops"] = executed["model_gflop"] / raw["seconds"]
    result["executed_linear_gflops"] = executed["linear_gflop"] / raw["seconds"]
    result["latencies_s"] = raw["latencies_s"]
    result["first_scores"] = raw.get("first_scores")
    if raw.get("call_scores") is not None:
        result["call_scores"] = raw["call_scores"]
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
