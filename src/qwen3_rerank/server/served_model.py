"""One model the server runs, with the request path of its own: admission, queue, worker, watch.

A server of several models (``serve --model a=... --model b=...``) holds one :class:`ServedModel`
per name. Each has its own micro-batcher (a :class:`~.request_queue.RequestQueue` and a
:class:`~.worker.Worker` on a thread of its own), since one model step cannot mix two models,
and its own admission limit (``--max-queued-requests`` each), so that a flood of requests for
one model is refused with 429 by that model alone and never starves the others' clients. Its
series in ``/metrics`` carry its name as the ``model`` label.
"""

from __future__ import annotations

import logging
import time

from .admission import Admission
from .infer import Infer
from .memory import mib, resident_bytes
from .metrics import Metrics
from .model import RerankModel
from .model_watch import ModelWatch
from .request_queue import RequestQueue
from .settings import ServerSettings
from .worker import Worker

log = logging.getLogger("qwen3_rerank.server")


class ServedModel:
    """A loaded model under its served name, and the parts of the request path that are its own.

    Args:
        name: the name clients give as ``model`` (and the ``model`` label of its metrics).
        model: the loaded reranker (or, in tests, a fake with the same calls).
        settings: the server's settings (batching, limits and timeout apply to each model).
        metrics: the server's metrics; this model's series are taken from them.
    """

    def __init__(self, name: str, model: RerankModel, settings: ServerSettings, metrics: Metrics) -> None:
        self.name = name
        self.model = model
        self.metrics = metrics.for_model(name)
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
        #: warmed up and taking requests (set by :meth:`start`, cleared by :meth:`stop`)
        self.ready = False

    async def start(self) -> None:
        """Start the worker and send one request through the whole path, so no client pays for it."""
        self.worker.start()
        began = time.perf_counter()
        await self.infer.warm_up()
        self.ready = True
        log.info(
            "model %s warmed up in %.2f s; resident memory now %s",
            self.name,
            time.perf_counter() - began,
            mib(resident_bytes()),
        )

    async def stop(self) -> None:
        """Stop taking requests, score what is queued, and end the worker."""
        self.ready = False
        await self.worker.stop()
        if self.watch is not None:
            self.watch.close()

    def model_failure(self) -> str | None:
        """Why this model can no longer be trusted (a weight file overwritten in place), or None.

        A few ``stat`` calls (see :mod:`.model_watch`); also logs, once, a warning when the model
        folder was renamed, replaced or deleted, which the loaded session survives.
        """
        return None if self.watch is None else self.watch.check()
