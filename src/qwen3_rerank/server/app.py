"""The FastAPI application, assembled from the server's units.

The request path follows text-embeddings-inference's split: routes (:mod:`.routes`, HTTP in and
out) → infer (:mod:`.infer`: admission permit, tokenizing, timeout) → queue (:mod:`.queue`:
FIFO batches under a token budget) → worker (:mod:`.worker`: the model, one step at a time).
This module only wires them: state, lifespan (warm-up, drain), error handlers, middleware, and
the browser page (:mod:`.ui`, unless ``--no-ui``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from fastapi import FastAPI

from .. import __version__
from .api_errors import install_error_handlers
from .middleware import REQUEST_ID_HEADER, RequestContextMiddleware
from .model import RerankModel
from .routes import router
from .settings import ServerSettings
from .state import ServerState
from .tracing import Tracing
from .ui import router as ui_router

__all__ = ["REQUEST_ID_HEADER", "create_app"]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Warm the models up before the port answers; on shutdown, score what is queued, then stop."""
    state: ServerState = app.state.server
    await state.start()
    yield
    await state.stop()


def create_app(
    settings: ServerSettings,
    reranker: RerankModel | Mapping[str, RerankModel],
    *,
    tracing: Tracing | None = None,
) -> FastAPI:
    """The server's ASGI app for a loaded model, or several by name, the default first (its
    :class:`ServerState` is ``app.state.server``).

    ``tracing``: where the request spans go; default: the OTLP exporter ``settings`` name, if any
    (:meth:`Tracing.from_settings`).
    """
    app = FastAPI(
        title="qwen3-rerank",
        version=__version__,
        description="Qwen3-Reranker on ONNX Runtime, with the Cohere / Jina (`/v1/rerank`, `/v2/rerank`) "
        "and text-embeddings-inference (`/rerank`) rerank APIs, and vLLM's score API (`/score`).",
        lifespan=lifespan,
    )
    state = ServerState(settings, reranker, tracing if tracing is not None else Tracing.from_settings(settings))
    app.state.server = state
    install_error_handlers(app)
    app.include_router(router)
    if settings.ui:
        app.include_router(ui_router)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    # Outermost: request id, body limit, access log and request metrics see every request.
    app.add_middleware(RequestContextMiddleware, state=state)
    return app
