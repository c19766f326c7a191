"""``qwen3-rerank``: thin commands over the library.

Every error a user can cause prints one line on stderr and exits with status 2; nothing here
scores, tokenizes or batches on its own.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__
from .errors import RerankError
from .export import commands as export_commands
from .files import DEFAULT_MODEL, DTYPES
from .bench import commands as bench_commands
from .server import commands as server_commands

EXIT_USAGE = 2


class UsageError(Exception):
    """A command-line mistake: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of argparse's usage block
        raise UsageError(message)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"local folder or Hub repo id (default: {DEFAULT_MODEL})")
    parser.add_argument("--dtype", default="q8", help=f"model variant: {', '.join(DTYPES)} (default: q8)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--threads", type=_positive_int, default=None, help="intra-op threads (default: one per core)")
    parser.add_argument("--max-length", type=_positive_int, default=8192, help="most tokens per prompt (default: 8192)")
    parser.add_argument("--batch-size", type=_positive_int, default=32, help="most pairs per batch (default: 32)")
    parser.add_argument(
        "--max-batch-tokens", type=_positive_int, default=4096, help="token budget per padded batch (default: 4096)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="qwen3-rerank", description="Qwen3-Reranker on ONNX Runtime.")
    parser.add_argument("--version", action="version", version=f"qwen3-rerank {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    rerank = commands.add_parser("rerank", help="rank documents for a query")
    _add_model_options(rerank)
    rerank.add_argument("--query", "-q", required=True, help="the search query")
    rerank.add_argument("--instruction", default=None, help="task instruction (default: web search)")
    rerank.add_argument("--top-k", type=_positive_int, default=None, help="show only the best K documents")
    rerank.add_argument(
        "--docs",
        default=None,
        help="file of documents: .jsonl with a \"text\" field per line, otherwise one per line; '-' for stdin",
    )
    rerank.add_argument(
        "--chunking",
        choices=("max", "mean", "first"),
        default=None,
        help="split long documents into overlapping token windows and combine their scores",
    )
    rerank.add_argument("--chunk-tokens", type=_positive_int, default=512, help="window length in tokens (default: 512)")
    rerank.add_argument(
        "--chunk-overlap", type=int, default=64, help="tokens shared by consecutive windows (default: 64)"
    )
    rerank.add_argument("--json", action="store_true", help="print a JSON array of {index, score, document}")
    progress = rerank.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None, help="show a progress bar")
    progress.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    rerank.add_argument("documents", nargs="*", help="documents to rank (or use --docs)")
    rerank.set_defaults(handler=_cmd_rerank)

    optimize = commands.add_parser(
        "optimize", help="build the score graphs of a model folder ahead of time (otherwise built at first load)"
    )
    optimize.add_argument("model", help="model folder or Hub repo id")
    optimize.add_argument("--dtype", default=None, help="only this variant (default: every variant present)")
    optimize.set_defaults(handler=_cmd_optimize)
    export_commands.register(commands)
    server_commands.register(commands)
    bench_commands.register(commands)
    from . import extras_commands  # imports this module's helpers, so not at the top

    extras_commands.register(commands)  # eval, batch
    return parser


def reranker_from_args(args: argparse.Namespace, **options):
    """The :class:`Reranker` that the options of :func:`_add_model_options` describe."""
    from .reranker import Reranker

    return Reranker.from_pretrained(
        args.model,
        dtype=args.dtype,
        device=args.device,
        threads=args.threads,
        max_length=args.max_length,
        batch_size=args.batch_size,
        max_batch_tokens=args.max_batch_tokens,
        **options,
    )


def read_documents(source: str) -> list[str]:
    """Documents from a file (or ``-`` for stdin): JSON lines with ``text``, or one per line."""
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


def _cmd_rerank(args: argparse.Namespace) -> int:
    documents = list(args.documents)
    if args.docs is not None:
        documents += read_documents(args.docs)
    if not documents:
        raise UsageError("no documents: give them as arguments or with --docs FILE")
    if args.dtype not in DTYPES:
        raise UsageError(f"unknown dtype {args.dtype!r}; choose one of: {', '.join(DTYPES)}")
    show_progress = sys.stderr.isatty() if args.progress is None else args.progress
    reranker = reranker_from_args(args, show_progress=show_progress)
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
        _print_table(results)
    return 0


def _cmd_optimize(args: argparse.Namespace) -> int:
    from .files import available_dtypes, resolve_model
    from .score_graph import ensure_score_graph, score_graph_record
    from .tokenize import PromptTokenizer

    if args.dtype:
        dtypes = [args.dtype]
    elif Path(args.model).is_dir():
        dtypes = available_dtypes(Path(args.model))
        if not dtypes:
            raise UsageError(f"{args.model} has no onnx/ model files")
    else:
        raise UsageError("give --dtype for a Hub repo id (only that variant is downloaded)")
    for dtype in dtypes:
        files = resolve_model(args.model, dtype)
        tokenizer = PromptTokenizer.from_file(files.tokenizer, pad_token=files.pad_token)
        path = ensure_score_graph(files.onnx, tokenizer.yes_id, tokenizer.no_id)
        record = score_graph_record(path)
        print(json.dumps({"dtype": dtype, "score_graph": str(path), "source_sha256": record.get("source_sha256"),
                          "output": record.get("output")}))
    return 0


def _print_table(results) -> None:
    width = shutil_width()
    text_width = max(20, width - 22)
    print(f"{'rank':>4}  {'index':>5}  {'score':>7}  document")
    for rank, result in enumerate(results, 1):
        doc = " ".join((result.document or "").split())
        if len(doc) > text_width:
            doc = doc[: text_width - 1] + "…"
        print(f"{rank:>4}  {result.index:>5}  {result.score:7.4f}  {doc}")


def shutil_width() -> int:
    import shutil

    return shutil.get_terminal_size((100, 24)).columns


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if getattr(args, "handler", None) is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        return args.handler(args)
    except (UsageError, RerankError) as exc:
        print(f"qwen3-rerank: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("qwen3-rerank: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
