"""HTTP rerank server (``qwen3-rerank serve``): Cohere, Jina and TEI APIs over one request queue and model worker.

Needs the ``server`` extra (FastAPI, uvicorn, prometheus-client). :func:`create_app` builds the
ASGI app for an already loaded :class:`~qwen3_rerank.Reranker`.
"""

from .settings import ServerSettings


def create_app(settings, reranker):
    """The ASGI app (imported lazily: the extra is optional)."""
    from .app import create_app as _create_app

    return _create_app(settings, reranker)


__all__ = ["ServerSettings", "create_app"]
