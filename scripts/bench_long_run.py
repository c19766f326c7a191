"""A long run of ``qwen3-rerank serve``: does resident memory grow? (issue 11, item 4); loopback only.

    python scripts/bench_long_run.py --model DIR --requests 20000 --concurrency 16 \
        --out docs/benchmarks/long-run/results.json --plot docs/benchmarks/long-run/rss.png

Sends ``--requests`` ``/v2/rerank`` requests of mixed sizes (1 to 32 documents of 5 to 150 words,
drawn with a fixed seed from :func:`qwen3_rerank.server.load.workload` bodies) at a fixed
concurrency, and reads the server's resident memory (``VmRSS`` of ``/proc/PID/status``) after
every ``--sample-every`` answers. The verdict compares the mean RSS over the first 2,000 requests
after the warm-up with the mean over the last 2,000 (scaled down for shorter runs; the JSON says
what was used). Not part of the test suite: it takes minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server_child import ServerChild  # noqa: E402

from qwen3_rerank.server.load import RerankBody, workload  # noqa: E402

#: (documents per request, words per document) of the request kinds, drawn uniformly
SIZES = [(1, 5), (2, 40), (4, 20), (8, 40), (8, 150), (16, 20), (32, 10), (32, 60)]


def bodies(count: int, seed: int) -> list[RerankBody]:
    """``count`` request bodies of mixed sizes: a pool of 64 per size, drawn with ``seed``."""
    pools = [workload(64, docs, words, seed=seed + i) for i, (docs, words) in enumerate(SIZES)]
    rng = random.Random(seed)
    return [rng.choice(pools[rng.randrange(len(pools))]) for _ in range(count)]


async def drive(
    server: ServerChild, requests: list[RerankBody], concurrency: int, sample_every: int
) -> tuple[dict[str, int], list[tuple[int, float, int]], list[float]]:
    """Send every body; (status counts, RSS samples as (answers, seconds, bytes), latencies)."""
    import httpx

    statuses: dict[str, int] = {}
    samples: list[tuple[int, float, int]] = [(0, 0.0, server.rss_bytes())]
    latencies: list[float] = []
    done = 0
    next_index = 0
    began = time.perf_counter()

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal next_index, done
        while next_index < len(requests):
            body = requests[next_index]
            next_index += 1
            started = time.perf_counter()
            try:
                response = await client.post("/v2/rerank", json=body)
                key = str(response.status_code)
            except httpx.HTTPError as exc:
                key = type(exc).__name__
            latencies.append(time.perf_counter() - started)
            statuses[key] = statuses.get(key, 0) + 1
            done += 1
            if done % sample_every == 0:
                samples.append((done, round(time.perf_counter() - began, 2), server.rss_bytes()))
                if done % (sample_every * 20) == 0:
                    print(f"{done} answered, RSS {samples[-1][2] / 2**20:.1f} MiB, {statuses}", file=sys.stderr)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=server.url, timeout=120, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return statuses, samples, latencies


def window_mean(samples: list[tuple[int, float, int]], low: int, high: int) -> float:
    """Mean RSS of the samples taken with ``low < answers <= high``."""
    values = [rss for answers, _t, rss in samples if low < answers <= high]
    if not values:
        raise SystemExit(f"no RSS sample between {low} and {high} answers: lower --sample-every")
    return statistics.fmean(values)


def plot(samples: list[tuple[int, float, int]], windows: dict[str, Any], out: Path, title: str) -> None:
    """The RSS curve: full scale from 0 above, the part after the warm-up magnified below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (full, zoom) = plt.subplots(2, 1, figsize=(8, 6.5), dpi=110, sharex=True)
    x = [s[0] for s in samples]
    y = [s[2] / 2**20 for s in samples]
    after = [v for answers, v in zip(x, y, strict=True) if answers > windows["warm_up"]]
    for ax in (full, zoom):
        ax.plot(x, y, lw=1.2, label="server RSS")
        for name, color in (("first", "tab:green"), ("last", "tab:red")):
            w = windows[name]
            ax.axvspan(w["from"], w["to"], color=color, alpha=0.12, label=f"{name} window: {w['mean_mib']:.2f} MiB")
        ax.axvline(windows["warm_up"], color="grey", ls="--", lw=1, label="end of warm-up")
        ax.set_ylabel("resident memory (MiB)")
        ax.grid(alpha=0.3)
    full.set_ylim(bottom=0)
    full.set_title(title, fontsize=9)
    full.legend(loc="lower right", fontsize=8)
    low, high = min(after), max(after)
    zoom.set_ylim(low - 0.05 * low, high + 0.05 * low)  # a band of ±5% of the level: the target's scale
    zoom.set_title("after the warm-up, y axis ±5% around the curve", fontsize=9)
    zoom.set_xlabel("requests answered")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)


