"""``qwen3-rerank batch``: score a file of (query, document) pairs on Ray (see :mod:`..ray_batch`).

Ray and pyarrow are imported only when the command runs; a missing one is reported as one line
naming the extra to install (exit status 2).
"""

from __future__ import annotations

import argparse
import sys

from .options import ModelOptions, Parser, add_model_options, positive_float, positive_int


def register(commands: argparse._SubParsersAction[Parser]) -> None:
    """Add the ``batch`` command to the CLI's subparsers."""
    parser = commands.add_parser(
        "batch",
        help="score a Parquet/JSONL file of (query, document) pairs on Ray (needs the 'ray' extra)",
        description="Score every (query, document) row of a Parquet or JSON-lines file with a pool of reranker "
        "actors on Ray Data and write all input columns plus a score column to a Parquet folder. Runs on a "
        "local Ray instance unless --ray-address (or RAY_ADDRESS) names a cluster.",
    )
    add_model_options(parser)
    parser.set_defaults(threads=1)
    parser.add_argument("--input", required=True, help="Parquet file or folder, or .jsonl file of pairs")
    parser.add_argument("--output", required=True, help="Parquet folder to write (input columns + score)")
    parser.add_argument("--input-format", choices=("parquet", "jsonl"), default=None, help="default: from the name")
    parser.add_argument("--query-column", default="query", help="default: query")
    parser.add_argument("--document-column", default="document", help="default: document")
    parser.add_argument("--score-column", default="score", help="default: score")
    parser.add_argument("--instruction", default=None, help="task instruction (default: web search)")
    parser.add_argument("--raw", action="store_true", help="write the logit gap yes - no instead of probabilities")
    parser.add_argument("--workers", type=positive_int, default=2, help="reranker actors, one model each (default: 2)")
    parser.add_argument(
        "--cpus-per-worker",
        type=positive_float,
        default=None,
        help="CPUs each actor reserves in Ray (default: --threads)",
    )
    parser.add_argument("--rows-per-batch", type=positive_int, default=256, help="rows per Ray batch (default: 256)")
    parser.add_argument(
        "--ray-address", default=None, help="existing cluster: auto, HOST:PORT or ray://HOST:10001 (default: local)"
    )
    parser.add_argument("--preserve-order", action="store_true", help="write rows in input order")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run ``qwen3-rerank batch`` with its parsed arguments; returns the exit status."""
    from .._extras import require
    from ..ray_batch import EXTRA, score_file

    options = ModelOptions.from_args(args)
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
            name: value for name, value in options.reranker_options().items() if name not in ("dtype", "threads")
        },
    )
    print(f"wrote {result.rows} scored rows to {result.output} ({result.workers} workers)", file=sys.stderr)
    return 0
