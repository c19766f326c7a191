"""The ``qwen3-rerank`` command line: one module per command over one shared options module."""

from __future__ import annotations

from .main import build_parser, main
from .options import UsageError

__all__ = ["UsageError", "build_parser", "main"]
