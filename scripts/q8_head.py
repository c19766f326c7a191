#!/usr/bin/env python
"""Which yes/no head of a quantised file is closer to fp32: the quantised ``lm_head`` rows or the
float rows of the tied embedding table? Writes ``docs/benchmarks/q8-head/`` (``results.json`` +
``README.md``).

Why: a q8/q4 file keeps the float embedding table that the input ``Gather`` reads, and with tied
embeddings its rows of "yes" and "no" are the weights ``lm_head`` was quantised from. The score
graph can use them (``yes_no_head="float"``: a ``[hidden, 2]`` float MatMul, and the last hidden
state is not quantised) or the quantised rows (``"quantized"``). This script measures, per model
and variant, the gap error of both against the fp32 variant of the same checkpoint (each variant
in its own process, prefix reuse on: the default path), the speed of both, and the bytes that
the quantised ``lm_head`` and the float table take in the file.

Usage (the committed figures)::

    PYTHONPATH=src python scripts/q8_head.py --model tiny=/tmp/tiny-onnx \\
        --model 0.6B=.bench-model/onnx --out docs/benchmarks/q8-head
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def worker(model: str, dtype: str, head: str, docs: int, tokens: int, threads: int, repeats: int) -> dict:
    from qwen3_rerank import Reranker
    from qwen3_rerank.bench.workloads import get_workload, make_inputs
    from qwen3_rerank.score_graph import score_graph_record

    load = [round(x, 2) for x in os.getloadavg()]
    reranker = Reranker.from_pretrained(model, dtype=dtype, threads=threads, yes_no_head=head)
    ((query, texts),) = make_inputs(get_workload(f"1x{docs}x{tokens}"), reranker.tokenizer)
    gaps = reranker.score(query, texts, raw=True)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        reranker.score(query, texts)
        times.append(time.perf_counter() - start)
    return {
        "gaps": gaps,
        "pairs_per_s": round(docs / statistics.median(times), 3),
        "head_used": score_graph_record(reranker.engine.path).get("head"),
        "load_before": load,
        "load_after": [round(x, 2) for x in os.getloadavg()],
    }


def file_bytes(path: Path) -> dict:
    """Bytes of the quantised lm_head and of the float embedding table in one ONNX file."""
    import onnx

    from qwen3_rerank.onnx_graph import GraphIndex
    from qwen3_rerank.score_graph_build import _find_lm_head

    model = onnx.load(str(path), load_external_data=False)
    g = GraphIndex(model.graph)
    lm_head = _find_lm_head(g, "logits")

    def size(name: str) -> int:
        tensor = g.initializers.get(name)
        if tensor is None:
            return 0
        length = next((int(e.value) for e in tensor.external_data if e.key == "length"), None)
        return length if length is not None else len(tensor.raw_data)

    table = next((n.input[0] for n in model.graph.node if n.op_type == "Gather" and n.input[1] == "input_ids"), "")
    lm_bytes = sum(size(name) for name in lm_head.input[1:] if name)
    return {
        "file": path.name,
        "file_bytes": path.stat().st_size + sum(p.stat().st_size for p in path.parent.glob(path.name + "_data*")),
        "lm_head_op": lm_head.op_type,
        "lm_head_weight_bytes": lm_bytes,
        "embedding_table_bytes": size(table),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", required=True, help="NAME=DIR (an export with fp32, q8, q4)")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/q8-head"))
    parser.add_argument("--dtypes", default="q8,q4")
    parser.add_argument("--docs", type=int, default=60)
    parser.add_argument("--doc-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--fp32-gaps",
        action="append",
        help="NAME=FILE: fp32 gaps of the same workload saved by q8_rows.py (fp32_gaps.json)",
    )
    parser.add_argument("--notes", type=Path, help="a text file whose lines go under 'Notes' in README.md")
    parser.add_argument("--readme-only", action="store_true", help="rewrite README.md from results.json (+ --notes)")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.readme_only:
        data = json.loads((args.out / "results.json").read_text(encoding="utf-8"))
        if args.notes:
            data["notes"] = args.notes.read_text(encoding="utf-8").splitlines()
            (args.out / "results.json").write_text(json.dumps(data, indent=1), encoding="utf-8")
        write_readme(args.out, data)
        return
    if args.worker:
        model, dtype, head = args.worker
        print(json.dumps(worker(model, dtype, head, args.docs, args.doc_tokens, args.threads, args.repeats)))
        return

    import onnxruntime

    from qwen3_rerank.files import DTYPE_FILES

    def run(model: str, dtype: str, head: str) -> dict:
        command = [
            sys.executable,
            __file__,
            "--worker",
            model,
            dtype,
            head,
            "--model",
            "x",
            "--docs",
            str(args.docs),
            "--doc-tokens",
            str(args.doc_tokens),
            "--threads",
            str(args.threads),
            "--repeats",
            str(args.repeats),
        ]
        proc = subprocess.run(command, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{model} {dtype} {head}: {proc.stderr[-2000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])

    fp32_gaps = {}
    for spec in args.fp32_gaps or []:
        name, path = spec.split("=", 1)
        saved = json.loads(Path(path).read_text(encoding="utf-8"))
        fp32_gaps[name] = saved.get("gaps_default", saved.get("gaps"))
    data = {
        "command": "PYTHONPATH=src python " + " ".join([f"scripts/{Path(__file__).name}", *sys.argv[1:]]),
        "onnxruntime": onnxruntime.__version__,
        "threads": args.threads,
        "docs": args.docs,
        "doc_tokens": args.doc_tokens,
        "models": {},
    }
    for spec in args.model:
        name, folder = spec.split("=", 1)
        if name in fp32_gaps:  # the same workload's fp32 gaps, measured before (scripts/q8_rows.py)
            reference = np.array(fp32_gaps[name])
        else:
            reference = np.array(run(folder, "fp32", "auto")["gaps"])
        entry = {
            "dir": folder,
            "fp32_gap_max_abs": float(np.abs(reference).max()),
            "fp32_gap_mean_abs": float(np.abs(reference).mean()),
            "variants": {},
        }
        for dtype in args.dtypes.split(","):
            rows = {"files": file_bytes(Path(folder) / "onnx" / DTYPE_FILES[dtype])}
            for head in ("quantized", "float"):
                row = run(folder, dtype, head)
                diff = np.abs(np.array(row.pop("gaps")) - reference)
                row.update(
                    max_abs_gap_diff=float(diff.max()),
                    mean_abs_gap_diff=float(diff.mean()),
                    max_rel_gap_diff=float(diff.max() / np.abs(reference).max()),
                    mean_rel_gap_diff=float(diff.mean() / np.abs(reference).mean()),
                )
                rows[head] = row
                print(
                    f"{name} {dtype} {head}: max {row['max_abs_gap_diff']:.4g} mean {row['mean_abs_gap_diff']:.4g} "
                    f"{row['pairs_per_s']} pairs/s",
                    file=sys.stderr,
                )
            entry["variants"][dtype] = rows
        data["models"][name] = entry
    if args.notes:
        data["notes"] = args.notes.read_text(encoding="utf-8").splitlines()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(data, indent=1), encoding="utf-8")
    write_readme(args.out, data)
    print(args.out / "README.md")


def write_readme(out: Path, data: dict) -> None:
    lines = [
        "# The yes/no head of quantised files: quantised lm_head rows or float embedding rows",
        "",
        "Made by `scripts/q8_head.py`; numbers in `results.json`. Gap = logit(yes) − logit(no); error = |gap −",
        "gap of the fp32 variant of the same checkpoint|, default path (score graph, prefix reuse, q8 activations",
        f"per row), 1 query × {data['docs']} documents of ~{data['doc_tokens']} tokens; onnxruntime "
        f"{data['onnxruntime']}, {data['threads']} threads.",
        "",
        "```",
        data["command"],
        "```",
        "",
        "| model | variant | head | max abs Δgap | mean abs Δgap | max rel | mean rel | pairs/s "
        "| load before → after |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, entry in data["models"].items():
        for dtype, rows in entry["variants"].items():
            for head in ("quantized", "float"):
                r = rows[head]
                lines.append(
                    f"| {name} | {dtype} | {head} ({r['head_used']}) | {r['max_abs_gap_diff']:.4g} | "
                    f"{r['mean_abs_gap_diff']:.4g} | {r['max_rel_gap_diff']:.3g} | {r['mean_rel_gap_diff']:.3g} | "
                    f"{r['pairs_per_s']} | {r['load_before']} → {r['load_after']} |"
                )
    lines += [
        "",
        "Relative = abs Δ / (max or mean) abs fp32 gap. Bytes in the files:",
        "",
        "| model | file | total bytes | lm_head op | lm_head weight bytes | float embedding table bytes |",
        "| --- | --- | ---: | --- | ---: | ---: |",
    ]
    for name, entry in data["models"].items():
        for rows in entry["variants"].values():
            f = rows["files"]
            lines.append(
                f"| {name} | {f['file']} | {f['file_bytes']:,} | {f['lm_head_op']} | "
                f"{f['lm_head_weight_bytes']:,} | {f['embedding_table_bytes']:,} |"
            )
    if data.get("notes"):
        lines += ["", "## Notes", "", *data["notes"]]
    (out / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
