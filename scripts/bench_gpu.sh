#!/usr/bin/env bash
# The prepared GPU benchmark: this project on ONNX Runtime's CUDA execution provider (fp16 score
# graph, shared-prefix reuse, IO binding) against the official PyTorch recipe in bf16, on the
# same GPU, the same inputs and the three workloads of the CPU benchmark; each engine × workload
# in its own process. Rows go to $OUT/rows.jsonl (one JSON object each), a summary to stdout.
#
#   scripts/bench_gpu.sh prepare     # once: random 0.6B checkpoint + fp16 export (CPU work, minutes)
#   scripts/bench_gpu.sh run         # the benchmark itself (sized for at most 5 minutes)
#
# Needs on that machine: a CUDA build of torch, transformers, and onnxruntime-gpu instead of
# onnxruntime (pip uninstall -y onnxruntime && pip install onnxruntime-gpu).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-/tmp/qwen3-rerank-gpu}
OUT=${OUT:-docs/benchmarks/gpu-0.6B}
TOKENIZER=${TOKENIZER:-../shared/qwen3-tokenizer}
CHECKPOINT="$WORK/qwen3-reranker-0.6B-random"
MODEL="$WORK/qwen3-reranker-0.6B-random-onnx"
DEVICE=${DEVICE:-cuda}

case "${1:-run}" in
  prepare)
    python -c "from qwen3_rerank.export.random_model import make_random_checkpoint as m; m('$CHECKPOINT', '$TOKENIZER', size='0.6B', seed=0)"
    qwen3-rerank export "$CHECKPOINT" --out "$MODEL" --dtype fp16 --no-verify --force
    qwen3-rerank optimize "$MODEL" --dtype fp16
    ;;
  run)
    mkdir -p "$OUT"
    : > "$OUT/rows.jsonl"
    for workload in 1x100x128 1x20x512 16x10x256; do
      timeout 120 python -m qwen3_rerank.bench.worker --engine ours --device "$DEVICE" --model "$MODEL" \
        --dtype fp16 --workload "$workload" --label "ours-fp16-$DEVICE" >> "$OUT/rows.jsonl" || echo "ours $workload failed" >&2
      timeout 120 python -m qwen3_rerank.bench.worker --engine torch --device "$DEVICE" --torch-dtype bf16 \
        --checkpoint "$CHECKPOINT" --batch 16 --workload "$workload" --label "torch-bf16-$DEVICE" >> "$OUT/rows.jsonl" \
        || echo "torch $workload failed" >&2
    done
    python - "$OUT/rows.jsonl" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
for row in rows:
    print(row.get("label"), row.get("workload", {}).get("name"), "pairs/s", round(row.get("pairs_per_s", 0), 2),
          "p50 s", row.get("latency_p50_s"), row.get("error", ""))
PY
    ;;
  *) echo "usage: $0 prepare|run" >&2; exit 2 ;;
esac
