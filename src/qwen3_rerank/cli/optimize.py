"""``qwen3-rerank optimize``: build the score graphs of a model ahead of time (see :mod:`..prebuild`)."""

from __future__ import annotations

import argparse
import json

from .options import Parser, dtype_name


def register(commands: argparse._SubParsersAction[Parser]) -> None:
    """Add the ``optimize`` command to the CLI's subparsers."""
    optimize = commands.add_parser(
        "optimize", help="build the score graphs of a model folder ahead of time (otherwise built at first load)"
    )
    optimize.add_argument("model", help="model folder or Hub repo id")
    optimize.add_argument(
        "--dtype", type=dtype_name, default=None, help="only this variant (default: every variant present)"
    )
    optimize.add_argument(
        "--cache",
        metavar="DIR",
        default=None,
        help="build into this score-graph cache instead of beside the model (for a model folder mounted "
        "read-only later; load with QWEN3_RERANK_CACHE=DIR or --score-graph-cache DIR)",
    )
    optimize.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run ``qwen3-rerank optimize`` with its parsed arguments; returns the exit status."""
    from ..prebuild import build_score_graphs

    for record in build_score_graphs(args.model, args.dtype, cache=args.cache):
        print(json.dumps(record))
    return 0
