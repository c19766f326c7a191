"""``qwen3-rerank rerank``: rank documents for a query (the main job)."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from ..results import RerankResult
from .options import (
    CHUNKING_MODES,
    ModelOptions,
    Parser,
    UsageError,
    add_model_options,
    add_progress_options,
    positive_int,
    show_progress,
)


def register(commands: argparse._SubParsersAction[Parser]) -> None:
    """Add the ``rerank`` command to the CLI's subparsers."""
    rerank = commands.add_parser("rerank", help="rank documents for a query")
    add_model_options(rerank)
    rerank.add_argument("--query", "-q", required=True, help="the search query")
    rerank.add_argument("--instruction", default=None, help="task instruction (default: web search)")
    rerank.add_argument("--top-k", type=positive_int, default=None, help="show only the best K documents")
    rerank.add_argument(
        "--docs",
        default=None,
        help="file of documents: .jsonl with a \"text\" field per line, otherwise one per line; '-' for stdin",
    )
    rerank.add_argument(
        "--chunking",
        choices=CHUNKING_MODES,
        default=None,
        help="split long documents into overlapping token windows and combine their scores",
    )
    rerank.add_argument("--chunk-tokens", type=positive_int, default=512, help="window length in tokens (default: 512)")
    rerank.add_argument(
        "--chunk-overlap", type=int, default=64, help="tokens shared by consecutive windows (default: 64)"
    )
    rerank.add_argument("--json", action="store_true", help="print a JSON array of {index, score, document}")
    add_progress_options(rerank)
    rerank.add_argument("documents", nargs="*", help="documents to rank (or use --docs)")
    rerank.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run ``qwen3-rerank rerank`` with its parsed arguments; returns the exit status."""
    documents = list(args.documents)
    if args.docs is not None:
        documents += read_documents(args.docs)
    if not documents:
        raise UsageError("no documents: give them as arguments or with --docs FILE")
    reranker = ModelOptions.from_args(args).load(show_progress=show_progress(args))
    results = reranker.rerank(
        args.query,
        documents,
        top_k=args.top_k,
        instruction=args.instruction,
        chunking=args.chunking,
        chunk_tokens=args.chunk_tokens,
        chunk_overlap=args.chunk_overlap,
    )
    if args.json:
        json.dump([r.to_dict() for r in results], sys.stdout, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        print_table(results)
    return 0


def read_documents(source: str) -> list[str]:
    """Documents from a file (or ``-`` for stdin): JSON lines with ``text``, or one per line.

    Raises:
        UsageError: the file is missing or unreadable, or a JSON line is not ``{"text": ...}``.
    """
    if source == "-":
        text = sys.stdin.read()
        name = "<stdin>"
        is_jsonl = _looks_like_jsonl(text)
    else:
        path = Path(source)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UsageError(f"documents file not found: {source}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read documents file {source}: {exc}") from None
        name = source
        is_jsonl = path.suffix.lower() == ".jsonl"
    if not is_jsonl:
        return [line for line in text.splitlines() if line.strip()]
    documents = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{name}, line {number}: not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise UsageError(f'{name}, line {number}: expected an object with a string "text" field')
        documents.append(record["text"])
    return documents


def _looks_like_jsonl(text: str) -> bool:
    first = next((line for line in text.splitlines() if line.strip()), "")
    if not first.lstrip().startswith("{"):
        return False
    try:
        return isinstance(json.loads(first), dict)
    except json.JSONDecodeError:
        return False


def print_table(results: Sequence[RerankResult]) -> None:
    """Rank, index, score and the start of each document, fitted to the terminal's width."""
    text_width = max(20, shutil.get_terminal_size((100, 24)).columns - 22)
    print(f"{'rank':>4}  {'index':>5}  {'score':>7}  document")
    for rank, result in enumerate(results, 1):
        doc = " ".join((result.document or "").split())
        if len(doc) > text_width:
            doc = doc[: text_width - 1] + "…"
        print(f"{rank:>4}  {result.index:>5}  {result.score:7.4f}  {doc}")
