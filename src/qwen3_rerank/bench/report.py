"""Plots (PNG, matplotlib) and the markdown summary of a benchmark report (``results.json``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: ``results.json`` and its rows, as JSON objects.
Json = dict[str, Any]


def _rows(report: Json, workload: str) -> list[Json]:
    return [
        r for r in report.get("results", []) if r.get("workload", {}).get("name") == workload and "pairs_per_s" in r
    ]


def _workloads(report: Json) -> list[str]:
    seen: list[str] = []
    for r in report.get("results", []):
        name = r.get("workload", {}).get("name")
        if name and name not in seen:
            seen.append(name)
    return seen


def write_plots(report: Json, out: Path) -> list[str]:
    """One throughput, one latency and one memory chart per workload, plus GFLOP/s vs ceilings."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []
    for workload in _workloads(report):
        rows = _rows(report, workload)
        if not rows:
            continue
        names = [r["name"] for r in rows]
        colors = [_color(n) for n in names]
        fig, axes = plt.subplots(1, 3, figsize=(16, 0.45 * len(rows) + 1.8))
        ax = axes[0]
        ax.barh(names, [r["pairs_per_s"] for r in rows], color=colors)
        ax.set_xlabel("pairs/s (higher is better)")
        ax.invert_yaxis()
        ax = axes[1]
        ax.barh(names, [r["latency_p50_s"] for r in rows], color=colors, label="p50")
        ax.scatter([r["latency_p95_s"] for r in rows], names, color="black", marker="|", s=200, label="p95")
        ax.set_xlabel("seconds per call (query with its documents, as run)")
        ax.invert_yaxis()
        ax.legend(loc="lower right")
        ax.set_yticklabels([])
        ax = axes[2]
        ax.barh(names, [r["peak_rss_mb"] for r in rows], color=colors)
        ax.axvline(1024, color="red", linestyle="--", linewidth=1)
        ax.set_xlabel("peak RSS, MB (red: 1 GB target)")
        ax.invert_yaxis()
        ax.set_yticklabels([])
        fig.suptitle(f"Qwen3-Reranker-0.6B (random weights), CPU, workload {workload} (queries x docs x tokens)")
        fig.tight_layout()
        path = out / f"workload-{workload}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path.name)

    gemm = report.get("gemm", {}).get("kernels", {})
    ours = [r for r in report.get("results", []) if r.get("name", "").startswith("ours-") and "executed_gflops" in r]
    if gemm and ours:
        fig, ax = plt.subplots(figsize=(10, 0.35 * (len(ours) + len(gemm)) + 1.5))
        labels = [f"{r['name']} @ {r['workload']['name']}" for r in ours] + [f"ceiling {k}" for k in gemm]
        values = [r["executed_gflops"] for r in ours] + [v["gflops"] for v in gemm.values()]
        ax.barh(labels, values, color=[_color(r["name"]) for r in ours] + ["#999999"] * len(gemm))
        ax.set_xlabel("achieved GFLOP/s (linears + attention; int8: GOP/s) vs measured GEMM ceilings")
        ax.invert_yaxis()
        fig.tight_layout()
        path = out / "gflops.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path.name)
    return written


def _color(name: str) -> str:
    if name.startswith("torch"):
        return "#d62728"
    if name.startswith("js"):
        return "#ff7f0e"
    if name.startswith("ov-"):
        return "#9467bd"
    if name.startswith("llamacpp-"):
        return "#2ca02c"
    return {"fast": "#1f77b4", "sg": "#6baed6", "plain": "#c6dbef"}.get(name.rsplit("-", 1)[-1], "#1f77b4")


def _loadavg(row: Json) -> str:
    values = row.get("loadavg_1m")
    return "–" if not values else "/".join(f"{v:.1f}" for v in values)


def _f(value: float | None, fmt: str = "{:.2f}") -> str:
    return "–" if value is None else fmt.format(value)


PEER_PREFIXES = ("ov-", "llamacpp-")


