"""Run the server app on uvicorn, with a clean drain on SIGTERM (``qwen3-rerank serve`` ends here).

Connection limits are set here, deliberately, rather than left to uvicorn's defaults:

* the HTTP parser is always h11 (``--max-header-bytes`` is h11's limit; with httptools installed
  uvicorn would otherwise pick it and ignore the limit);
* ``--timeout-keep-alive`` also closes a connection that sends nothing after connecting (uvicorn
  starts that timer only after a first answer, so an idle connection otherwise stays forever);
* ``--limit-concurrency`` caps connections plus requests in progress (503 beyond it), and the
  process's open-file limit is raised to hold that many sockets.
"""

from __future__ import annotations

import asyncio
import logging
import math
import signal
from collections.abc import Mapping
from types import FrameType
from typing import Any

from .model import RerankModel
from .settings import ServerSettings

log = logging.getLogger("qwen3_rerank.server")

#: descriptors the process needs besides its connections (model files, logs, threads' pipes, ...)
FD_HEADROOM = 256


def protocol_class() -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol with the keep-alive timer running from the moment a connection opens."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class IdleTimeoutProtocol(H11Protocol):
        """Closes a connection that stays silent for ``timeout_keep_alive`` s, before a first request too.

        Any byte received cancels the timer (uvicorn's own rule after an answer), so a client that
        is sending, however slowly, is not cut; a silent one cannot hold a socket for ever.
        """

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

    return IdleTimeoutProtocol


def raise_open_file_limit(connections: int) -> int:
    """Raise the soft open-file limit to fit ``connections`` sockets plus :data:`FD_HEADROOM`.

    Returns:
        The soft limit now in force (unchanged where it already fits or cannot be raised; a
        warning is logged when it stays below what is needed).
    """
    try:
        import resource
    except ImportError:  # not on Windows
        return -1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + FD_HEADROOM
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < wanted:
        log.warning(
            "open-file limit %d is below --limit-concurrency %d + %d: connections past about %d will be refused "
            "by the operating system rather than answered 503 (raise it with ulimit -n)",
            soft,
            connections,
            FD_HEADROOM,
            soft - FD_HEADROOM,
        )
    return int(soft)


def uvicorn_config(settings: ServerSettings, app: Any) -> Any:
    """The ``uvicorn.Config`` for the app: address, connection limits, no access log of uvicorn's own."""
    import uvicorn

    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        server_header=False,
        lifespan="on",
        http=protocol_class(),
        limit_concurrency=settings.limit_concurrency,
        timeout_keep_alive=settings.timeout_keep_alive,
        h11_max_incomplete_event_size=settings.max_header_bytes,
        timeout_graceful_shutdown=int(math.ceil(settings.request_timeout)) + 5,
    )


def serve(settings: ServerSettings, reranker: RerankModel | Mapping[str, RerankModel]) -> int:
    """Run the app on uvicorn until SIGTERM / Ctrl-C, then drain; 0 once it has stopped cleanly.

    ``reranker``: the model, or several by name (the default first). Separate from loading the
    models so that a test can serve a model of its own (a slow fake)
    through exactly the production start, signal handling and drain.
    """
    import uvicorn

    from .app import create_app

    app = create_app(settings, reranker)
    state = app.state.server

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            state.draining = True  # /ready says no while draining
            super().handle_exit(sig, frame)

    raise_open_file_limit(settings.limit_concurrency)
    server = Server(uvicorn_config(settings, app))
    # uvicorn re-raises the stop signal once it has shut down; with this no-op handler in place
    # that ends the process normally (exit 0) instead of killing it with the signal.
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        server.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0 if server.started else 1
