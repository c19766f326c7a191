"""The FastAPI application: routes, errors as JSON, request ids, body limit, API keys.

Routes only check input, call :meth:`Reranker.prepare` (in a thread) and the batcher, and shape
the answer; all scoring is the library's. Every error is ``{"error": {"type", "message"}}`` with
a 4xx/5xx status; nothing a client sends can make the server show a stack trace.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import time
import uuid
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import InputError, RerankError
from ..reranker import Reranker
from . import logs
from .batcher import Batcher, QueueFull, WorkerError
from .metrics import Metrics
from .schemas import (
    ErrorResponse,
    Health,
    ModelCard,
    ModelList,
    RerankRequest,
    RerankRequestV1,
    RerankResponse,
    TeiRank,
    TeiRerankRequest,
)
from .settings import ServerSettings

log = logging.getLogger("qwen3_rerank.server")

REQUEST_ID_HEADER = "x-request-id"
_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_ENDPOINTS = {
    "/v1/rerank", "/v2/rerank", "/rerank", "/health", "/ready", "/metrics", "/v1/models", "/openapi.json", "/docs",
}
_ERROR_RESPONSES = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "malformed JSON or body",
        401: "missing or wrong API key",
        413: "body larger than the limit",
        422: "invalid request: wrong types, unknown fields, too many documents, a too-long text with truncation off",
        429: "too many requests in progress; retry after the Retry-After header's seconds",
        503: "the model is not ready or the server is stopping",
        504: "the request took longer than the request timeout",
    }.items()
}


class ApiError(Exception):
    def __init__(self, status: int, type_: str, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.type, self.message, self.headers = status, type_, message, headers or {}


def error_json(status: int, type_: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"type": type_, "message": message}}, status_code=status, headers=headers)


class State:
    """What the routes share: settings, model, batcher, metrics, readiness."""

    def __init__(self, settings: ServerSettings, reranker: Reranker) -> None:
        self.settings = settings
        self.reranker = reranker
        self.metrics = Metrics()
        self.batcher = Batcher(
            reranker,
            self.metrics,
            max_batch_tokens=settings.max_batch_tokens,
            max_wait=settings.max_batch_wait,
            max_queued=settings.max_queued_requests,
            step_delay=settings.step_delay,
        )
        self.ready = False
        self.draining = False
        self.started = int(time.time())

    async def score(
        self,
        query: str,
        texts: list[str],
        *,
        instruction: str | None,
        raw: bool,
        truncate: bool,
        max_doc_tokens: int,
        cut_start: bool = False,
        chunking: dict | None = None,
    ):
        """(prepared request, scored documents) of one request, through the batcher, within the timeout."""
        if not self.ready or self.draining:
            raise ApiError(503, "unavailable", "the model is not ready", {"Retry-After": "1"})
        if len(texts) > self.settings.max_documents:
            raise ApiError(
                422,
                "invalid_request",
                f"too many documents: {len(texts)} (limit {self.settings.max_documents})",
            )
        try:
            self.batcher.acquire()
        except QueueFull as exc:
            raise ApiError(429, "overloaded", str(exc), {"Retry-After": "1"}) from None
        try:
            return await asyncio.wait_for(
                self._score(query, texts, instruction, raw, truncate, max_doc_tokens, cut_start, chunking),
                self.settings.request_timeout,
            )
        except asyncio.TimeoutError:
            raise ApiError(
                504, "timeout", f"request took longer than {self.settings.request_timeout:g} s"
            ) from None
        except InputError as exc:
            raise ApiError(422, "invalid_request", str(exc)) from None
        except WorkerError as exc:
            raise ApiError(500, "internal_error", str(exc)) from None
        except RerankError as exc:
            raise ApiError(500, "internal_error", str(exc)) from None

    async def _score(self, query, texts, instruction, raw, truncate, max_doc_tokens, cut_start, chunking):
        handed = False
        try:
            prepared = await asyncio.to_thread(
                self._prepare, query, texts, instruction, truncate, max_doc_tokens, cut_start, chunking
            )
            handed = True  # from here the batcher owns the admission
            scores = await self.batcher.score(prepared, raw=raw)
            return prepared, scores
        finally:
            if not handed:
                self.batcher.release()

    def _prepare(self, query, texts, instruction, truncate, max_doc_tokens, cut_start, chunking=None):
        tokenizer = self.reranker.tokenizer
        if chunking:  # windows instead of cutting: every token of every document is read
            return self.reranker.prepare(query, texts, instruction=instruction, truncate=truncate, **chunking)
        if not truncate:
            for i, text in enumerate(texts):
                if tokenizer.cut_text(text, max_doc_tokens) != text:
                    raise InputError(
                        f"document {i} is longer than {max_doc_tokens} tokens and truncation is off"
                    )
            return self.reranker.prepare(query, texts, instruction=instruction, truncate=False)
        if cut_start:
            texts = [tokenizer.cut_text_start(text, max_doc_tokens) for text in texts]
            return self.reranker.prepare(query, texts, instruction=instruction, truncate=True)
        return self.reranker.prepare(query, texts, instruction=instruction, truncate=True, max_doc_tokens=max_doc_tokens)

    async def warm_up(self) -> None:
        """One request through the whole path, so the first client does not pay for it."""
        prepared = await asyncio.to_thread(self.reranker.prepare, "warm-up query", ["warm-up document"])
        self.batcher.acquire()
        await self.batcher.score(prepared)


def _ranked(scores: list[float], top_n: int | None) -> list[int]:
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    return order if top_n is None else order[:top_n]


def create_app(settings: ServerSettings, reranker: Reranker) -> FastAPI:
    """The server's ASGI app for a loaded model; starting it (lifespan) warms the model up."""
    state = State(settings, reranker)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.batcher.start()
        started = time.perf_counter()
        await state.warm_up()
        state.ready = True
        log.info("model warmed up in %.2f s; ready", time.perf_counter() - started)
        yield
        state.ready = False
        await state.batcher.stop()

    app = FastAPI(
        title="qwen3-rerank",
        version=__version__,
        description="Qwen3-Reranker on ONNX Runtime, with the Cohere / Jina (`/v1/rerank`, `/v2/rerank`) "
        "and text-embeddings-inference (`/rerank`) rerank APIs.",
        lifespan=lifespan,
    )
    app.state.server = state

    async def check_api_key(request: Request) -> None:
        if not settings.api_keys:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip().encode("utf-8", "surrogateescape")
        valid = False
        for key in settings.api_keys:  # compare with every key, in constant time
            valid |= hmac.compare_digest(token, key.encode("utf-8"))
        if scheme.lower() != "bearer" or not valid:
            raise ApiError(401, "unauthorized", "missing or invalid API key", {"WWW-Authenticate": "Bearer"})

    authorized = [Depends(check_api_key)]

    # -- errors ----------------------------------------------------------------------------------

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return error_json(exc.status, exc.type, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_json(400, "invalid_json", "request body is not valid JSON")
        parts = []
        for e in errors[:5]:
            loc = [str(p) for p in e.get("loc", ()) if p != "body" and not str(p).startswith("function-")]
            where = ".".join(loc) or "body"
            parts.append(f"{where}: {e.get('msg', 'invalid')}")
        if len(errors) > 5:
            parts.append(f"and {len(errors) - 5} more")
        return error_json(422, "invalid_request", "; ".join(parts))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        kinds = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed"}
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 400:
            message = "request body could not be read as JSON text (is it valid UTF-8?)"
        return error_json(exc.status_code, kinds.get(exc.status_code, "http_error"), message, exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.error("unexpected error: %s", type(exc).__name__, exc_info=exc)
        return error_json(500, "internal_error", "internal server error")

    # -- rerank ----------------------------------------------------------------------------------

    async def cohere_rerank(body: RerankRequest, request: Request) -> dict:
        texts = body.texts()
        if body.top_n is not None and body.top_n > settings.max_documents:
            raise ApiError(
                422, "invalid_request", f"top_n={body.top_n} is more than the document limit ({settings.max_documents})"
            )
        limit = settings.max_tokens_per_doc
        if body.max_tokens_per_doc is not None:
            limit = min(limit, body.max_tokens_per_doc)
        chunking = None
        if body.chunking is not None:
            chunking = {"chunking": body.chunking, "chunk_tokens": body.chunk_tokens, "chunk_overlap": body.chunk_overlap}
        prepared, scored = await state.score(
            body.query,
            texts,
            instruction=body.instruction,
            raw=False,
            truncate=True,
            max_doc_tokens=limit,
            chunking=chunking,
        )
        scores = [d.score for d in scored]
        results = []
        for i in _ranked(scores, body.top_n):
            item = {"index": i, "relevance_score": scores[i]}
            if body.return_documents:
                item["document"] = {"text": texts[i]}
            if scored[i].best_chunk is not None:
                item["best_chunk"] = scored[i].best_chunk.to_dict()
            results.append(item)
        tokens = prepared.num_tokens
        warnings = []
        if any(prepared.truncated):
            warnings.append(f"{sum(prepared.truncated)} document(s) cut to fit max_length={reranker.max_length}")
        return {
            "id": request.state.request_id,
            "model": settings.model_name,
            "results": results,
            "usage": {"total_tokens": tokens},
            "meta": {
                "api_version": {"version": "2"},
                "billed_units": {"search_units": 1},
                "tokens": {"input_tokens": tokens, "output_tokens": 0},
                "warnings": warnings,
            },
        }

    @app.post(
        "/v1/rerank",
        response_model=RerankResponse,
        response_model_exclude_none=True,
        responses=_ERROR_RESPONSES,
        dependencies=authorized,
        tags=["rerank"],
        summary="Rerank (Cohere / Jina shape; documents returned by default)",
    )
    async def rerank_v1(body: RerankRequestV1, request: Request):
        return await cohere_rerank(body, request)

    @app.post(
        "/v2/rerank",
        response_model=RerankResponse,
        response_model_exclude_none=True,
        responses=_ERROR_RESPONSES,
        dependencies=authorized,
        tags=["rerank"],
        summary="Rerank (Cohere v2 shape)",
    )
    async def rerank_v2(body: RerankRequest, request: Request):
        return await cohere_rerank(body, request)

    @app.post(
        "/rerank",
        response_model=list[TeiRank],
        response_model_exclude_none=True,
        responses=_ERROR_RESPONSES,
        dependencies=authorized,
        tags=["rerank"],
        summary="Rerank (text-embeddings-inference shape)",
    )
    async def rerank_tei(body: TeiRerankRequest):
        truncate = True if body.truncate is None else body.truncate
        _, scored = await state.score(
            body.query,
            list(body.texts),
            instruction=body.instruction,
            raw=body.raw_scores,
            truncate=truncate,
            max_doc_tokens=settings.max_tokens_per_doc,
            cut_start=body.truncation_direction.lower() == "left",
        )
        scores = [d.score for d in scored]
        out = []
        for i in _ranked(scores, None):
            item = {"index": i, "score": scores[i]}
            if body.return_text:
                item["text"] = body.texts[i]
            out.append(item)
        return out

    # -- service ---------------------------------------------------------------------------------

    @app.get("/health", response_model=Health, tags=["service"], summary="The process is up")
    async def health():
        return {"status": "ok"}

    @app.get(
        "/ready",
        response_model=Health,
        responses={503: {"model": ErrorResponse, "description": "not ready (loading or stopping)"}},
        tags=["service"],
        summary="The model is loaded and warmed up, and the server is not stopping",
    )
    async def ready():
        if state.ready and not state.draining:
            return {"status": "ready"}
        return error_json(503, "unavailable", "stopping" if state.draining else "the model is not ready")

    @app.get("/metrics", tags=["service"], summary="Prometheus metrics", response_class=Response)
    async def metrics():
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models", response_model=ModelList, dependencies=authorized, tags=["service"], responses={
        401: _ERROR_RESPONSES[401]
    })
    async def models():
        return {"object": "list", "data": [ModelCard(id=settings.model_name, created=state.started)]}

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


class RequestContextMiddleware:
    """Pure ASGI: request id (header in, header out, in every log line), body-size limit (413),
    one access-log line and the request metrics for every HTTP request."""

    def __init__(self, app, state: State) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope, receive, send):
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

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != REQUEST_ID_HEADER.encode()]
                headers.append((REQUEST_ID_HEADER.encode(), rid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            limited = await self._limit_body(scope, receive, send_with_id)
            if limited is not None:
                await self.app(scope, limited, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            status = status_holder["status"]
            metrics = self.state.metrics
            metrics.requests.labels(endpoint=endpoint, status=str(status)).inc()
            metrics.latency.labels(endpoint=endpoint).observe(elapsed)
            log.info("%s %s %d %.1f ms", scope.get("method"), path, status, elapsed * 1000)
            logs.request_id.reset(token)

    async def _limit_body(self, scope, receive, send):
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

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        return replay


async def _send_error(send, status: int, type_: str, message: str) -> None:
    body = json.dumps({"error": {"type": type_, "message": message}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                        (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": body})
