"""Server settings: every limit is a command-line flag and an environment variable.

A flag wins over its environment variable, which wins over the default. Environment variables
are named ``QWEN3_RERANK_<FLAG>`` (``--max-documents`` → ``QWEN3_RERANK_MAX_DOCUMENTS``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from urllib.parse import urlsplit

ENV_PREFIX = "QWEN3_RERANK_"
#: the OTLP transports the ``otel`` extra brings (names as in ``OTEL_EXPORTER_OTLP_PROTOCOL``)
OTLP_PROTOCOLS = ("grpc", "http/protobuf")


@dataclass(frozen=True)
class ServerSettings:
    """What the HTTP layer and the batcher need to know (the model is loaded separately).

    Raises:
        ValueError: a count or size is below 1, ``request_timeout`` is not positive,
            ``max_batch_wait`` is negative, ``otlp_protocol`` is not one of :data:`OTLP_PROTOCOLS`,
            or ``otlp_endpoint`` is not an http(s) URL.
    """

    #: name the API reports as ``model`` (default: the model folder's name or the Hub id); a server
    #: of several models takes their names from the mapping it is given, the first as the default
    model_name: str = "qwen3-reranker"
    host: str = "127.0.0.1"
    port: int = 8000
    #: bearer tokens that may call the API; empty: no authentication
    api_keys: tuple[str, ...] = ()
    #: origins allowed by CORS; empty: no CORS headers at all
    cors_origins: tuple[str, ...] = ()
    max_documents: int = 1000
    max_body_bytes: int = 8 * 1024 * 1024
    #: requests admitted and not answered yet (waiting for or in the model); more get 429
    max_queued_requests: int = 256
    #: seconds from arrival to answer; later: 504
    request_timeout: float = 60.0
    #: tokens a document may keep before it is cut (or refused with 422 when truncation is off)
    max_tokens_per_doc: int = 4096
    #: tokens the micro-batcher gathers from concurrent requests for one step of the model
    max_batch_tokens: int = 4096
    #: how long the micro-batcher waits for more requests once it has one, in seconds
    max_batch_wait: float = 0.005
    #: open connections plus requests in progress; beyond it uvicorn answers 503 and closes the
    #: connection. The process's open-file limit is raised to fit it (see :mod:`.run`).
    limit_concurrency: int = 1024
    #: seconds an idle connection stays open, after an answer and, here, before its first request
    timeout_keep_alive: int = 5
    #: largest request line plus headers (h11's max incomplete event size); larger: 400
    max_header_bytes: int = 16 * 1024
    log_level: str = "info"
    #: serve the browser page at ``GET /`` (``--no-ui``: off, and ``/`` is a 404)
    ui: bool = True
    #: OTLP collector to send traces to (e.g. ``http://localhost:4317``); None: tracing off
    otlp_endpoint: str | None = None
    #: how traces travel to it: "grpc" (TEI's choice, port 4317) or "http/protobuf" (port 4318)
    otlp_protocol: str = "grpc"
    #: the ``service.name`` the traces carry
    otlp_service_name: str = "qwen3-rerank"

    def __post_init__(self) -> None:
        for name in (
            "max_documents",
            "max_body_bytes",
            "max_queued_requests",
            "max_tokens_per_doc",
            "max_batch_tokens",
            "limit_concurrency",
            "timeout_keep_alive",
            "max_header_bytes",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.request_timeout <= 0:
            raise ValueError("request_timeout must be positive")
        if self.max_batch_wait < 0:
            raise ValueError("max_batch_wait must not be negative")
        if self.otlp_protocol not in OTLP_PROTOCOLS:
            raise ValueError(f"otlp_protocol must be one of: {', '.join(OTLP_PROTOCOLS)}")
        if self.otlp_endpoint is not None and (problem := otlp_endpoint_problem(self.otlp_endpoint)):
            raise ValueError(f"otlp_endpoint: {problem}")

    def public(self) -> dict[str, object]:
        """The settings without secrets (for the start-up log line).

        Returns:
            Field name → value, with ``api_keys`` replaced by how many there are.
        """
        data: dict[str, object] = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "api_keys"}
        data["api_keys"] = len(self.api_keys)
        return data


def otlp_endpoint_problem(url: str) -> str | None:
    """What is wrong with ``url`` as an OTLP collector's address, or None.

    A URL with a scheme, for both protocols: ``http://`` is plain text (for gRPC too) and
    ``https://`` TLS, so the transport's security is never guessed from a bare ``host:port``.
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a port out of range)
    except ValueError as exc:
        return f"{url!r} is not a URL ({exc})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"expected an http:// or https:// URL such as http://localhost:4317, got {url!r}"
    return None


def env(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The value of ``QWEN3_RERANK_<NAME>``, or None when unset or empty.

    Args:
        name: the variable's name without the prefix, e.g. ``MAX_DOCUMENTS``.
        environ: the environment to read; default ``os.environ``.

    Returns:
        The value, or None when it is unset or empty.
    """
    source: Mapping[str, str] = os.environ if environ is None else environ
    value = source.get(ENV_PREFIX + name)
    return value if value not in (None, "") else None


def split_list(text: str | None) -> tuple[str, ...]:
    """``a, b,c`` → ``("a", "b", "c")``; None or blank → ``()``.

    Args:
        text: a comma-separated list, or None.

    Returns:
        The stripped, non-empty items.
    """
    if not text:
        return ()
    return tuple(part.strip() for part in text.split(",") if part.strip())
