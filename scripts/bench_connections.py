"""Many idle and slow connections against ``qwen3-rerank serve`` (issue 11, item 5); loopback only.

    python scripts/bench_connections.py --model DIR --out docs/benchmarks/connections/results.json

Part 1, one server with ``--timeout-keep-alive 60`` (so that no idle connection is closed during
the measurement: the hardest case). A normal ``/v2/rerank`` request's latency is measured
unloaded, then again while, from another process, ``--idle`` keep-alive connections (each sent
one ``GET /health`` and then nothing) stay open and ``--slow`` clients send ``/rerank`` bodies one
byte per 100 ms, over and over. The server's open descriptors (``/proc/PID/fd``) are sampled
throughout. Part 2, a server with the default ``--timeout-keep-alive`` (5 s): ``--idle``
connections that never send a byte; the descriptors are sampled until the server has closed them.

Not part of the test suite (it takes about a minute); ``tests/test_server_connections.py`` covers
the settings themselves.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server_child import ServerChild  # noqa: E402

NORMAL = {
    "query": "what do cats eat",
    "documents": [
        "Cats are carnivores and eat mostly meat and fish.",
        "The stock market closed higher today after a long week.",
        "Kittens need milk and later wet food with protein.",
        "Paris is the capital of France and a large city.",
    ],
}
SLOW_BODY = b'{"query":"slow query","texts":["a slow client"]}'


def raise_fd_limit() -> int:
    """This process may need a socket per connection: raise the soft open-file limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] * 1000, 2)

    return {
        "p50_ms": pick(0.5),
        "p90_ms": pick(0.9),
        "p99_ms": pick(0.99),
        "mean_ms": round(statistics.mean(values) * 1000, 2),
    }


def measure(url: str, n: int) -> list[float]:
    """``n`` sequential normal requests on one keep-alive connection; each one's seconds."""
    import httpx

    out = []
    with httpx.Client(base_url=url, timeout=60) as client:
        for _ in range(n):
            began = time.perf_counter()
            response = client.post("/v2/rerank", json=NORMAL)
            out.append(time.perf_counter() - began)
            if response.status_code != 200:
                raise SystemExit(f"normal request failed: {response.status_code} {response.text}")
    return out


class FdSampler(threading.Thread):
    """Samples a server's open descriptors every ``every`` s until stopped."""

    def __init__(self, server: ServerChild, every: float) -> None:
        super().__init__(daemon=True)
        self.server, self.every = server, every
        self.samples: list[tuple[float, int]] = []
        self.halt = threading.Event()
        self.began = time.monotonic()

    def run(self) -> None:
        while not self.halt.is_set():
            self.samples.append((round(time.monotonic() - self.began, 2), self.server.open_fds()))
            self.halt.wait(self.every)

    def stop(self) -> list[tuple[float, int]]:
        self.halt.set()
        self.join()
        return self.samples


# -- the load, in its own process (its event loop must not slow the measuring client down) --------


async def _idle_connection(port: int, send_request: bool) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if send_request:
        writer.write(b"GET /health HTTP/1.1\r\nHost: bench\r\n\r\n")
        await writer.drain()
        status = await reader.readline()
        if b" 200 " not in status:
            raise RuntimeError(f"health check on an idle connection: {status!r}")
        while (await reader.readline()) not in (b"\r\n", b""):  # headers
            pass
        await reader.read(15)  # {"status":"ok"}
    return reader, writer


async def _slow_client(port: int, stop: asyncio.Event, statuses: dict[str, int]) -> None:
    while not stop.is_set():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = (
            b"POST /rerank HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(SLOW_BODY)
        )
        writer.write(head)
        for i in range(len(SLOW_BODY)):
            writer.write(SLOW_BODY[i : i + 1])
            await writer.drain()
            await asyncio.sleep(0.1)
        line = await asyncio.wait_for(reader.readline(), 60)
        key = line.split()[1].decode() if len(line.split()) > 1 else "closed"
        statuses[key] = statuses.get(key, 0) + 1
        writer.close()


def load_process(port: int, idle: int, slow: int, send_request: bool, ready: Any, stop: Any, report: Any) -> None:
    """Open ``idle`` connections and run ``slow`` slow clients until ``stop`` is set; report counts."""
    raise_fd_limit()

    async def main() -> None:
        connections = []
        for start in range(0, idle, 50):  # 50 at a time: no accept-backlog storm
            connections += await asyncio.gather(
                *(_idle_connection(port, send_request) for _ in range(start, min(idle, start + 50)))
            )
        statuses: dict[str, int] = {}
        halt = asyncio.Event()
        clients = [asyncio.ensure_future(_slow_client(port, halt, statuses)) for _ in range(slow)]
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.1)
        closed_by_server = sum(1 for reader, _w in connections if reader.at_eof() or reader.exception() is not None)
        halt.set()
        await asyncio.gather(*clients, return_exceptions=True)
        for _reader, writer in connections:
            writer.close()
        report.put({"idle_opened": len(connections), "idle_closed_by_server": closed_by_server, "slow": statuses})

    asyncio.run(main())


