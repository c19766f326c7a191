#!/usr/bin/env bash
# Regenerates every figure under docs/benchmarks/cpu-0.6B/ (results.json, PNG plots, summary.md)
# with one command, on this machine:
#
#   scripts/bench_cpu.sh                 # the full run (about 35-40 minutes on 2 cores)
#   scripts/bench_cpu.sh --quick         # a smoke run
#
# MODEL: the ONNX folder (published layout: fp32/fp16/q8/q4) exported by `qwen3-rerank export`;
# CHECKPOINT: the PyTorch checkpoint it was exported from (a full-size random-weight model with the
# real Qwen3-Reranker-0.6B configuration; weight values do not change speed). Both are made here
# when missing. Extra arguments go to `qwen3-rerank bench`.
#
# The peers (OpenVINO int8/int4, llama.cpp Q8_0/Q4_K_M) are set up by scripts/setup_peers.sh into
# their cache folder ($QWEN3_RERANK_PEERS, default ~/.cache/qwen3-rerank/peers): the first time this
# builds llama.cpp and exports the checkpoint for both peers (an hour or more on 2 cores), later runs
# reuse it. SKIP_PEERS=1 leaves them out (the bench then lists them as skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${MODEL:-/work/big/qwen3-reranker-0.6B-random-onnx}
CHECKPOINT=${CHECKPOINT:-/work/big/qwen3-reranker-0.6B-random}
TOKENIZER=${TOKENIZER:-/work/shared/qwen3-tokenizer}
OUT=${OUT:-docs/benchmarks/cpu-0.6B}

if [ ! -f "$CHECKPOINT/config.json" ]; then
  python -c "from qwen3_rerank.export.random_model import make_random_checkpoint as m; m('$CHECKPOINT', '$TOKENIZER', size='0.6B', seed=0)"
fi
if [ ! -f "$MODEL/onnx/model_quantized.onnx" ]; then
  qwen3-rerank export "$CHECKPOINT" --out "$MODEL"
fi
# Transformers.js v4 (pinned by package-lock.json), CPU only.
(cd src/qwen3_rerank/bench/js && ONNXRUNTIME_NODE_INSTALL_CUDA=skip npm ci --no-audit --no-fund --loglevel=error)

if [ "${SKIP_PEERS:-}" != 1 ]; then
  scripts/setup_peers.sh "$CHECKPOINT"
fi

qwen3-rerank bench --model "$MODEL" --checkpoint "$CHECKPOINT" --out "$OUT" "$@"
