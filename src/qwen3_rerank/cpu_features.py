"""What this machine's CPU can do, read once: the facts that change which kernels run.

Two users: the score graph picks its q8 activation mode by whether ONNX Runtime's u8×s8 products
are exact here (:func:`int8_products_exact`), and benchmarks record the CPU with every figure
(:func:`cpu_info`), because a ratio measured on AVX2 does not hold on a VNNI machine.
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path
from typing import Any

_X86 = ("x86_64", "amd64", "i386", "i686", "x86")
#: Flags that change which ONNX Runtime kernels run (recorded with benchmark figures).
NOTABLE_FLAGS = ("avx", "fma", "f16c", "vnni", "amx", "sse4", "bf16")


@functools.cache
def _cpuinfo() -> tuple[str, frozenset[str]]:
    """Model name and flags of the first CPU in ``/proc/cpuinfo`` (empty outside Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor(), frozenset()
    model, flags = platform.processor(), frozenset[str]()
    for line in text.splitlines():
        if line.startswith("model name") and model == platform.processor():
            model = line.split(":", 1)[1].strip()
        if line.startswith("flags") and not flags:
            flags = frozenset(line.split(":", 1)[1].split())
    return model, flags


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux names them (``avx2``, ``avx512_vnni``, ...); empty where
    they cannot be read."""
    return _cpuinfo()[1]


def int8_products_exact() -> bool:
    """Whether ONNX Runtime's u8×s8 kernel sums this CPU's products without 16-bit saturation.

    Why it matters: on x86 without VNNI the kernel uses ``VPMADDUBSW``, which adds two u8×s8
    products into a saturating int16; with full-range int8 weights and activations that use their
    whole range (per token) one 256-wide product was off by up to 15% in a test
    (tests/test_q8_activations.py). VNNI (``VPDPBUSD``), AMX and ARM's dot-product and widening
    multiplies sum in 32 bits. Where the flags cannot be read (x86 outside Linux), the answer is
    the safe one: no.
    """
    if platform.machine().lower() not in _X86:
        return True
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & cpu_flags())


def cpu_info() -> dict[str, Any]:
    """The CPU for a benchmark record: model name, core count, the flags that matter here."""
    model, flags = _cpuinfo()
    return {
        "model": model,
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "avx2": "avx2" in flags,
        "avx512f": "avx512f" in flags,
        "avx512_vnni": "avx512_vnni" in flags or "avx512vnni" in flags,
        "avx_vnni": "avx_vnni" in flags,
        "bf16": bool({"avx512_bf16", "amx_bf16"} & flags),
        "int8_products_exact": int8_products_exact(),
        "flags": sorted(f for f in flags if f.startswith(NOTABLE_FLAGS)),
        "platform": platform.platform(),
    }
