"""What every command shares: the usage error, the parser class, and the model options.

The model options are one dataclass, :class:`ModelOptions`, whose defaults are the library's own
constants, so a default changed in the library is the CLI's default too. ``serve`` reads the same
defaults but resolves them from flags and environment variables itself (see :mod:`.serve`).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from typing import Any, NoReturn

from ..files import DEFAULT_DTYPE, DEFAULT_MODEL, DTYPES
from ..prompt import DEFAULT_TEMPLATE, TEMPLATES
from ..reranker import DEFAULT_BATCH_SIZE, DEFAULT_MAX_BATCH_TOKENS, DEFAULT_MAX_LENGTH, Reranker

EXIT_USAGE = 2
CHUNKING_MODES = ("max", "mean", "first")


class UsageError(Exception):
    """A command-line mistake: printed as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (a :class:`UsageError`), not a usage block."""

    def error(self, message: str) -> NoReturn:
        """Raise :class:`UsageError` with argparse's ``message`` instead of printing usage and exiting."""
        raise UsageError(message)


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def dtype_name(text: str) -> str:
    """argparse type: a model variant name, with the library's wording for an unknown one."""
    if text not in DTYPES:
        raise argparse.ArgumentTypeError(f"unknown dtype {text!r}; choose one of: {', '.join(DTYPES)}")
    return text


@dataclass(frozen=True)
class ModelOptions:
    """The options that pick and load a model, as the commands take them."""

    model: str = DEFAULT_MODEL
    dtype: str = DEFAULT_DTYPE
    device: str = "cpu"
    threads: int | None = None
    max_length: int = DEFAULT_MAX_LENGTH
    batch_size: int = DEFAULT_BATCH_SIZE
    max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS
    template: str = DEFAULT_TEMPLATE
    score_graph_cache: str | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ModelOptions:
        """The options as parsed from the flags :func:`add_model_options` added."""
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})

    def reranker_options(self) -> dict[str, Any]:
        """Keyword arguments of :meth:`Reranker.from_pretrained` (all but ``model``)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "model"}

    def load(self, **extra: Any) -> Reranker:
        """The :class:`Reranker` these options describe; ``extra`` adds other keyword arguments."""
        return Reranker.from_pretrained(self.model, **self.reranker_options(), **extra)


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """Add the :class:`ModelOptions` flags to ``parser``."""
    d = ModelOptions()
    parser.add_argument("--model", default=d.model, help=f"local folder or Hub repo id (default: {d.model})")
    parser.add_argument(
        "--dtype",
        default=d.dtype,
        type=dtype_name,
        choices=DTYPES,
        metavar="DTYPE",
        help=f"model variant: {', '.join(DTYPES)} (default: {d.dtype})",
    )
    parser.add_argument("--device", default=d.device, help=f"cpu, cuda or cuda:N (default: {d.device})")
    parser.add_argument(
        "--threads", type=positive_int, default=d.threads, help="intra-op threads (default: one per core)"
    )
    parser.add_argument(
        "--max-length",
        type=positive_int,
        default=d.max_length,
        help=f"most tokens per prompt (default: {d.max_length})",
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=d.batch_size, help=f"most pairs per batch (default: {d.batch_size})"
    )
    parser.add_argument(
        "--max-batch-tokens",
        type=positive_int,
        default=d.max_batch_tokens,
        help=f"token budget per padded batch (default: {d.max_batch_tokens})",
    )
    parser.add_argument(
        "--template",
        choices=tuple(TEMPLATES),
        default=d.template,
        help="prompt template: 'official' (the reference recipe's) or 'card' (the ONNX model card's "
        f"Transformers.js prompt) (default: {d.template})",
    )
    parser.add_argument(
        "--score-graph-cache",
        metavar="DIR",
        default=d.score_graph_cache,
        help="where score graphs go when the model folder is not writable "
        "(default: $QWEN3_RERANK_CACHE, else the user cache directory)",
    )


def add_progress_options(parser: argparse.ArgumentParser) -> None:
    """``--progress`` / ``--no-progress`` (default: a bar when stderr is a terminal)."""
    progress = parser.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None, help="show a progress bar")
    progress.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def show_progress(args: argparse.Namespace) -> bool:
    """Whether to show a progress bar: as ``--progress``/``--no-progress`` say, else when stderr is a terminal."""
    import sys

    return sys.stderr.isatty() if args.progress is None else bool(args.progress)
