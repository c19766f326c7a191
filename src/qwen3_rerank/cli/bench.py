"""``qwen3-rerank bench``: the benchmark matrix (see :mod:`qwen3_rerank.bench.run`)."""

from __future__ import annotations

import argparse

from .options import Parser


def register(commands: argparse._SubParsersAction[Parser]) -> None:
    """Add the ``bench`` command to the CLI's subparsers."""
    from ..bench import run as bench_run

    bench = commands.add_parser(
        "bench",
        help="benchmark this library against the PyTorch recipe and Transformers.js",
        description="Run every engine x workload in its own process and write results.json, PNG plots and "
        "summary.md (see README.md, Benchmarks). Needs the 'bench' extra for plots; the torch "
        "engines need the 'export' extra, the js engines Node with 'npm ci' in qwen3_rerank/bench/js.",
    )
    bench_run.add_arguments(bench)
    bench.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run ``qwen3-rerank bench`` with its parsed arguments; returns the exit status."""
    from ..bench import run as bench_run

    args.from_cli = True
    report = bench_run.run(args)
    failed = [r for r in report.get("results", []) if "error" in r]
    return 1 if failed else 0
