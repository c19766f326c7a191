"""Run the server app on uvicorn, with a clean drain on SIGTERM (``qwen3-rerank serve`` ends here)."""

from __future__ import annotations

import math
import signal
from types import FrameType

from .model import RerankModel
from .settings import ServerSettings


def serve(settings: ServerSettings, reranker: RerankModel) -> int:
    """Run the app on uvicorn until SIGTERM / Ctrl-C, then drain; 0 once it has stopped cleanly.

    Separate from loading the model so that a test can serve a model of its own (a slow fake)
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

    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        server_header=False,
        lifespan="on",
        timeout_graceful_shutdown=int(math.ceil(settings.request_timeout)) + 5,
    )
    server = Server(config)
    # uvicorn re-raises the stop signal once it has shut down; with this no-op handler in place
    # that ends the process normally (exit 0) instead of killing it with the signal.
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        server.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0 if server.started else 1
