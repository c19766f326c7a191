"""``qwen3-rerank serve``: load the model (or several), then run the HTTP server with uvicorn.

Every setting is a flag and an environment variable (``QWEN3_RERANK_<NAME>``); a flag wins.
SIGTERM (or Ctrl-C) stops accepting connections, lets the requests in flight finish and exits 0.
"""

from __future__ import annotations

import argparse
import logging
import math
from typing import Any

from ..files import DEFAULT_DTYPE, DEFAULT_MODEL, DTYPES
from ..prompt import DEFAULT_TEMPLATE, TEMPLATES
from ..reranker import DEFAULT_BATCH_SIZE, DEFAULT_MAX_BATCH_TOKENS, DEFAULT_MAX_LENGTH
from ..server.settings import OTLP_PROTOCOLS, ServerSettings, env, otlp_endpoint_problem, split_list
from .options import Parser, UsageError
from .served_models import ModelSpec, env_specs, load_models, model_specs

SERVER_EXTRA_HINT = "the server needs the 'server' extra: pip install 'qwen3-rerank[server]'"

# (flag, env name, type, default, help); the default applies when neither flag nor env is set.
# The type is ``str`` or the name of a check in :func:`_convert`.
_OPTIONS: list[tuple[str, str, type[str] | str, str | int | float | None, str]] = [
    (
        "--dtype",
        "DTYPE",
        str,
        DEFAULT_DTYPE,
        f"model variant of a --model without :DTYPE: {', '.join(DTYPES)} (default: {DEFAULT_DTYPE})",
    ),
    ("--device", "DEVICE", str, "cpu", "cpu, cuda or cuda:N (default: cpu)"),
    ("--threads", "THREADS", "pos_int", None, "intra-op threads (default: one per core)"),
    (
        "--max-length",
        "MAX_LENGTH",
        "pos_int",
        DEFAULT_MAX_LENGTH,
        f"most tokens per prompt (default: {DEFAULT_MAX_LENGTH})",
    ),
    (
        "--batch-size",
        "BATCH_SIZE",
        "pos_int",
        DEFAULT_BATCH_SIZE,
        f"most documents per model run (default: {DEFAULT_BATCH_SIZE})",
    ),
    (
        "--max-batch-tokens",
        "MAX_BATCH_TOKENS",
        "pos_int",
        DEFAULT_MAX_BATCH_TOKENS,
        f"token budget of one batch, gathered across requests (default: {DEFAULT_MAX_BATCH_TOKENS})",
    ),
    (
        "--max-batch-wait-ms",
        "MAX_BATCH_WAIT_MS",
        "nonneg_float",
        5.0,
        "how long the batcher waits for more requests once it has one (default: 5)",
    ),
    ("--host", "HOST", str, "127.0.0.1", "address to bind (default: 127.0.0.1, this machine only)"),
    ("--port", "PORT", "port", 8000, "port to listen on (default: 8000)"),
    ("--served-model-name", "SERVED_MODEL_NAME", str, None, "model name the API reports (default: from --model)"),
    ("--max-documents", "MAX_DOCUMENTS", "pos_int", 1000, "most documents per request (default: 1000)"),
    (
        "--max-body-bytes",
        "MAX_BODY_BYTES",
        "pos_int",
        8 * 1024 * 1024,
        "largest request body, larger: 413 (default: 8388608)",
    ),
    (
        "--max-queued-requests",
        "MAX_QUEUED_REQUESTS",
        "pos_int",
        256,
        "most requests in progress at once, more: 429 with Retry-After (default: 256)",
    ),
    ("--request-timeout", "REQUEST_TIMEOUT", "pos_float", 60.0, "seconds per request, longer: 504 (default: 60)"),
    (
        "--max-tokens-per-doc",
        "MAX_TOKENS_PER_DOC",
        "pos_int",
        4096,
        "tokens a document keeps; longer ones are cut, or refused with 422 when the client turns truncation off "
        "(default: 4096)",
    ),
    (
        "--limit-concurrency",
        "LIMIT_CONCURRENCY",
        "pos_int",
        1024,
        "most open connections plus requests in progress, more: 503 and the connection closed; the open-file "
        "limit is raised to fit (default: 1024)",
    ),
    (
        "--timeout-keep-alive",
        "TIMEOUT_KEEP_ALIVE",
        "pos_int",
        5,
        "seconds an idle connection is kept open, before its first request too (default: 5)",
    ),
    (
        "--max-header-bytes",
        "MAX_HEADER_BYTES",
        "pos_int",
        16 * 1024,
        "largest request line plus headers, larger: 400 (default: 16384)",
    ),
    (
        "--template",
        "TEMPLATE",
        str,
        DEFAULT_TEMPLATE,
        "prompt template: 'official' (the reference recipe's) or 'card' (the ONNX model card's prompt) "
        f"(default: {DEFAULT_TEMPLATE})",
    ),
    ("--log-level", "LOG_LEVEL", str, "info", "debug, info, warning or error (default: info)"),
    (
        "--otlp-endpoint",
        "OTLP_ENDPOINT",
        str,
        None,
        "send OpenTelemetry traces of the requests to this OTLP collector, e.g. http://localhost:4317 "
        "(needs the 'otel' extra; default: no tracing)",
    ),
    (
        "--otlp-protocol",
        "OTLP_PROTOCOL",
        str,
        "grpc",
        f"how traces reach the collector: {' or '.join(OTLP_PROTOCOLS)} (default: grpc)",
    ),
    (
        "--otlp-service-name",
        "OTLP_SERVICE_NAME",
        str,
        "qwen3-rerank",
        "the service.name of the traces (default: qwen3-rerank)",
    ),
]