def start_load(port: int, idle: int, slow: int, send_request: bool) -> tuple[Any, Any, Any, Any]:
    context = multiprocessing.get_context("spawn")
    ready, stop, report = context.Event(), context.Event(), context.Queue()
    process = context.Process(target=load_process, args=(port, idle, slow, send_request, ready, stop, report))
    process.start()
    if not ready.wait(120):
        process.kill()
        raise SystemExit("the load process did not open its connections in 120 s")
    return process, stop, report, ready


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="model folder (the tiny test model: scripts/make_tiny_model.py)")
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--idle", type=int, default=500)
    parser.add_argument("--slow", type=int, default=50)
    parser.add_argument("--requests", type=int, default=100, help="normal requests per measurement")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    client_fd_limit = raise_fd_limit()

    result: dict[str, Any] = {
        "command": "python scripts/bench_connections.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "client_fd_limit": client_fd_limit,
        "idle_connections": args.idle,
        "slow_clients": args.slow,
        "slow_client_rate": "1 body byte per 100 ms",
    }

    # Part 1: latency and descriptors under idle keep-alive and slow connections.
    server = ServerChild(args.model, args.dtype, "--threads", str(args.threads), "--timeout-keep-alive", "60")
    try:
        measure(server.url, 20)  # warm the connection and the model
        baseline_fds = server.open_fds()
        unloaded = measure(server.url, args.requests)
        sampler = FdSampler(server, 0.2)
        sampler.start()
        process, stop, report, _ = start_load(server.port, args.idle, args.slow, send_request=True)
        time.sleep(2.0)  # every slow client is mid-body
        loaded = measure(server.url, args.requests)
        stop.set()
        load_report = report.get(timeout=120)
        process.join(60)
        time.sleep(1.0)
        samples = sampler.stop()
        after = server.open_fds()
        ratio = percentiles(loaded)["p50_ms"] / percentiles(unloaded)["p50_ms"]
        result["part1_keep_alive_60s"] = {
            "server_command": server.command,
            "unloaded": percentiles(unloaded),
            "loaded": percentiles(loaded),
            "p50_ratio_loaded_to_unloaded": round(ratio, 3),
            "target_ratio": 2.0,
            "load": load_report,
            "fds": {
                "baseline": baseline_fds,
                "peak": max(n for _t, n in samples),
                "after_clients_closed": after,
                "bound": f"baseline + one per open connection ({args.idle} idle + {args.slow} slow + 1)",
                "samples": samples[::5],
            },
        }
    finally:
        result["part1_exit_status"] = server.stop()

    # Part 2: connections that never send a byte are closed by the server (default keep-alive 5 s).
    server = ServerChild(args.model, args.dtype, "--threads", str(args.threads))
    try:
        baseline_fds = server.open_fds()
        sampler = FdSampler(server, 0.5)
        sampler.start()
        process, stop, report, _ = start_load(server.port, args.idle, 0, send_request=False)
        opened_at = time.monotonic() - sampler.began
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and server.open_fds() > baseline_fds + 5:
            time.sleep(0.5)
        closed_after = round(time.monotonic() - sampler.began - opened_at, 1)
        stop.set()
        load_report = report.get(timeout=60)
        process.join(60)
        samples = sampler.stop()
        result["part2_silent_connections_default_keep_alive"] = {
            "server_command": server.command,
            "load": load_report,
            "fds": {
                "baseline": baseline_fds,
                "peak": max(n for _t, n in samples),
                "back_to_baseline_s_after_opened": closed_after,
                "samples": samples,
            },
        }
    finally:
        result["part2_exit_status"] = server.stop()

    text = json.dumps(result, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    summary = {
        "unloaded_p50_ms": result["part1_keep_alive_60s"]["unloaded"]["p50_ms"],
        "loaded_p50_ms": result["part1_keep_alive_60s"]["loaded"]["p50_ms"],
        "ratio": result["part1_keep_alive_60s"]["p50_ratio_loaded_to_unloaded"],
        "fds_part1": {k: v for k, v in result["part1_keep_alive_60s"]["fds"].items() if k != "samples"},
        "fds_part2": {
            k: v for k, v in result["part2_silent_connections_default_keep_alive"]["fds"].items() if k != "samples"
        },
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
