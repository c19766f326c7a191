"""Measured GEMM ceilings of this machine, with one-node ONNX Runtime graphs at the model's shapes.

* ``fp32``: ``MatMul`` float32 activations × float32 weight;
* ``int8``: ``MatMulInteger`` uint8 activations × int8 weight → int32 (the q8 file's kernel once
  the activations are quantized); ``int8_dynamic``: ``DynamicQuantizeMatMul`` (float in, float
  out, quantizing the activations itself: what ORT fuses the q8 file's linears into);
* ``q4``: ``MatMulNBits`` 4-bit, block 32, ``accuracy_level`` 0 (fp32 compute, the q4 file's
  setting unless the exporter chose otherwise) and 4 (int8 compute).

Each kernel runs the seven linears of one Qwen3-0.6B layer for ``rows`` tokens; the ceiling is
their total FLOPs over their total time (best of ``repeat`` rounds), so it is weighted like the
model's own mix of shapes.

    python -m qwen3_rerank.bench.gemm [--rows 1024] [--threads 2] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import onnx

from .flops import QWEN3_06B, linear_shapes

KERNELS = ("fp32", "int8", "int8_dynamic", "q4_acc0", "q4_acc4", "nbits8_acc4")


def _model(kernel: str, k: int, n: int, rng: np.random.Generator) -> onnx.ModelProto:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits, nodes, inputs = [], [], []
    if kernel == "fp32":
        inputs = [helper.make_tensor_value_info("A", TensorProto.FLOAT, ["M", k])]
        inits.append(numpy_helper.from_array(rng.standard_normal((k, n), dtype=np.float32) * 0.02, "B"))
        nodes.append(helper.make_node("MatMul", ["A", "B"], ["Y"]))
        out_type = TensorProto.FLOAT
    elif kernel == "int8":
        inputs = [helper.make_tensor_value_info("A", TensorProto.UINT8, ["M", k])]
        inits.append(numpy_helper.from_array(rng.integers(-127, 128, (k, n), dtype=np.int8), "B"))
        inits.append(numpy_helper.from_array(np.array(128, dtype=np.uint8), "a_zp"))
        nodes.append(helper.make_node("MatMulInteger", ["A", "B", "a_zp"], ["Y"]))
        out_type = TensorProto.INT32
    elif kernel == "int8_dynamic":
        inputs = [helper.make_tensor_value_info("A", TensorProto.FLOAT, ["M", k])]
        inits.append(numpy_helper.from_array(rng.integers(-127, 128, (k, n), dtype=np.int8), "B"))
        inits.append(numpy_helper.from_array(np.array([0.01], dtype=np.float32), "b_scale"))
        inits.append(numpy_helper.from_array(np.array([0], dtype=np.int8), "b_zp"))
        nodes.append(
            helper.make_node("DynamicQuantizeMatMul", ["A", "B", "b_scale", "b_zp"], ["Y"], domain="com.microsoft")
        )
        out_type = TensorProto.FLOAT
    elif kernel.startswith(("q4", "nbits8")):
        block = 32
        blocks = k // block
        bits = 8 if kernel.startswith("nbits8") else 4
        inputs = [helper.make_tensor_value_info("A", TensorProto.FLOAT, ["M", k])]
        packed = (n, blocks, block * bits // 8)
        inits.append(numpy_helper.from_array(rng.integers(0, 256, packed, dtype=np.uint8), "B"))
        inits.append(numpy_helper.from_array(rng.random(n * blocks, dtype=np.float32) * 0.01, "scales"))
        nodes.append(
            helper.make_node(
                "MatMulNBits",
                ["A", "B", "scales"],
                ["Y"],
                domain="com.microsoft",
                K=k,
                N=n,
                bits=bits,
                block_size=block,
                accuracy_level=int(kernel.rsplit("acc", 1)[1]),
            )
        )
        out_type = TensorProto.FLOAT
    else:
        raise ValueError(kernel)
    graph = helper.make_graph(nodes, kernel, inputs, [helper.make_tensor_value_info("Y", out_type, ["M", n])], inits)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    return onnx.helper.make_model(graph, opset_imports=opsets, ir_version=9)


def measure(
    kernel: str,
    rows: int = 1024,
    threads: int | None = None,
    repeat: int = 5,
    config: Mapping[str, int] = QWEN3_06B,
) -> dict[str, Any]:
    """GFLOP/s (GOP/s for int8) of ``kernel`` over one layer's linears at ``rows`` tokens.

    Args:
        kernel: one of :data:`KERNELS`.
        rows: tokens per GEMM (M).
        threads: ONNX Runtime intra-op threads (default: its own choice).
        repeat: timed runs per shape; the best is kept.
        config: the model shapes (default: Qwen3-Reranker-0.6B).

    Returns:
        ``{"kernel", "rows", "threads", "gflops", "shapes"}``, with the time and GFLOP/s of each shape.

    Raises:
        ValueError: an unknown ``kernel``.
    """
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    per_shape: list[dict[str, float]] = []
    total_flops = total_time = 0.0
    for k, n in linear_shapes(config):
        model = _model(kernel, k, n, rng)
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        a: npt.NDArray[np.uint8] | npt.NDArray[np.float32]
        if kernel == "int8":
            a = rng.integers(0, 256, (rows, k), dtype=np.uint8)
        else:
            a = rng.standard_normal((rows, k), dtype=np.float32)
        session.run(None, {"A": a})  # warm-up (packs the weight)
        best = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            session.run(None, {"A": a})
            best = min(best, time.perf_counter() - t0)
        flops = 2.0 * rows * k * n
        per_shape.append({"k": k, "n": n, "seconds": best, "gflops": flops / best / 1e9})
        total_flops += flops
        total_time += best
    return {
        "kernel": kernel,
        "rows": rows,
        "threads": threads,
        "gflops": total_flops / total_time / 1e9,
        "shapes": per_shape,
    }


def measure_all(
    rows: int = 1024, threads: int | None = None, repeat: int = 5, kernels: Iterable[str] = KERNELS
) -> dict[str, Any]:
    """:func:`measure` of every kernel in ``kernels``, with the ONNX Runtime version."""
    import onnxruntime as ort

    return {
        "onnxruntime": ort.__version__,
        "rows": rows,
        "threads": threads,
        "kernels": {k: measure(k, rows, threads, repeat) for k in kernels},
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m qwen3_rerank.bench.gemm``: print :func:`measure_all` as JSON; returns 0."""
    p = argparse.ArgumentParser(prog="python -m qwen3_rerank.bench.gemm", description="measured GEMM ceilings")
    p.add_argument("--rows", type=int, default=1024, help="tokens per GEMM (M)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--kernels", default=",".join(KERNELS))
    args = p.parse_args(argv)
    print(json.dumps(measure_all(args.rows, args.threads, args.repeat, args.kernels.split(","))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