def _convert(kind: type[str] | str, text: str, what: str) -> str | int | float:
    if not isinstance(kind, str):  # the type str itself: the text as it is
        return text
    try:
        value = float(text) if kind.endswith("float") else int(text)
    except ValueError:
        raise UsageError(f"{what}: expected a number, got {text!r}") from None
    if kind == "pos_int" and value < 1:
        raise UsageError(f"{what}: expected a positive integer, got {text!r}")
    if kind == "port" and not 0 <= value <= 65535:
        raise UsageError(f"{what}: expected a port number 0-65535, got {text!r}")
    if kind == "pos_float" and not (value > 0 and math.isfinite(value)):
        raise UsageError(f"{what}: expected a positive number, got {text!r}")
    if kind == "nonneg_float" and not (value >= 0 and math.isfinite(value)):
        raise UsageError(f"{what}: expected a number >= 0, got {text!r}")
    return value


def register(commands: argparse._SubParsersAction[Parser]) -> None:
    """Add the ``serve`` command to the CLI's subparsers."""
    serve = commands.add_parser(
        "serve",
        help="run the HTTP rerank server (Cohere, Jina and TEI APIs)",
        description="Run the rerank server. Every option can also be set with the environment variable "
        "QWEN3_RERANK_<OPTION> (e.g. QWEN3_RERANK_MAX_DOCUMENTS); a flag wins over its variable.",
    )
    serve.add_argument(
        "--model",
        action="append",
        default=None,
        metavar="[NAME=]MODEL[:DTYPE]",
        help=f"local folder or Hub repo id (default: {DEFAULT_MODEL}); repeat to serve several, each named "
        "NAME= (requests pick one with 'model'; the first is the default) and with its own :DTYPE if given "
        "[env QWEN3_RERANK_MODEL, comma-separated]",
    )
    for flag, name, _kind, _default, text in _OPTIONS:
        serve.add_argument(flag, default=None, metavar=name, help=f"{text} [env QWEN3_RERANK_{name}]")
    serve.add_argument(
        "--api-key",
        action="append",
        default=None,
        metavar="KEY",
        help="require 'Authorization: Bearer KEY' on the API (repeat for several keys) "
        "[env QWEN3_RERANK_API_KEY, comma-separated; prefer it: flags show in the process list]",
    )
    serve.add_argument(
        "--cors-origin",
        action="append",
        default=None,
        metavar="ORIGIN",
        help="allow browser calls from this origin (repeat; '*' for any); default: CORS off "
        "[env QWEN3_RERANK_CORS_ORIGINS, comma-separated]",
    )
    serve.add_argument(
        "--no-ui",
        action="store_true",
        help="do not serve the browser page at / (then / is a 404) [env QWEN3_RERANK_NO_UI=1]",
    )
    serve.set_defaults(handler=_cmd_serve)


def _env_switch(name: str, environ: dict[str, str] | None) -> bool:
    """A yes/no environment variable: 1, true, yes, on or 0, false, no, off (any case); unset: no.

    Raises:
        UsageError: any other value.
    """
    value = env(name, environ)
    if value is None:
        return False
    if value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if value.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise UsageError(f"QWEN3_RERANK_{name}: expected 1, true, yes, on, 0, false, no or off, got {value!r}")


