"""Lazy imports of optional packages, with one clear line when an extra is not installed."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import RerankError


class MissingExtraError(RerankError, ImportError):
    """An optional package that a feature needs is not installed."""


def require(module: str, extra: str, feature: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming the extra to install.

    Args:
        module: the module to import, e.g. ``"ray"``.
        extra: the package extra that installs it, e.g. ``"ray"`` for ``qwen3-rerank[ray]``.
        feature: what needs it, for the message.

    Returns:
        The imported module.

    Raises:
        MissingExtraError: the module cannot be imported.
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(
            f"{feature} needs the optional package {module.split('.')[0]!r}: pip install 'qwen3-rerank[{extra}]'"
        ) from None
