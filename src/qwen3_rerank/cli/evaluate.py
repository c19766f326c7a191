"""``qwen3-rerank eval``: reranking quality on a BEIR-format dataset (see :mod:`..evaluation`).

Its optional packages are imported only when the command runs; a missing one is reported as one
line naming the extra to install (exit status 2).
"""

from __future__ import annotations

import argparse
import json
import sys

from .options import ModelOptions, Parser, add_model_options, add_progress_options, positive_int, show_progress


def register(commands: argparse._SubParsersAction[Parser]) -> None:
    """Add the ``eval`` command to the CLI's subparsers."""
    parser = commands.add_parser(
        "eval",
        help="measure reranking on a BEIR-format dataset (needs the 'eval' extra)",
        description="Rerank the top-k of a first stage (a TREC run file, or BM25) on a BEIR-format dataset and "
        "report nDCG@10, MRR@10 and Recall@k before and after reranking, computed with ir-measures.",
    )
    add_model_options(parser)
    parser.add_argument("dataset", help="BEIR dataset folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv")
    parser.add_argument("--split", default="test", help="qrels split to evaluate (default: test)")
    parser.add_argument("--run", default=None, help="first-stage TREC run file (default: BM25 over the corpus)")
    parser.add_argument("--top-k", type=positive_int, default=100, help="documents reranked per query (default: 100)")
    parser.add_argument(
        "--metric",
        action="append",
        default=None,
        help="an ir-measures metric, repeatable (default: nDCG@10, RR@10 i.e. MRR@10, R@<top-k>)",
    )
    parser.add_argument(
        "--max-queries", type=positive_int, default=None, help="evaluate only the first N judged queries"
    )
    parser.add_argument("--instruction", default=None, help="task instruction (default: web search)")
    parser.add_argument("--max-doc-tokens", type=positive_int, default=None, help="cut each document to N tokens first")
    parser.add_argument("--save-run", default=None, help="write the reranked top-k as a TREC run file")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    add_progress_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run ``qwen3-rerank eval`` with its parsed arguments; returns the exit status."""
    from .. import evaluation
    from .._extras import require

    require("ir_measures", evaluation.EXTRA, "qwen3-rerank eval")
    if args.run is None:
        require("bm25s", evaluation.EXTRA, "qwen3-rerank eval")
    dataset = evaluation.load_beir(args.dataset, split=args.split)
    run = evaluation.read_trec_run(args.run) if args.run is not None else None
    measures = args.metric or evaluation.default_measures(args.top_k)
    evaluation.parse_measures(measures)  # a typo fails before the model loads
    progress = show_progress(args)
    reranker = ModelOptions.from_args(args).load()
    report = evaluation.evaluate_reranker(
        reranker,
        dataset,
        run=run,
        top_k=args.top_k,
        measures=measures,
        instruction=args.instruction,
        max_doc_tokens=args.max_doc_tokens,
        max_queries=args.max_queries,
        show_progress=progress,
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
