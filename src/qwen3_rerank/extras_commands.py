"""``qwen3-rerank eval`` and ``qwen3-rerank batch``: thin commands over :mod:`.evaluation` and :mod:`.batch`.

Their optional packages are imported only when a command runs; a missing one is reported as one
line naming the extra to install (exit status 2).
"""

from __future__ import annotations

import argparse
import json
import sys

from .cli import UsageError, _add_model_options, _positive_int, reranker_from_args
from .files import DTYPES


def register(commands) -> None:
    """Add the ``eval`` and ``batch`` subcommands to the CLI's subparsers."""
    _register_eval(commands)
    _register_batch(commands)


def _check_dtype(dtype: str) -> None:
    if dtype not in DTYPES:
        raise UsageError(f"unknown dtype {dtype!r}; choose one of: {', '.join(DTYPES)}")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


# -- eval --------------------------------------------------------------------------------------------


def _register_eval(commands) -> None:
    parser = commands.add_parser(
        "eval",
        help="measure reranking on a BEIR-format dataset (needs the 'eval' extra)",
        description="Rerank the top-k of a first stage (a TREC run file, or BM25) on a BEIR-format dataset and "
        "report nDCG@10, MRR@10 and Recall@k before and after reranking, computed with ir-measures.",
    )
    _add_model_options(parser)
    parser.add_argument("dataset", help="BEIR dataset folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv")
    parser.add_argument("--split", default="test", help="qrels split to evaluate (default: test)")
    parser.add_argument("--run", default=None, help="first-stage TREC run file (default: BM25 over the corpus)")
    parser.add_argument("--top-k", type=_positive_int, default=100, help="documents reranked per query (default: 100)")
    parser.add_argument(
        "--metric",
        action="append",
        default=None,
        help="an ir-measures metric, repeatable (default: nDCG@10, RR@10 i.e. MRR@10, R@<top-k>)",
    )
    parser.add_argument("--max-queries", type=_positive_int, default=None, help="evaluate only the first N judged queries")
    parser.add_argument("--instruction", default=None, help="task instruction (default: web search)")
    parser.add_argument("--max-doc-tokens", type=_positive_int, default=None, help="cut each document to N tokens first")
    parser.add_argument("--save-run", default=None, help="write the reranked top-k as a TREC run file")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    progress = parser.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None, help="show a progress bar")
    progress.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    parser.set_defaults(handler=_cmd_eval)


def _cmd_eval(args: argparse.Namespace) -> int:
    from . import evaluation
    from ._extras import require

    _check_dtype(args.dtype)
    require("ir_measures", evaluation.EXTRA, "qwen3-rerank eval")
    if args.run is None:
        require("bm25s", evaluation.EXTRA, "qwen3-rerank eval")
    dataset = evaluation.load_beir(args.dataset, split=args.split)
    run = evaluation.read_trec_run(args.run) if args.run is not None else None
    measures = args.metric or evaluation.default_measures(args.top_k)
    evaluation.parse_measures(measures)  # a typo fails before the model loads
    show_progress = sys.stderr.isatty() if args.progress is None else args.progress
    reranker = reranker_from_args(args)
    report = evaluation.evaluate_reranker(
        reranker,
        dataset,
        run=run,
        top_k=args.top_k,
        measures=measures,
        instruction=args.instruction,
        max_doc_tokens=args.max_doc_tokens,
        max_queries=args.max_queries,
        show_progress=show_progress,
        first_stage_name=f"run {args.run}" if args.run is not None else "bm25",
    )
    if args.save_run:
        evaluation.write_trec_run(report.reranked, args.save_run)
    if args.json:
        json.dump(report.to_dict(), sys.stdout)
        sys.stdout.write("\n")
    else:
        print(
            f"{report.num_queries} queries, first stage: {report.first_stage}, "
            f"top {report.top_k} reranked ({report.num_pairs} pairs)"
        )
        width = max(len("metric"), *(len(m) for m in report.measures))
        print(f"{'metric':<{width}}  {'first stage':>11}  {'reranked':>9}  {'change':>8}")
        for m in report.measures:
            change = report.after[m] - report.before[m]
            print(f"{m:<{width}}  {report.before[m]:>11.4f}  {report.after[m]:>9.4f}  {change:>+8.4f}")
    return 0


# -- batch -------------------------------------------------------------------------------------------


def _register_batch(commands) -> None:
    parser = commands.add_parser(
        "batch",
        help="score a Parquet/JSONL file of (query, document) pairs on Ray (needs the 'ray' extra)",
        description="Score every (query, document) row of a Parquet or JSON-lines file with a pool of reranker "
        "actors on Ray Data and write all input columns plus a score column to a Parquet folder. Runs on a "
        "local Ray instance unless --ray-address (or RAY_ADDRESS) names a cluster.",
    )
    _add_model_options(parser)
    parser.set_defaults(threads=1)
    parser.add_argument("--input", required=True, help="Parquet file or folder, or .jsonl file of pairs")
    parser.add_argument("--output", required=True, help="Parquet folder to write (input columns + score)")
    parser.add_argument("--input-format", choices=("parquet", "jsonl"), default=None, help="default: from the name")
    parser.add_argument("--query-column", default="query", help="default: query")
    parser.add_argument("--document-column", default="document", help="default: document")
    parser.add_argument("--score-column", default="score", help="default: score")
    parser.add_argument("--instruction", default=None, help="task instruction (default: web search)")
    parser.add_argument("--raw", action="store_true", help="write the logit gap yes - no instead of probabilities")
    parser.add_argument("--workers", type=_positive_int, default=2, help="reranker actors, one model each (default: 2)")
    parser.add_argument(
        "--cpus-per-worker", type=_positive_float, default=None, help="CPUs each actor reserves in Ray (default: --threads)"
    )
    parser.add_argument("--rows-per-batch", type=_positive_int, default=256, help="rows per Ray batch (default: 256)")
    parser.add_argument(
        "--ray-address", default=None, help="existing cluster: auto, HOST:PORT or ray://HOST:10001 (default: local)"
    )
    parser.add_argument("--preserve-order", action="store_true", help="write rows in input order")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.set_defaults(handler=_cmd_batch)


def _cmd_batch(args: argparse.Namespace) -> int:
    from ._extras import require
    from .batch import EXTRA, score_file

    _check_dtype(args.dtype)
    require("ray", EXTRA, "qwen3-rerank batch")
    require("pyarrow", EXTRA, "qwen3-rerank batch")
    result = score_file(
        args.input,
        args.output,
        model=args.model,
        dtype=args.dtype,
        instruction=args.instruction,
        raw=args.raw,
        query_column=args.query_column,
        document_column=args.document_column,
        score_column=args.score_column,
        input_format=args.input_format,
        workers=args.workers,
        threads=args.threads,
        cpus_per_worker=args.cpus_per_worker,
        rows_per_batch=args.rows_per_batch,
        ray_address=args.ray_address,
        preserve_order=args.preserve_order,
        overwrite=args.overwrite,
        reranker_options={
            "device": args.device,
            "max_length": args.max_length,
            "batch_size": args.batch_size,
            "max_batch_tokens": args.max_batch_tokens,
        },
    )
    print(f"wrote {result.rows} scored rows to {result.output} ({result.workers} workers)", file=sys.stderr)
    return 0
