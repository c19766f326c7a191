"""Lazy imports of optional packages, with one clear line when an extra is not installed."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import RerankError


class MissingExtraError(RerankError, ImportError):
    """An optional package that a feature needs is not installed."""


def require(module: str, extra: str, feature: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(
            f"{feature} needs the optional package {module.split('.')[0]!r}: pip install 'qwen3-rerank[{extra}]'"
        ) from None
