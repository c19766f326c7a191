"""The outermost ASGI layer: request id, body-size limit, access log and request metrics.

Pure ASGI rather than a FastAPI middleware, so it sees every request, the ones FastAPI refuses
too (404, 413), and can refuse an oversized body before any of it is parsed.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from . import logs, tracing
from .state import ServerState

log = logging.getLogger("qwen3_rerank.server")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REQUEST_ID_HEADER = "x-request-id"
_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
#: paths the request metrics name; any other is counted as "other" (bounded label values)
_ENDPOINTS = {
    "/",
    "/v1/rerank",
    "/v2/rerank",
    "/rerank",
    "/score",
    "/v1/score",
    "/health",
    "/ready",
    "/metrics",
    "/v1/models",
    "/openapi.json",
    "/docs",
}


class RequestContextMiddleware:
    """Pure ASGI: request id (header in, header out, in every log line), body-size limit (413),
    one access-log line and the request metrics for every HTTP request, and the server span of
    each scoring request when tracing is on (:mod:`.tracing`)."""

    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        incoming = dict(scope.get("headers") or ()).get(REQUEST_ID_HEADER.encode(), b"").decode("latin-1")
        rid = incoming if _CLIENT_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        token = logs.request_id.set(rid)
        scope.setdefault("state", {})["request_id"] = rid
        path = scope.get("path", "")
        endpoint = path if path in _ENDPOINTS else "other"
        started = time.perf_counter()
        status_holder = {"status": 500}
        tracer = self.state.tracing
        trace = tracer.start_request(scope, path) if tracer is not None and path in tracing.TRACED_ROUTES else None

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                if trace is not None:
                    trace.response_started()
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != REQUEST_ID_HEADER.encode()]
                headers.append((REQUEST_ID_HEADER.encode(), rid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            with tracing.activated(trace):
                limited = await self._limit_body(scope, receive, send_with_id)
                if limited is not None:
                    await self.app(scope, limited, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            status = status_holder["status"]
            if trace is not None:
                trace.end(status)
            metrics = self.state.metrics
            metrics.requests.labels(endpoint=endpoint, status=str(status)).inc()
            metrics.latency.labels(endpoint=endpoint).observe(elapsed)
            log.info("%s %s %d %.1f ms", scope.get("method"), path, status, elapsed * 1000)
            logs.request_id.reset(token)

    async def _limit_body(self, scope: Scope, receive: Receive, send: Send) -> Receive | None:
        """A ``receive`` that replays the body once it is known to fit; None once 413 was sent."""
        limit = self.state.settings.max_body_bytes
        headers = dict(scope.get("headers") or ())
        length = headers.get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                declared = -1
            if declared > limit:
                await _send_error(send, 413, "payload_too_large", f"request body larger than {limit} bytes")
                return None
        if scope.get("method") not in ("POST", "PUT", "PATCH"):
            return receive
        # Bodies are JSON whatever the client calls them (curl -d says form-urlencoded).
        scope["headers"] = [(k, v) for k, v in scope.get("headers") or () if k != b"content-type"]
        scope["headers"].append((b"content-type", b"application/json"))
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body = message.get("body", b"")
            size += len(body)
            if size > limit:
                await _send_error(send, 413, "payload_too_large", f"request body larger than {limit} bytes")
                return None
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        return replay


async def _send_error(send: Send, status: int, type_: str, message: str) -> None:
    body = json.dumps({"error": {"type": type_, "message": message}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