def resolve(args: argparse.Namespace, environ: dict[str, str] | None = None) -> tuple[ServerSettings, list[ModelSpec]]:
    """Server settings and the models to serve from flags, then environment variables, then defaults.

    Args:
        args: the parsed ``serve`` command line.
        environ: the environment to read ``QWEN3_RERANK_*`` from (default: ``os.environ``).

    Returns:
        The server's settings (``model_name``: the default model's name), and the models to load,
        the default first (see :mod:`.served_models`).

    Raises:
        UsageError: a value that is not a number where one is needed, out of range, or not one of
            the choices (dtype, template, log level, OTLP protocol), an empty API key, an OTLP
            endpoint that is not an http(s) URL, a ``QWEN3_RERANK_NO_UI`` that is not a yes or a no,
            or a bad ``--model`` spec or name (see :func:`.served_models.model_specs`).
    """
    # One value per row of _OPTIONS, of the type that row gives: checked there, not here.
    values: dict[str, Any] = {}
    for flag, name, kind, default, _text in _OPTIONS:
        dest = flag[2:].replace("-", "_")
        given = getattr(args, dest, None)
        if given is None:
            given = env(name, environ)
            what = f"QWEN3_RERANK_{name}"
        else:
            what = flag
        values[dest] = default if given is None else _convert(kind, given, what)
    api_keys = tuple(args.api_key) if args.api_key else split_list(env("API_KEY", environ))
    if any(not key.strip() for key in api_keys):
        raise UsageError("--api-key: an API key must not be empty")
    cors = tuple(args.cors_origin) if args.cors_origin else split_list(env("CORS_ORIGINS", environ))
    no_ui = bool(args.no_ui) or _env_switch("NO_UI", environ)
    model_env = env("MODEL", environ)
    # An empty --model means no --model (as before several models could be served).
    flags = [spec for spec in args.model or () if spec]
    models = flags or (env_specs(model_env) if model_env is not None else None) or [DEFAULT_MODEL]
    if values["dtype"] not in DTYPES:
        raise UsageError(f"unknown dtype {values['dtype']!r}; choose one of: {', '.join(DTYPES)}")
    if values["template"] not in TEMPLATES:
        raise UsageError(f"unknown prompt template {values['template']!r}; choose one of: {', '.join(TEMPLATES)}")
    if values["log_level"].lower() not in ("debug", "info", "warning", "error", "critical"):
        raise UsageError(f"unknown log level {values['log_level']!r}")
    if values["otlp_protocol"] not in OTLP_PROTOCOLS:
        raise UsageError(
            f"unknown OTLP protocol {values['otlp_protocol']!r}; choose one of: {', '.join(OTLP_PROTOCOLS)}"
        )
    if values["otlp_endpoint"] is not None and (problem := otlp_endpoint_problem(values["otlp_endpoint"])):
        raise UsageError(f"--otlp-endpoint: {problem}")
    specs = model_specs(
        models,
        dtype=values["dtype"],
        served_model_name=values["served_model_name"],
        options={
            "device": values["device"],
            "threads": values["threads"],
            "max_length": values["max_length"],
            "batch_size": values["batch_size"],
            "max_batch_tokens": values["max_batch_tokens"],
            "template": values["template"],
        },
    )
    settings = ServerSettings(
        model_name=specs[0].name,
        host=values["host"],
        port=values["port"],
        api_keys=api_keys,
        cors_origins=cors,
        max_documents=values["max_documents"],
        max_body_bytes=values["max_body_bytes"],
        max_queued_requests=values["max_queued_requests"],
        request_timeout=values["request_timeout"],
        max_tokens_per_doc=values["max_tokens_per_doc"],
        max_batch_tokens=values["max_batch_tokens"],
        max_batch_wait=values["max_batch_wait_ms"] / 1000.0,
        limit_concurrency=values["limit_concurrency"],
        timeout_keep_alive=values["timeout_keep_alive"],
        max_header_bytes=values["max_header_bytes"],
        log_level=values["log_level"].lower(),
        ui=not no_ui,
        otlp_endpoint=values["otlp_endpoint"],
        otlp_protocol=values["otlp_protocol"],
        otlp_service_name=values["otlp_service_name"],
    )
    return settings, specs


def _cmd_serve(args: argparse.Namespace) -> int:
    settings, specs = resolve(args)
    try:
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise UsageError(SERVER_EXTRA_HINT) from None
    if settings.otlp_endpoint is not None:  # the otel extra: checked before the model loads (minutes)
        from ..server.tracing import check_available

        check_available(settings.otlp_protocol)

    from ..server import logs
    from ..server.run import serve

    logs.configure(settings.log_level)
    log = logging.getLogger("qwen3_rerank.server")
    models = load_models(specs)
    log.info("settings: %s", settings.public())
    if settings.host not in ("127.0.0.1", "localhost", "::1") and not settings.api_keys:
        log.warning("listening on %s without an API key: anyone who can reach it can use it", settings.host)

    return serve(settings, models)
