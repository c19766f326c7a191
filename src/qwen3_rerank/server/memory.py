"""The process's resident memory, for the start-up log: what each served model costs.

A server of several models holds each one's weights, and ONNX Runtime's working memory for
each, at once; the log lines written at start (before and after each model loads, and after its
warm-up) are what an operator budgets the host from. Linux only (``/proc/self/statm``, the
current resident set, not the peak that ``getrusage`` gives); elsewhere the figures are left out.
"""

from __future__ import annotations

import os
from pathlib import Path

_STATM = Path("/proc/self/statm")


def resident_bytes(statm: Path = _STATM) -> int | None:
    """Bytes of this process now in RAM (its resident set), or None where that cannot be read.

    Args:
        statm: the ``statm`` file to read (a test passes its own).
    """
    try:
        pages = int(statm.read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):  # no /proc (AttributeError: no sysconf)
        return None


def mib(size: int | None) -> str:
    """``123 MiB``, or ``?`` for an unknown size."""
    return "?" if size is None else f"{size / 2**20:.0f} MiB"


def growth(before: int | None, after: int | None) -> str:
    """``120 MiB -> 760 MiB (+640 MiB)``: the resident set across a step, for a log line."""
    if before is None or after is None:
        return "resident memory unknown on this platform"
    sign = "+" if after >= before else "-"
    return f"resident memory {mib(before)} -> {mib(after)} ({sign}{mib(abs(after - before))})"
