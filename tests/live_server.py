"""The app on a real uvicorn in a background thread, for clients that make their own HTTP calls
(LiteLLM, vLLM-shaped requests) against a real model, without a child process to start."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from qwen3_rerank.server.app import create_app
from qwen3_rerank.server.run import uvicorn_config
from qwen3_rerank.server.settings import ServerSettings


@contextmanager
def serving_in_thread(model: Any, **settings: Any) -> Iterator[str]:
    """Yields the server's base URL (a free loopback port); stops it, drained, afterwards."""
    import uvicorn

    config = ServerSettings(max_batch_wait=0.0, port=0, **settings)
    server = uvicorn.Server(uvicorn_config(config, create_app(config, model)))
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
