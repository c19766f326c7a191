"""``qwen3-rerank bench``: throughput, latency, memory and GFLOP/s of this library against the
official PyTorch recipe and Transformers.js, on the same model files and inputs (see run.py)."""
