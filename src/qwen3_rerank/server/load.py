"""Bounded load test of ``qwen3-rerank serve`` on the loopback interface.

    python -m qwen3_rerank.server.load --model DIR --dtype fp32 --out docs/benchmarks/server-load/tiny.json

Starts the server as a child process on 127.0.0.1 (a free port), sends a fixed number of
``/v2/rerank`` requests at each concurrency (default 1, 8, 32), each level also stopped by a time
limit, and reports throughput, p50/p99 latency and error counts. Then, in a separate process, it
measures the library's offline throughput on the very same documents (all requests prepared and
scored together with :meth:`Reranker.score_requests`, and one :meth:`Reranker.score` call per
request), with the same thread count, and writes everything as JSON.
Nothing leaves the machine: the only address used is 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias, TypedDict

if TYPE_CHECKING:
    import httpx

_WORDS = (
    "cat dog food water river mountain city house car road tree garden music book paper science history "
    "energy market price health doctor school student teacher computer network data model language study "
    "result method system power light sound color ocean forest weather season travel train plane ship"
).split()

#: A JSON object of this report (values of mixed types: numbers, strings, nested objects, None).
JSONObject: TypeAlias = "dict[str, Any]"


class RerankBody(TypedDict):
    """One ``/v2/rerank`` request body."""

    query: str
    documents: list[str]


def workload(requests: int, docs_per_request: int, doc_words: int, seed: int = 0) -> list[RerankBody]:
    """The same synthetic (query, documents) requests for a given seed, every time.

    Args:
        requests: how many request bodies.
        docs_per_request: documents in each.
        doc_words: words in each document (the query has 6).
        seed: the random seed; the same seed gives the same bodies.

    Returns:
        The request bodies.
    """
    rng = random.Random(seed)
    out: list[RerankBody] = []
    for _ in range(requests):
        query = " ".join(rng.choices(_WORDS, k=6))
        docs = [" ".join(rng.choices(_WORDS, k=doc_words)) for _ in range(docs_per_request)]
        out.append({"query": query, "documents": docs})
    return out


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, int(round(q / 100 * (len(ordered) - 1)))))
    return ordered[k]


async def _level(url: str, bodies: list[RerankBody], concurrency: int, time_limit: float) -> JSONObject:
    import httpx

    latencies: list[float] = []
    statuses: dict[str, int] = {}
    docs_done = 0
    next_index = 0
    deadline = time.perf_counter() + time_limit

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal next_index, docs_done
        while next_index < len(bodies) and time.perf_counter() < deadline:
            body = bodies[next_index]
            next_index += 1
            started = time.perf_counter()
            try:
                response = await client.post("/v2/rerank", json=body)
                key = str(response.status_code)
            except httpx.HTTPError as exc:
                key = type(exc).__name__
            elapsed = time.perf_counter() - started
            statuses[key] = statuses.get(key, 0) + 1
            if key == "200":
                latencies.append(elapsed)
                docs_done += len(body["documents"])

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=max(60.0, time_limit), limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - started
    ok = statuses.get("200", 0)
    p50 = _percentile(latencies, 50)
    p99 = _percentile(latencies, 99)
    return {
        "concurrency": concurrency,
        "requests_sent": sum(statuses.values()),
        "requests_ok": ok,
        "errors": {k: v for k, v in statuses.items() if k != "200"},
        "error_count": sum(v for k, v in statuses.items() if k != "200"),
        "wall_s": round(wall, 3),
        "requests_per_s": round(ok / wall, 3) if wall else None,
        "docs_per_s": round(docs_done / wall, 3) if wall else None,
        "latency_p50_ms": round(1000 * p50, 1) if p50 is not None else None,  # None exactly when no latencies
        "latency_p99_ms": round(1000 * p99, 1) if p99 is not None else None,
        "latency_mean_ms": round(1000 * statistics.fmean(latencies), 1) if latencies else None,
    }


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def run_server_levels(args: argparse.Namespace, bodies: list[RerankBody]) -> tuple[list[JSONObject], JSONObject]:
    """Starts ``qwen3-rerank serve`` on a free loopback port and sends ``bodies`` at each concurrency.

    Args:
        args: the parsed command line (model, dtype, threads, batching settings, concurrency levels,
            time limit).
        bodies: the request bodies, sent in order at each level.

    Returns:
        One result per concurrency level, and the server's model-call and document counters.

    Raises:
        SystemExit: the server exits or is not ready within 300 s.
    """
    import httpx

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable,
        "-m",
        "qwen3_rerank",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--model",
        args.model,
        "--dtype",
        args.dtype,
        "--threads",
        str(args.threads),
        "--max-batch-tokens",
        str(args.max_batch_tokens),
        "--max-batch-wait-ms",
        str(args.max_batch_wait_ms),
        "--batch-size",
        str(args.batch_size),
        "--log-level",
        "warning",
        "--max-queued-requests",
        "1024",
        "--request-timeout",
        str(max(60.0, args.time_limit * 2)),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("QWEN3_RERANK_")}
    log = tempfile.TemporaryFile()
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 300
        while True:
            if server.poll() is not None:
                log.seek(0)
                raise SystemExit(f"server exited with {server.returncode}:\n{log.read().decode(errors='replace')}")
            try:
                if httpx.get(url + "/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("server not ready after 300 s")
            time.sleep(0.2)
        levels: list[JSONObject] = []
        for concurrency in args.concurrency:
            result = asyncio.run(_level(url, bodies, concurrency, args.time_limit))
            calls = _metric(url, "qwen3_rerank_model_calls_total")
            result["model_calls_total_after"] = calls
            levels.append(result)
            print(json.dumps(result), file=sys.stderr)
        metrics = {
            "model_calls_total": _metric(url, "qwen3_rerank_model_calls_total"),
            "documents_total": _metric(url, "qwen3_rerank_documents_total"),
        }
        return levels, metrics
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def _metric(url: str, name: str) -> float | None:
    """A series' value summed over its labels (each served model's, say); None when it is absent."""
    import re

    import httpx

    text = httpx.get(url + "/metrics", timeout=10).text
    values = [float(v) for v in re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M)]
    return sum(values) if values else None


def offline(args: argparse.Namespace, bodies: list[RerankBody]) -> JSONObject:
    """The library alone, in this process, on the same documents (called in a child process).

    Args:
        args: the parsed command line (model, dtype, threads, batch settings).
        bodies: the request bodies the server got.

    Returns:
        Seconds and documents per second for all requests scored together and for one
        :meth:`Reranker.score` call per request, best of two rounds.
    """
    from qwen3_rerank import Reranker

    reranker = Reranker.from_pretrained(
        args.model,
        dtype=args.dtype,
        threads=args.threads,
        batch_size=args.batch_size,
        max_batch_tokens=args.max_batch_tokens,
    )
    reranker.score("warm-up query", ["warm-up document"])
    docs = sum(len(b["documents"]) for b in bodies)
    together = one_by_one = float("inf")
    for _ in range(2):  # best of two rounds: the first one also grows ONNX Runtime's memory arena
        started = time.perf_counter()
        requests = [reranker.prepare(b["query"], b["documents"], max_doc_tokens=4096) for b in bodies]
        reranker.score_requests(requests)
        together = min(together, time.perf_counter() - started)
        started = time.perf_counter()
        for b in bodies:
            reranker.score(b["query"], b["documents"])
        one_by_one = min(one_by_one, time.perf_counter() - started)
    return {
        "documents": docs,
        "score_requests_all_at_once_s": round(together, 3),
        "score_requests_docs_per_s": round(docs / together, 3),
        "score_per_request_s": round(one_by_one, 3),
        "score_per_request_docs_per_s": round(docs / one_by_one, 3),
        "tokens": sum(r.num_tokens for r in requests),
    }


def main(argv: list[str] | None = None) -> int:
    """Runs the load test and prints (and with ``--out`` writes) the JSON report.

    Args:
        argv: the command-line arguments; default ``sys.argv[1:]``.

    Returns:
        The exit status, 0.

    Raises:
        SystemExit: the server or the offline measurement failed.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--dtype", default="q8")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--requests", type=int, default=48, help="requests per concurrency level")
    parser.add_argument("--docs-per-request", type=int, default=8)
    parser.add_argument("--doc-words", type=int, default=40)
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32])
    parser.add_argument("--time-limit", type=float, default=60.0, help="seconds per concurrency level at most")
    parser.add_argument("--max-batch-tokens", type=int, default=4096)
    parser.add_argument("--max-batch-wait-ms", type=float, default=5.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", default=None, help="JSON file to write")
    parser.add_argument("--offline-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    bodies = workload(args.requests, args.docs_per_request, args.doc_words)

    if args.offline_only:
        print(json.dumps(offline(args, bodies)))
        return 0

    levels, metrics = run_server_levels(args, bodies)
    child = subprocess.run(
        [
            sys.executable,
            "-m",
            "qwen3_rerank.server.load",
            *(argv if argv is not None else sys.argv[1:]),
            "--offline-only",
        ],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if child.returncode != 0:
        raise SystemExit(f"offline measurement failed:\n{child.stderr[-3000:]}")
    library = json.loads(child.stdout.strip().splitlines()[-1])
    top = next((lvl for lvl in levels if lvl["concurrency"] == max(args.concurrency)), levels[-1])
    best_offline = max(library["score_requests_docs_per_s"], library["score_per_request_docs_per_s"])
    ratio = top["docs_per_s"] / best_offline if top["docs_per_s"] else None
    report = {
        "command": "python -m qwen3_rerank.server.load " + " ".join(argv if argv is not None else sys.argv[1:]),
        "model": args.model,
        "dtype": args.dtype,
        "threads": args.threads,
        "workload": {
            "requests_per_level": args.requests,
            "docs_per_request": args.docs_per_request,
            "doc_words": args.doc_words,
            "time_limit_s": args.time_limit,
        },
        "server_settings": {
            "max_batch_tokens": args.max_batch_tokens,
            "max_batch_wait_ms": args.max_batch_wait_ms,
            "batch_size": args.batch_size,
        },
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "server": levels,
        "server_metrics": metrics,
        "library_offline": library,
        # server docs/s at the highest concurrency over the better of the two offline figures
        "server_c_max_vs_library_offline": round(ratio, 3) if ratio else None,
    }
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
