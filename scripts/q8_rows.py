#!/usr/bin/env python
"""Per-tensor vs per-row activation quantisation of q8 files: speed and error, written to
``docs/benchmarks/q8-rows/`` (``results.json`` + ``README.md``).

Why this exists: dynamic int8 (``DynamicQuantizeLinear`` → ``MatMulInteger``, the published q8
scheme) quantises activations with one scale per tensor, so a document's score depends on its
batch neighbours and on whether the shared prompt prefix ran in a separate pass. The score graph
now quantises per row (see ``qwen3_rerank/score_graph.py``); this script measures what that costs
and buys, on two levels:

* ``operator``: one ``[M, 1024] x [1024, 3072]`` int8 MatMul (the 0.6B MLP up-projection
  shape), every candidate scheme in one process: per-tensor (as published), per-row symmetric as
  uint8 with zero point 128 (u8×s8 kernel), per-row symmetric int8 (s8×s8), per-row asymmetric
  uint8 with a column-sum correction, and 8-bit ``MatMulNBits`` with ``accuracy_level=4``;
* ``model``: the whole reranker on a q8 export, 1 query × N documents of ~T tokens, each variant
  in its own process: pairs/s (prefix reuse on, the default path), max |Δgap| against the fp32
  variant of the same checkpoint, and how far a document's gap moves between scoring it alone,
  in batches (no prefix reuse) and with prefix reuse.

Usage (the figures in docs/benchmarks/q8-rows/ were made with)::

    PYTHONPATH=src python scripts/q8_rows.py --model .bench-model/onnx --threads 2 \\
        --out docs/benchmarks/q8-rows
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from qwen3_rerank.cpu_features import cpu_info

#: variant name -> Reranker.from_pretrained keyword arguments (dtype q8 unless said otherwise).
MODEL_VARIANTS: dict[str, dict] = {
    "fp32": {"dtype": "fp32"},
    "q8 per-tensor, whole prompt (as Transformers.js runs it)": {
        "score_graph": False,
        "prefix_reuse": False,
        "batch_size": 1,
    },
    # The same (the file's int8) yes/no head for all, so that only the activations differ.
    "q8 per-tensor (score graph)": {"q8_activations": "tensor", "yes_no_head": "quantized"},
    "q8 per-row u8 zp128 (score graph, row)": {"q8_activations": "row", "yes_no_head": "quantized"},
    "q8 MatMulNBits 8-bit acc4 (score graph)": {"q8_activations": "nbits8", "yes_no_head": "quantized"},
}


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# -- operator level ------------------------------------------------------------------------------------


def operator_level(threads: int, rows: int, repeats: int) -> dict:
    """Every candidate on one int8 MatMul; error against the float64 product of the same int8
    weights, row dependence as max |result of a row in a batch - the same row alone|."""
    import onnxruntime as ort
    from onnx import TensorProto, helper
    from onnx import numpy_helper as nh

    k, n = 1024, 3072
    rng = np.random.default_rng(0)
    w_float = rng.standard_normal((k, n))
    weight = np.round(w_float / np.abs(w_float).max() * 127).astype(np.int8)
    w_scale = np.float32(np.abs(w_float).max() / 127 * 0.02)
    act = (rng.standard_normal((1, rows, k)) * np.exp(rng.standard_normal((1, rows, 1)))).astype(np.float32)
    exact = act[0].astype(np.float64) @ (weight.astype(np.float64) * float(w_scale))

    def session(nodes, inits):
        graph = helper.make_graph(
            nodes,
            "g",
            [helper.make_tensor_value_info("A", TensorProto.FLOAT, [1, None, k])],
            [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
            inits,
        )
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
        )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])

    base = [nh.from_array(weight, "W"), nh.from_array(np.int8(0), "Wz"), nh.from_array(w_scale, "Ws")]
    tail = [
        helper.make_node("Cast", ["i"], ["f"], to=1),
        helper.make_node("Mul", ["s", "Ws"], ["sw"]),
        helper.make_node("Mul", ["f", "sw"], ["Y"]),
    ]
    consts = [
        nh.from_array(np.array([-1], np.int64), "ax"),
        nh.from_array(np.float32(127), "c127"),
        nh.from_array(np.float32(1e-30), "tiny"),
        nh.from_array(np.float32(-127), "lo"),
        nh.from_array(np.float32(127), "hi"),
        nh.from_array(np.float32(128), "off"),
        nh.from_array(np.uint8(128), "z128"),
        nh.from_array(np.float32(0), "zero"),
        nh.from_array(np.float32(255), "c255"),
        nh.from_array(np.float32(255), "hi255"),
        nh.from_array(weight.astype(np.int32).sum(0).astype(np.int32), "colsum"),
    ]
    sym_scale = [
        helper.make_node("Abs", ["A"], ["a"]),
        helper.make_node("ReduceMax", ["a", "ax"], ["m"], keepdims=1),
        helper.make_node("Div", ["m", "c127"], ["s0"]),
        helper.make_node("Max", ["s0", "tiny"], ["s"]),
        helper.make_node("Div", ["A", "s"], ["d"]),
        helper.make_node("Round", ["d"], ["r"]),
        helper.make_node("Clip", ["r", "lo", "hi"], ["cl"]),
    ]
    sessions = {
        "per-tensor DynamicQuantizeLinear + MatMulInteger (published)": session(
            [
                helper.make_node("DynamicQuantizeLinear", ["A"], ["q", "s", "z"]),
                helper.make_node("MatMulInteger", ["q", "W", "z", "Wz"], ["i"]),
                *tail,
            ],
            base,
        ),
        "per-row symmetric, uint8 zp 128, MatMulInteger u8xs8 (ours: row)": session(
            [
                *sym_scale,
                helper.make_node("Add", ["cl", "off"], ["o"]),
                helper.make_node("Cast", ["o"], ["q"], to=TensorProto.UINT8),
                helper.make_node("MatMulInteger", ["q", "W", "z128", "Wz"], ["i"]),
                *tail,
            ],
            base + consts,
        ),
        "per-row symmetric int8, MatMulInteger s8xs8": session(
            [
                *sym_scale,
                helper.make_node("Cast", ["cl"], ["q"], to=TensorProto.INT8),
                helper.make_node("MatMulInteger", ["q", "W"], ["i"]),
                *tail,
            ],
            base + consts,
        ),
        "per-row asymmetric uint8 + column-sum correction": session(
            [
                helper.make_node("ReduceMax", ["A", "ax"], ["mx0"], keepdims=1),
                helper.make_node("ReduceMin", ["A", "ax"], ["mn0"], keepdims=1),
                helper.make_node("Max", ["mx0", "zero"], ["mx"]),
                helper.make_node("Min", ["mn0", "zero"], ["mn"]),
                helper.make_node("Sub", ["mx", "mn"], ["rg"]),
                helper.make_node("Div", ["rg", "c255"], ["s0"]),
                helper.make_node("Max", ["s0", "tiny"], ["s"]),
                helper.make_node("Div", ["mn", "s"], ["zn"]),
                helper.make_node("Neg", ["zn"], ["zn2"]),
                helper.make_node("Round", ["zn2"], ["zr"]),
                helper.make_node("Clip", ["zr", "zero", "hi255"], ["zc"]),
                helper.make_node("Div", ["A", "s"], ["d"]),
                helper.make_node("Round", ["d"], ["r"]),
                helper.make_node("Add", ["r", "zc"], ["rz"]),
                helper.make_node("Clip", ["rz", "zero", "hi255"], ["cl"]),
                helper.make_node("Cast", ["cl"], ["q"], to=TensorProto.UINT8),
                helper.make_node("MatMulInteger", ["q", "W"], ["i0"]),
                helper.make_node("Cast", ["zc"], ["zi"], to=TensorProto.INT32),
                helper.make_node("Mul", ["zi", "colsum"], ["corr"]),
                helper.make_node("Sub", ["i0", "corr"], ["i"]),
                *tail,
            ],
            base + consts,
        ),
    }
    for block in (32, 128):
        blocks = k // block
        codes = (weight.astype(np.int16) + 128).astype(np.uint8).T.reshape(n, blocks, block)
        sessions[f"MatMulNBits bits=8 block {block} accuracy_level=4 (ours: nbits8 uses 32)"] = session(
            [
                helper.make_node(
                    "MatMulNBits",
                    ["A", "B", "S", "Z"],
                    ["Y"],
                    domain="com.microsoft",
                    K=k,
                    N=n,
                    bits=8,
                    block_size=block,
                    accuracy_level=4,
                )
            ],
            [
                nh.from_array(codes, "B"),
                nh.from_array(np.full(n * blocks, w_scale, np.float32), "S"),
                nh.from_array(np.full(n * blocks, 128, np.uint8), "Z"),
            ],
        )
    out = {"shape": {"M": rows, "K": k, "N": n}, "threads": threads, "load_before": load_average(), "schemes": {}}
    for name, sess in sessions.items():
        full = sess.run(None, {"A": act})[0].reshape(rows, n)
        alone = np.concatenate([sess.run(None, {"A": act[:, i : i + 1]})[0].reshape(1, n) for i in range(4)])
        for _ in range(3):
            sess.run(None, {"A": act})
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            sess.run(None, {"A": act})
            times.append(time.perf_counter() - start)
        out["schemes"][name] = {
            "ms_median": round(statistics.median(times) * 1e3, 3),
            "max_rel_error": float(np.abs(full - exact).max() / np.abs(exact).max()),
            "mean_rel_error": float(np.abs(full - exact).mean() / np.abs(exact).mean()),
            "row_dependence": float(np.abs(full[:4] - alone).max()),
        }
    out["load_after"] = load_average()
    return out


# -- model level -------------------------------------------------------------------------------------


def worker(args) -> None:
    """One variant in this process: timing and gaps (alone, batched, prefix reuse)."""
    from qwen3_rerank import Reranker
    from qwen3_rerank.bench.workloads import get_workload, make_inputs

    kwargs = dict(MODEL_VARIANTS[args.variant])
    kwargs.setdefault("dtype", "q8")
    load_before = load_average()
    start = time.perf_counter()
    reranker = Reranker.from_pretrained(args.model, threads=args.threads, **kwargs)
    load_s = time.perf_counter() - start
    ((query, docs),) = make_inputs(get_workload(f"1x{args.docs}x{args.doc_tokens}"), reranker.tokenizer)
    start = time.perf_counter()
    default = np.array(reranker.score(query, docs, raw=True))  # warm-up, and the default path's gaps
    times = [time.perf_counter() - start]
    # The reference and the slow whole-prompt path keep their first (cold) time: their speed is
    # not the question here.
    if kwargs.get("score_graph", True) and kwargs["dtype"] == "q8" and args.repeats > 0:
        times = []  # with --repeats 0 the first call's time stands (a busy machine: see README)
    for _ in range(args.repeats if not times else 0):
        start = time.perf_counter()
        reranker.score(query, docs)
        times.append(time.perf_counter() - start)
    result = {
        "variant": args.variant,
        "kwargs": kwargs,
        "load_s": round(load_s, 2),
        "pairs_per_s": round(len(docs) / statistics.median(times), 3),
        "seconds_per_call": [round(t, 3) for t in times],
        "gaps_default": default.tolist(),
        "load_before": load_before,
    }
    if kwargs.get("score_graph", True) and kwargs["dtype"] == "q8":
        engine = dict(kwargs, threads=args.threads)
        batched = Reranker.from_pretrained(args.model, prefix_reuse=False, batch_size=8, **engine)
        alone = Reranker.from_pretrained(args.model, prefix_reuse=False, batch_size=1, **engine)
        some = docs[: args.independence_docs]
        result["gaps_batched"] = batched.score(query, some, raw=True)
        result["gaps_alone"] = [alone.score(query, [d], raw=True)[0] for d in some]
    result["load_after"] = load_average()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / _worker_file(args.variant)).write_text(json.dumps(result), encoding="utf-8")  # to resume
    print(json.dumps(result))


def _worker_file(variant: str) -> str:
    return "worker-" + re.sub(r"\W+", "-", variant).strip("-") + ".json"


def model_level(args) -> dict:
    rows = {}
    saved = args.out / "fp32_gaps.json"  # the reference is slow on 2 busy cores: reuse it
    for variant in MODEL_VARIANTS:
        if "whole prompt" in variant and not args.whole_prompt:
            continue
        if variant == "fp32" and saved.is_file():
            rows[variant] = json.loads(saved.read_text())
            continue
        done = args.out / _worker_file(variant)
        if done.is_file():  # measured by an earlier, interrupted run
            rows[variant] = json.loads(done.read_text())
            continue
        command = [
            sys.executable,
            __file__,
            "--worker",
            variant,
            "--model",
            str(args.model),
            "--threads",
            str(args.threads),
            "--docs",
            str(args.docs),
            "--doc-tokens",
            str(args.doc_tokens),
            "--repeats",
            str(args.repeats),
            "--independence-docs",
            str(args.independence_docs),
            "--out",
            str(args.out),
        ]
        proc = subprocess.run(command, capture_output=True, text=True, env=os.environ)
        if proc.returncode != 0:
            raise SystemExit(f"{variant} failed:\n{proc.stderr[-3000:]}")
        rows[variant] = json.loads(proc.stdout.strip().splitlines()[-1])
        if variant == "fp32":
            args.out.mkdir(parents=True, exist_ok=True)
            saved.write_text(json.dumps(rows[variant]))
        print(f"{variant}: {rows[variant]['pairs_per_s']} pairs/s", file=sys.stderr)
    reference = np.array(rows["fp32"]["gaps_default"])
    scale = float(np.abs(reference).max())
    for row in rows.values():
        gaps = np.array(row.pop("gaps_default"))
        row["max_abs_gap_diff_vs_fp32"] = float(np.abs(gaps - reference).max())
        row["mean_abs_gap_diff_vs_fp32"] = float(np.abs(gaps - reference).mean())
        row["max_rel_gap_diff_vs_fp32"] = float(np.abs(gaps - reference).max() / scale)
        if "gaps_alone" in row:
            alone = np.array(row.pop("gaps_alone"))
            batched = np.array(row.pop("gaps_batched"))
            row["max_abs_gap_diff_prefix_reuse_vs_alone"] = float(np.abs(gaps[: len(alone)] - alone).max())
            row["max_abs_gap_diff_batched_vs_alone"] = float(np.abs(batched - alone).max())
    return {"fp32_gap_max_abs": scale, "fp32_gap_mean_abs": float(np.abs(reference).mean()), "variants": rows}


def write_readme(out: Path, data: dict) -> None:
    lines = [
        "# q8: per-tensor vs per-row activation quantisation",
        "",
        "Made by `scripts/q8_rows.py` (command below); numbers in `results.json`.",
        "",
        f"Machine: {data['cpu'].get('model', '?')}, {data['cpu'].get('cores')} cores, flags "
        f"{' '.join(data['cpu'].get('flags', []))}; onnxruntime {data['onnxruntime']}; {data['threads']} threads.",
        "",
        "```",
        data["command"],
        "```",
        "",
    ]
    if "model" in data:
        m = data["model"]
        lines += [
            f"## Whole model: {data['model_dir']}, 1 query × {data['docs']} documents of ~{data['doc_tokens']} tokens",
            "",
            f"Gap scale: fp32 |gap| max {m['fp32_gap_max_abs']:.3g}, mean {m['fp32_gap_mean_abs']:.3g} "
            "(random weights: gaps are small, so relative figures matter).",
            "",
            "| variant | pairs/s | max abs Δgap vs fp32 | mean abs Δgap | max Δ / max abs fp32 gap "
            "| prefix reuse vs alone | batched vs alone | load before → after |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for name, row in m["variants"].items():
            lines.append(
                f"| {name} | {row['pairs_per_s']:.3f} | {row['max_abs_gap_diff_vs_fp32']:.3g} | "
                f"{row['mean_abs_gap_diff_vs_fp32']:.3g} | {row['max_rel_gap_diff_vs_fp32']:.3g} | "
                f"{row.get('max_abs_gap_diff_prefix_reuse_vs_alone', float('nan')):.3g} | "
                f"{row.get('max_abs_gap_diff_batched_vs_alone', float('nan')):.3g} | "
                f"{row['load_before']} → {row['load_after']} |"
            )
        lines.append("")
    if "operator" in data:
        o = data["operator"]
        lines += [
            f"## One int8 MatMul [{o['shape']['M']}×{o['shape']['K']}] × [{o['shape']['K']}×{o['shape']['N']}]",
            "",
            "Error against the float64 product of the same int8 weights; row dependence = max |a row's",
            "result in the batch − the same row alone|.",
            "",
            "| scheme | ms (median) | max rel error | mean rel error | row dependence |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for name, row in o["schemes"].items():
            lines.append(
                f"| {name} | {row['ms_median']:.2f} | {row['max_rel_error']:.3g} | "
                f"{row['mean_rel_error']:.3g} | {row['row_dependence']:.3g} |"
            )
        lines.append("")
    notes = data.get("notes")
    if notes:
        lines += ["## Notes", "", *notes, ""]
    (out / "README.md").write_text("\n".join(lines), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="exported folder with fp32 and q8 (qwen3-rerank export)")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/q8-rows"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--docs", type=int, default=30)
    parser.add_argument("--doc-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--operator-rows", type=int, default=160)
    parser.add_argument(
        "--independence-docs",
        type=int,
        default=30,
        help="how many of the documents are also scored alone and batched without prefix reuse",
    )
    parser.add_argument(
        "--whole-prompt",
        action="store_true",
        help="also the plain graph on whole prompts, one at a time (as Transformers.js runs it; slow)",
    )
    parser.add_argument("--skip-operator", action="store_true")
    parser.add_argument("--notes", type=Path, help="a text file whose lines go under 'Notes' in README.md")
    parser.add_argument("--readme-only", action="store_true", help="rewrite README.md from results.json (+ --notes)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.variant = args.worker
        worker(args)
        return
    if args.readme_only:
        data = json.loads((args.out / "results.json").read_text(encoding="utf-8"))
        if args.notes:
            data["notes"] = args.notes.read_text(encoding="utf-8").splitlines()
            (args.out / "results.json").write_text(json.dumps(data, indent=1), encoding="utf-8")
        write_readme(args.out, data)
        return
    import onnxruntime

    data = {
        "command": "PYTHONPATH=src python " + " ".join([f"scripts/{Path(__file__).name}", *sys.argv[1:]]),
        "cpu": cpu_info(),
        "onnxruntime": onnxruntime.__version__,
        "threads": args.threads,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if not args.skip_operator:
        data["operator"] = operator_level(args.threads, args.operator_rows, max(args.repeats, 7))
    if args.model:
        data.update(model_dir=str(args.model), docs=args.docs, doc_tokens=args.doc_tokens)
        data["model"] = model_level(args)
    if args.notes:
        data["notes"] = args.notes.read_text(encoding="utf-8").splitlines()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(data, indent=1), encoding="utf-8")
    write_readme(args.out, data)
    print(args.out / "results.json")


if __name__ == "__main__":
    main()
