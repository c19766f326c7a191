"""What the routes share: settings, the served models, metrics and the server's readiness.

Built once per app by :func:`~.app.create_app` and kept on ``app.state.server``; routes get it
through :func:`~.routes.server_state`, typed, rather than from variables closed over. Each model
is a :class:`~.served_model.ServedModel` under its name; a route finds the one a request asks
for with :meth:`ServerState.pick`, the one place that rule lives.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

from . import tracing
from .api_errors import ApiError
from .infer import RerankParams, Scored
from .metrics import Metrics
from .model import RerankModel
from .served_model import ServedModel
from .settings import ServerSettings
from .tracing import Tracing

log = logging.getLogger("qwen3_rerank.server")


class ServerState:
    """The one object a route gets: the settings, the served models and what they share.

    Args:
        settings: the server's resolved settings.
        models: the loaded reranker (served as ``settings.model_name``), or several by name; the
            first is the default, scoring requests that name no model. Models are fakes in tests.
        tracing: the request spans' tracer (:mod:`.tracing`); None: requests are not traced.

    Raises:
        ValueError: ``models`` is an empty mapping.
    """

    def __init__(
        self,
        settings: ServerSettings,
        models: RerankModel | Mapping[str, RerankModel],
        tracing: Tracing | None = None,
    ) -> None:
        self.settings = settings
        self.tracing = tracing
        named = dict(models) if isinstance(models, Mapping) else {settings.model_name: models}
        if not named:
            raise ValueError("no model to serve")
        self.metrics = Metrics()
        #: the served models by name, the default first
        self.models: dict[str, ServedModel] = {
            name: ServedModel(name, model, settings, self.metrics) for name, model in named.items()
        }
        #: the model of a request that names none
        self.default = next(iter(self.models.values()))
        #: a stop signal came: refuse new requests, finish the ones in flight (set by ``serve``)
        self.draining = False
        self.started = int(time.time())

    @property
    def ready(self) -> bool:
        """Every model is warmed up (and none is stopping)."""
        return all(served.ready for served in self.models.values())

    def not_ready(self) -> list[str]:
        """The names of the models not warmed up yet (or stopped)."""
        return [name for name, served in self.models.items() if not served.ready]

    async def start(self) -> None:
        """Warm each model up in turn (its worker started, one request through its whole path)."""
        for served in self.models.values():
            await served.start()
        log.info("ready: serving %s", ", ".join(self.models))

    async def stop(self) -> None:
        """Stop taking requests, score what each model has queued, and end the workers."""
        await asyncio.gather(*(served.stop() for served in self.models.values()))
        if self.tracing is not None:  # after the workers: the last requests' spans go out too
            self.tracing.shutdown()

    def pick(self, name: str | None) -> ServedModel:
        """The model a request's ``model`` field asks for.

        No name gives the default (the first model). With one model every name does too, as
        before there could be several: clients send names of their own (a Cohere SDK's
        ``rerank-english-v3.0``) and the answer names the served model. With several, a name
        must be one of theirs.

        Raises:
            ApiError: 404 for a name not served here, with the served names in the message.
        """
        if name is None or len(self.models) == 1:
            return self.default
        served = self.models.get(name)
        if served is None:
            raise ApiError(
                404, "model_not_found", f"model {name!r} is not served here; served models: {', '.join(self.models)}"
            )
        return served

    def model_failure(self) -> str | None:
        """Why a served model can no longer be trusted (its weight file overwritten in place), or None."""
        for served in self.models.values():
            failure = served.model_failure()
            if failure is not None:
                return failure if len(self.models) == 1 else f"model {served.name}: {failure}"
        return None

    async def rerank(
        self,
        served: ServedModel,
        params: RerankParams,
        client_gone: Callable[[], Awaitable[object]] | None = None,
    ) -> Scored:
        """Scores from ``served`` (see :meth:`pick`), once it takes requests and the request is in limits."""
        return (await self.rerank_groups(served, [params], client_gone))[0]

    async def rerank_groups(
        self,
        served: ServedModel,
        groups: Sequence[RerankParams],
        client_gone: Callable[[], Awaitable[object]] | None = None,
    ) -> list[Scored]:
        """Several queries' groups as one request (one permit; their documents count together)."""
        failure = served.model_failure()
        if failure is not None:  # no Retry-After: only a restart brings this server back
            raise ApiError(503, "model_changed", failure)
        if not served.ready or self.draining:
            raise ApiError(503, "unavailable", "the model is not ready", {"Retry-After": "1"})
        documents = sum(len(params.texts) for params in groups)
        trace = tracing.current()
        trace.scoring(served.name, documents)
        if documents > self.settings.max_documents:
            raise ApiError(
                422, "invalid_request", f"too many documents: {documents} (limit {self.settings.max_documents})"
            )
        scored = await served.infer.rerank_groups(groups, client_gone)
        trace.responding()
        return scored
