"""``qwen3-rerank``: the parser and the entry point; each command lives in its own module.

Every error a user can cause prints one line on stderr and exits with status 2; nothing here
scores, tokenizes or batches on its own.
"""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from ..errors import RerankError
from . import batch, bench, evaluate, export, optimize, rerank, serve
from .options import EXIT_USAGE, Parser, UsageError

#: The commands, in the order ``--help`` lists them.
COMMANDS = (rerank, optimize, export, serve, bench, evaluate, batch)


def build_parser() -> argparse.ArgumentParser:
    """The ``qwen3-rerank`` parser with every command registered."""
    parser = Parser(prog="qwen3-rerank", description="Qwen3-Reranker on ONNX Runtime.")
    parser.add_argument("--version", action="version", version=f"qwen3-rerank {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for command in COMMANDS:
        command.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (2 for a usage or model error, one line on stderr)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if getattr(args, "handler", None) is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        return int(args.handler(args))
    except (UsageError, RerankError) as exc:
        print(f"qwen3-rerank: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("qwen3-rerank: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
