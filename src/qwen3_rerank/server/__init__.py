"""HTTP rerank server (``qwen3-rerank serve``): Cohere, Jina and TEI APIs over a request queue and worker per model.

Needs the ``server`` extra (FastAPI, uvicorn, prometheus-client). :func:`create_app` builds the
ASGI app for an already loaded :class:`~qwen3_rerank.Reranker`, or for several by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from .settings import ServerSettings

if TYPE_CHECKING:
    from fastapi import FastAPI

    from .model import RerankModel


def create_app(settings: ServerSettings, reranker: RerankModel | Mapping[str, RerankModel]) -> FastAPI:
    """The ASGI app for a model, or several by name (imported lazily: the extra is optional)."""
    from .app import create_app as _create_app

    return _create_app(settings, reranker)


__all__ = ["ServerSettings", "create_app"]
