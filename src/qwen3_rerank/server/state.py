"""What the routes share: settings, model, metrics, the infer path and the server's readiness.

Built once per app by :func:`~.app.create_app` and kept on ``app.state.server``; routes get it
through :func:`~.routes.server_state`, typed, rather than from variables closed over.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from . import tracing
from .admission import Admission
from .api_errors import ApiError
from .infer import Infer, RerankParams, Scored
from .metrics import Metrics
from .model import RerankModel
from .model_watch import ModelWatch
from .request_queue import RequestQueue
from .settings import ServerSettings
from .tracing import Tracing
from .worker import Worker

log = logging.getLogger("qwen3_rerank.server")


class ServerState:
    """The one object a route gets: the settings, the model and the parts of the path around it.

    Args:
        settings: the server's resolved settings.
        model: the loaded reranker (or, in tests, a fake with the same calls).
        tracing: the request spans' tracer (:mod:`.tracing`); None: requests are not traced.
    """

    def __init__(self, settings: ServerSettings, model: RerankModel, tracing: Tracing | None = None) -> None:
        self.settings = settings
        self.model = model
        self.tracing = tracing
        self.metrics = Metrics()
        self.admission = Admission(settings.max_queued_requests, self.metrics.queue_depth)
        self.queue = RequestQueue()
        #: the loaded model's files on disk (None for a model that does not say where they are)
        self.watch = ModelWatch.for_model(model)
        self.worker = Worker(
            model,
            self.queue,
            self.metrics,
            max_batch_tokens=settings.max_batch_tokens,
            max_wait=settings.max_batch_wait,
            model_failure=self.model_failure,
        )
        self.infer = Infer(model, self.admission, self.queue, self.worker, timeout=settings.request_timeout)
        #: loaded and warmed up (set by :meth:`start`)
        self.ready = False
        #: a stop signal came: refuse new requests, finish the ones in flight (set by ``serve``)
        self.draining = False
        self.started = int(time.time())

    async def start(self) -> None:
        """Start the worker and send one request through the whole path, so no client pays for it."""
        self.worker.start()
        began = time.perf_counter()
        await self.infer.warm_up()
        self.ready = True
        log.info("model warmed up in %.2f s; ready", time.perf_counter() - began)

    async def stop(self) -> None:
        """Stop taking requests, score what is queued, and end the worker."""
        self.ready = False
        await self.worker.stop()
        if self.watch is not None:
            self.watch.close()
        if self.tracing is not None:  # after the worker: the last requests' spans go out too
            self.tracing.shutdown()

    def model_failure(self) -> str | None:
        """Why the loaded model can no longer be trusted (a weight file overwritten in place), or None.

        A few ``stat`` calls (see :mod:`.model_watch`); also logs, once, a warning when the model
        folder was renamed, replaced or deleted, which the loaded session survives.
        """
        return None if self.watch is None else self.watch.check()

    async def rerank(self, params: RerankParams, client_gone: Callable[[], Awaitable[object]] | None = None) -> Scored:
        """Scores through :class:`Infer`, once the server takes requests and the request is in limits."""
        return (await self.rerank_groups([params], client_gone))[0]

    async def rerank_groups(
        self, groups: Sequence[RerankParams], client_gone: Callable[[], Awaitable[object]] | None = None
    ) -> list[Scored]:
        """Several queries' groups as one request (one permit; their documents count together)."""
        failure = self.model_failure()
        if failure is not None:  # no Retry-After: only a restart brings this server back
            raise ApiError(503, "model_changed", failure)
        if not self.ready or self.draining:
            raise ApiError(503, "unavailable", "the model is not ready", {"Retry-After": "1"})
        documents = sum(len(params.texts) for params in groups)
        trace = tracing.current()
        trace.scoring(tracing.model_name(self.settings), documents)
        if documents > self.settings.max_documents:
            raise ApiError(
                422, "invalid_request", f"too many documents: {documents} (limit {self.settings.max_documents})"
            )
        scored = await self.infer.rerank_groups(groups, client_gone)
        trace.responding()
        return scored