def replot(results: Path, out: Path) -> None:
    """Draw the PNG again from a results JSON of this script."""
    data = json.loads(results.read_text())
    samples = [(int(a), float(t), int(mib * 2**20)) for a, t, mib in data["samples"]]
    plot(
        samples,
        data["windows"],
        out,
        _title(data["requests"], data["concurrency"], data["rss_growth_percent"], data["errors"]),
    )


def _title(requests: int, concurrency: int, growth: float, errors: int) -> str:
    return (
        f"qwen3-rerank serve, tiny model: {requests} requests of mixed sizes at concurrency {concurrency}\n"
        f"RSS growth first → last window {growth:+.2f}%, {errors} errors"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model folder (the tiny test model: scripts/make_tiny_model.py)")
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--warm-up", type=int, default=None, help="requests before the first window (default: 5%%)")
    parser.add_argument("--window", type=int, default=None, help="requests per window (default: 2,000, or 10%%)")
    parser.add_argument("--sample-every", type=int, default=50, help="answers between two RSS readings")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--plot", type=Path, help="PNG of the RSS curve (needs matplotlib)")
    parser.add_argument(
        "--replot", type=Path, metavar="RESULTS_JSON", help="only draw --plot again from a results file"
    )
    args = parser.parse_args(argv)
    if args.replot:
        replot(args.replot, args.plot or args.replot.with_suffix(".png"))
        return 0
    if not args.model:
        raise SystemExit("--model is required (unless --replot)")
    window = args.window or min(2000, args.requests // 10)
    warm_up = args.warm_up if args.warm_up is not None else max(args.requests // 20, args.sample_every)
    if warm_up + 2 * window > args.requests:
        raise SystemExit("--requests must hold the warm-up and two windows")

    requests = bodies(args.requests, args.seed)
    server = ServerChild(
        args.model,
        args.dtype,
        "--threads",
        str(args.threads),
        "--max-queued-requests",
        str(max(256, 2 * args.concurrency)),
    )
    began = time.perf_counter()
    try:
        statuses, samples, latencies = asyncio.run(drive(server, requests, args.concurrency, args.sample_every))
        wall = time.perf_counter() - began
    finally:
        exit_status = server.stop()
    first = window_mean(samples, warm_up, warm_up + window)
    last = window_mean(samples, args.requests - window, args.requests)
    growth = 100.0 * (last - first) / first
    errors = {k: v for k, v in statuses.items() if k != "200"}
    ordered = sorted(latencies)
    windows = {
        "warm_up": warm_up,
        "first": {"from": warm_up, "to": warm_up + window, "mean_mib": round(first / 2**20, 2)},
        "last": {"from": args.requests - window, "to": args.requests, "mean_mib": round(last / 2**20, 2)},
    }
    result: dict[str, Any] = {
        "command": "python scripts/bench_long_run.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "server_command": server.command,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "requests": args.requests,
        "concurrency": args.concurrency,
        "sizes_docs_x_words": SIZES,
        "documents_sent": sum(len(b["documents"]) for b in requests),
        "wall_s": round(wall, 1),
        "requests_per_s": round(args.requests / wall, 1),
        "latency_ms": {
            "p50": round(1000 * ordered[len(ordered) // 2], 1),
            "p99": round(1000 * ordered[int(0.99 * (len(ordered) - 1))], 1),
        },
        "statuses": statuses,
        "errors": sum(errors.values()),
        "windows": windows,
        "rss_growth_percent": round(growth, 2),
        "target": {"rss_growth_percent_below": 5.0, "errors": 0},
        "passed": growth < 5.0 and not errors,
        "rss_start_mib": round(samples[0][2] / 2**20, 2),
        "rss_peak_mib": round(max(s[2] for s in samples) / 2**20, 2),
        "rss_end_mib": round(samples[-1][2] / 2**20, 2),
        "server_exit_status": exit_status,
        "samples": [[answers, t, round(rss / 2**20, 2)] for answers, t, rss in samples],
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    if args.plot:
        plot(samples, windows, args.plot, _title(args.requests, args.concurrency, growth, sum(errors.values())))
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=1))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
