"""Errors as the API shows them: ``{"error": {"type", "message"}}`` with a 4xx/5xx status.

The unit that understands a failure (admission, infer, a route) raises :class:`ApiError` with
its status and type name; the handlers here only render it. Anything else becomes a generic 500,
logged with its traceback, so nothing a client sends can make the server show a stack trace.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .schemas import RERANK_DIALECT_TAGS, ErrorResponse

log = logging.getLogger("qwen3_rerank.server")

#: The error statuses of the rerank routes, for the OpenAPI schema.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "malformed JSON or body",
        401: "missing or wrong API key",
        404: "the request names a model this server does not serve (only when it serves several)",
        413: "body larger than the limit",
        422: "invalid request: wrong types, missing fields, too many documents, a too-long text with truncation off",
        429: "too many requests in progress; retry after the Retry-After header's seconds",
        503: "the model is not ready, the server is stopping, or its model files were overwritten in place",
        504: "the request took longer than the request timeout",
    }.items()
}


class ApiError(Exception):
    """A failure with the status, type name and message the client gets (and optional headers)."""

    def __init__(self, status: int, type_: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.headers = headers or {}


def error_json(status: int, type_: str, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The one error body every status uses."""
    return JSONResponse({"error": {"type": type_, "message": message}}, status_code=status, headers=headers)


async def api_error(request: Request, exc: ApiError) -> JSONResponse:
    return error_json(exc.status, exc.type, exc.message, exc.headers)


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """Pydantic's errors as one readable line (at most five of them); bad JSON is a 400."""
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_json(400, "invalid_json", "request body is not valid JSON")
    parts = []
    for e in errors[:5]:
        # Left out: "body", and the names pydantic gives a union's members ("list[...]", a tag).
        loc = [
            str(p)
            for p in e.get("loc", ())
            if p != "body" and not str(p).startswith("function-") and "[" not in str(p) and p not in RERANK_DIALECT_TAGS
        ]
        where = ".".join(loc) or "body"
        parts.append(f"{where}: {e.get('msg', 'invalid')}")
    if len(errors) > 5:
        parts.append(f"and {len(errors) - 5} more")
    return error_json(422, "invalid_request", "; ".join(parts))


async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Starlette's own errors (404, 405, an unreadable body) in the same shape."""
    kinds = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed"}
    message = exc.detail if isinstance(exc.detail, str) else "request failed"
    if exc.status_code == 400:
        message = "request body could not be read as JSON text (is it valid UTF-8?)"
    return error_json(exc.status_code, kinds.get(exc.status_code, "http_error"), message, exc.headers)


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("unexpected error: %s", type(exc).__name__, exc_info=exc)
    return error_json(500, "internal_error", "internal server error")


def install_error_handlers(app: FastAPI) -> None:
    # Starlette types a handler's exception as plain Exception; each of these takes its own kind.
    app.add_exception_handler(ApiError, api_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, unexpected_error)