def _peer_lines(report: Json) -> list[str]:
    """The peers (OpenVINO, llama.cpp) next to this library's fastest q8 and q4 rows, per workload."""
    lines: list[str] = []
    for workload in _workloads(report):
        rows = _rows(report, workload)
        peers = [r for r in rows if r["name"].startswith(PEER_PREFIXES)]
        if not peers:
            continue
        best = {}
        for dtype in ("q8", "q4"):
            ours = [r for r in rows if r["name"].startswith(f"ours-{dtype}-")]
            if ours:
                best[dtype] = max(ours, key=lambda r: r["pairs_per_s"])
        if not lines:
            lines += [
                "## Peers: OpenVINO and llama.cpp (scripts/setup_peers.sh)",
                "",
                "Same texts, one call per query with its documents. 'ours ÷ peer': this library's fastest "
                "q8 (q4) row on the workload over the peer's throughput. Score agreement: largest "
                "|score - torch fp32 score| over the first call's documents both ran.",
                "",
            ]
        head = " | ".join(f"{b['name']} ÷ peer" for b in best.values())
        lines += [
            f"### {workload}",
            "",
            "| peer | pairs run | pairs/s | p50 s/call | peak RSS MB | load s | × torch fp32 | max Δscore vs torch fp32"
            + (f" | {head}" if head else "")
            + " | load avg |",
            "|---|---|---|---|---|---|---|---" + "|---" * len(best) + "|---|",
        ]
        for r in peers:
            cells = [
                r["name"],
                str(r["pairs"]),
                f"{r['pairs_per_s']:.2f}",
                f"{r['latency_p50_s']:.2f}",
                f"{r['peak_rss_mb']:.0f}",
                f"{r['load_s']:.1f}",
                _f(r.get("ratios", {}).get("vs_torch_fp32")),
                _f(r.get("vs_torch_fp32_max_abs_diff"), "{:.1e}"),
                *(_f(b["pairs_per_s"] / r["pairs_per_s"]) for b in best.values()),
                _loadavg(r),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def summary_markdown(report: Json) -> str:
    """``summary.md``: the machine, the versions and one table per workload and per extra study."""
    lines = [
        "# CPU benchmark: Qwen3-Reranker-0.6B configuration, random weights",
        "",
        f"Machine: {report['machine'].get('model')}, {report['machine'].get('cores')} cores, "
        f"avx2={report['machine'].get('avx2')}, avx512={report['machine'].get('avx512f')}, "
        f"bf16={report['machine'].get('bf16')}. Versions: "
        + ", ".join(f"{k} {v}" for k, v in report.get("versions", {}).items() if v),
        "",
        f"Command: `{report.get('command')}` ({report.get('wall_s', 0) / 60:.1f} min). "
        "Each engine × workload ran in its own process, one after another. A call is one query with its "
        "documents, tokenization included; throughput is over the timed calls after an untimed warm-up call. "
        "'pairs run' is how many (query, document) pairs were timed: slow engines ran the first documents "
        "(and queries) of a workload only, to fit the run in its time (see `plan` in results.json); "
        "pairs/s is per pair, so this changes how long a figure took to measure, and the latency is per "
        "call as run. 'load avg' is the machine's 1-minute load average before/after the run: the "
        "machine is shared, and a load above 2 means other processes took part of the 2 cores.",
        "",
    ]
    for workload in _workloads(report):
        rows = _rows(report, workload)
        skipped = [
            r
            for r in report.get("results", [])
            if r.get("workload", {}).get("name") == workload and "pairs_per_s" not in r
        ]
        if not rows and not skipped:
            continue
        lines += [
            f"## {workload} (queries × documents × document tokens)",
            "",
            "| engine | pairs run | pairs/s | tokens/s | p50 s/call | p95 s/call | peak RSS MB | load s | GFLOP/s "
            "| × torch fp32 | × torch ltk=1 | × js q8 | × js q4 | max Δscore vs torch fp32 | load avg |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            ratios = r.get("ratios", {})
            lines.append(
                f"| {r['name']} | {r['pairs']} | {r['pairs_per_s']:.2f} | {r['tokens_per_s']:.0f} | "
                f"{r['latency_p50_s']:.2f} | {r['latency_p95_s']:.2f} | {r['peak_rss_mb']:.0f} | {r['load_s']:.1f} | "
                f"{r['executed_gflops']:.0f} | {_f(ratios.get('vs_torch_fp32'))} | "
                f"{_f(ratios.get('vs_torch_fp32_ltk1'))} | "
                f"{_f(ratios.get('vs_js_q8'))} | {_f(ratios.get('vs_js_q4'))} | "
                f"{_f(r.get('vs_torch_fp32_max_abs_diff'), '{:.1e}')} | {_loadavg(r)} |"
            )
        for r in skipped:
            reason = r.get("skipped") or "error: " + r.get("error", "")[-120:].replace("|", "/").replace(chr(10), " ")
            lines.append(f"| {r.get('name')} | {reason} |")
        lines.append("")
    lines += _peer_lines(report)
    targets = report.get("targets", {})
    if targets:
        lines += [
            "## Targets (issue 12, item 4; 4-bit peak RSS: the lower of the two 4-bit peers)",
            "",
            "| target | measured | wanted | met |",
            "|---|---|---|---|",
        ]
        for name, t in targets.items():
            if name.startswith("_"):
                continue
            want = "–" if t["target"] is None else (("≤ " if t.get("lower_is_better") else "≥ ") + f"{t['target']:g}")
            met = "–" if t["met"] is None else ("yes" if t["met"] else "**no**")
            lines.append(f"| {name} | {_f(t['value'])} | {want} | {met} |")
        used = targets.get("_variants_used")
        if used:
            lines += [
                "",
                "Variant used for each dtype (the fastest working score-graph one): "
                + ", ".join(f"{k}: {v}" for k, v in sorted(used.items()))
                + ".",
            ]
        lines.append("")
    gemm = report.get("gemm", {}).get("kernels", {})
    if gemm:
        lines += [
            f"## Measured GEMM ceilings ({report['gemm'].get('rows')} rows × one layer's seven linears)",
            "",
            "| kernel | GFLOP/s (GOP/s) |",
            "|---|---|",
        ]
        lines += [f"| {k} | {v['gflops']:.0f} |" for k, v in gemm.items()]
        lines.append("")
    if report.get("startup"):
        lines += ["## Cold vs warm start", "", "| engine | phase | load s | peak RSS MB |", "|---|---|---|---|"]
        for r in report["startup"]:
            lines.append(
                f"| {r.get('name')} | {r.get('phase')} | {_f(r.get('load_s'))} | {_f(r.get('peak_rss_mb'), '{:.0f}')} |"
            )
        lines.append("")
    if report.get("memory_8k"):
        lines += [
            "## Peak RSS at an 8,192-token document (long rows run one decoder layer at a time, in slices)",
            "",
            "| engine | prompt tokens | seconds | peak RSS MB |",
            "|---|---|---|---|",
        ]
        for r in report["memory_8k"]:
            lines.append(
                f"| {r.get('name')} | {_f(r.get('mean_prompt_tokens'), '{:.0f}')} | {_f(r.get('seconds'), '{:.1f}')} | "
                f"{_f(r.get('peak_rss_mb'), '{:.0f}')} |"
                if "error" not in r
                else f"| {r.get('name')} | error: {r['error'][-200:]} |"
            )
        lines.append("")
    if report.get("session_sweep"):
        lines += ["## Session options (q8 score graph)", "", "| options | pairs/s | peak RSS MB |", "|---|---|---|"]
        for r in report["session_sweep"]:
            lines.append(
                f"| `{r.get('session_options')}` | {_f(r.get('pairs_per_s'))} | {_f(r.get('peak_rss_mb'), '{:.0f}')} |"
            )
        lines.append("")
    if report.get("scaling"):
        lines += [
            "## Scaling: sessions × threads (q8, 1x100x128; two sessions run in two processes at once)",
            "",
            "| sessions × threads | pairs/s | peak RSS MB (sum) |",
            "|---|---|---|",
        ]
        for r in report["scaling"]:
            lines.append(
                f"| {r.get('sessions')} × {r.get('threads')} | {_f(r.get('pairs_per_s'))} | "
                f"{_f(r.get('peak_rss_mb'), '{:.0f}')} |"
                if "error" not in r
                else f"| {r.get('sessions')} × {r.get('threads')} | error: {r['error'][-200:]} | |"
            )
        lines.append("")
    prof = report.get("profile", {})
    if prof.get("by_op_type"):
        lines += [
            f"## ORT profile, {prof.get('dtype')} score graph, {prof['workload']['name']} ({prof.get('pairs')} pairs)",
            "",
            "| op type | ms | share |",
            "|---|---|---|",
        ]
        for row in prof["by_op_type"][:15]:
            lines.append(f"| {row['op_type']} | {row['ms']:.0f} | {100 * row['share']:.1f}% |")
        lines.append("")
    for plot in report.get("plots", []):
        lines.append(f"![{plot}]({plot})")
    return "\n".join(lines) + "\n"


def write_summary(report: Json, path: Path) -> None:
    """Write :func:`summary_markdown` of ``report`` to ``path``."""
    path.write_text(summary_markdown(report), encoding="utf-8")
