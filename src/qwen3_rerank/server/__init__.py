"""HTTP rerank server (``qwen3-rerank serve``): Cohere, Jina and TEI APIs over one request queue and model worker.

Needs the ``server`` extra (FastAPI, uvicorn, prometheus-client). :func:`create_app` builds the
ASGI app for an already loaded :class:`~qwen3_rerank.Reranker`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .settings import ServerSettings

if TYPE_CHECKING:
    from fastapi import FastAPI

    from .model import RerankModel


def create_app(settings: ServerSettings, reranker: RerankModel) -> FastAPI:
    """The ASGI app (imported lazily: the extra is optional)."""
    from .app import create_app as _create_app

    return _create_app(settings, reranker)


__all__ = ["ServerSettings", "create_app"]
