#!/usr/bin/env bash
# Sets up the benchmark's peers, OpenVINO and llama.cpp, in a cache folder, and makes their model
# files for each checkpoint given. Idempotent: a second run reuses everything already made.
#
#   scripts/setup_peers.sh [CHECKPOINT ...]
#
# Cache folder: $QWEN3_RERANK_PEERS, else ~/.cache/qwen3-rerank/peers (see qwen3_rerank/bench/peers.py):
#   ov-venv/        its own venv: torch==2.13.0 CPU first, then optimum-intel[openvino] and nncf, then
#                   torchvision removed (optimum-intel pulls it, and it breaks torch's ONNX export on CPU
#                   torch); also llama.cpp's gguf-py for the GGUF converter. Never an unpinned torch: a
#                   constraints file pins it for every install here.
#   llama.cpp/      the source vendored in the llama-cpp-python sdist (PyPI), built with cmake: only
#                   llama-server and llama-quantize, Release, no curl, for this CPU (rebuilt when the
#                   CPU's flags change: a native build may not run on another CPU).
#   models/KEY/     per checkpoint: OpenVINO IR fp32/int8/int4 (optimum-cli export openvino) and GGUF
#                   f32/q8_0/q4_k_m (convert_hf_to_gguf.py + llama-quantize).
#
# Environment: PYTHON (the Python with this package's dependencies, default python), JOBS (build jobs,
# default 2), SKIP_LLAMACPP=1 / SKIP_OV=1 (leave one peer out). The llama.cpp build takes a while on
# 2 cores (about an hour on a busy machine); it runs under nice.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PYTHON=${PYTHON:-python}
JOBS=${JOBS:-2}
export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}"
# Pinned peers: what the recorded figures ran.
TORCH_PIN="torch==2.13.0"
OV_PACKAGES=("optimum-intel[openvino]==2.2.0" "openvino==2026.4.1" "nncf==3.4.0")
LLAMA_CPP_PYTHON="llama-cpp-python==0.3.36"

eval "$("$PYTHON" -m qwen3_rerank.bench.peers paths --shell)"
mkdir -p "$PEERS_ROOT"
log() { echo "[setup_peers] $*" >&2; }

CONSTRAINTS="$PEERS_ROOT/constraints.txt"
echo "$TORCH_PIN" > "$CONSTRAINTS"
ov_pip() { "$OV_VENV/bin/python" -m pip install --quiet -c "$CONSTRAINTS" "$@"; }

# -- OpenVINO venv -----------------------------------------------------------------------------------
if [ "${SKIP_OV:-}" != 1 ] && [ ! -f "$OV_VENV/.ready" ]; then
  log "OpenVINO venv in $OV_VENV ..."
  rm -rf "$OV_VENV"
  BASE=$("$PYTHON" -c 'import sys; print(getattr(sys, "_base_executable", sys.executable))')
  "$BASE" -m venv "$OV_VENV"
  ov_pip "$TORCH_PIN"
  ov_pip "${OV_PACKAGES[@]}"
  "$OV_VENV/bin/python" -m pip uninstall --quiet -y torchvision || true
  # The benchmark worker runs there (this package on PYTHONPATH): this package's runtime dependencies.
  "$PYTHON" -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
    > "$PEERS_ROOT/runtime-requirements.txt"
  ov_pip -r "$PEERS_ROOT/runtime-requirements.txt"
  "$OV_VENV/bin/python" -c "import torch, optimum.intel, nncf; assert torch.__version__.startswith('2.13.0'), torch.__version__"
  touch "$OV_VENV/.ready"
fi

# -- llama.cpp source and build ----------------------------------------------------------------------
if [ "${SKIP_LLAMACPP:-}" != 1 ]; then
  if [ ! -f "$LLAMA_SRC/CMakeLists.txt" ]; then
    log "llama.cpp source from the $LLAMA_CPP_PYTHON sdist ..."
    mkdir -p "$PEERS_ROOT/src"
    "$PYTHON" -m pip download --quiet --no-binary :all: --no-deps "$LLAMA_CPP_PYTHON" -d "$PEERS_ROOT/src"
    SDIST=$(ls "$PEERS_ROOT"/src/llama_cpp_python-*.tar.gz | head -1)
    TMP=$(mktemp -d "$PEERS_ROOT/src/extract.XXXXXX")
    tar -xzf "$SDIST" -C "$TMP"
    rm -rf "$LLAMA_SRC"
    mv "$TMP"/llama_cpp_python-*/vendor/llama.cpp "$LLAMA_SRC"
    rm -rf "$TMP"
    rm -f "$LLAMA_SRC/.git"  # a submodule pointer into the sdist's absent .git
    echo "$(basename "$SDIST"): vendor/llama.cpp" > "$LLAMA_SRC/SOURCE"
  fi
  [ -f "$LLAMA_SRC/SOURCE" ] || echo "llama-cpp-python sdist: vendor/llama.cpp" > "$LLAMA_SRC/SOURCE"
  # AMX off: ggml's AMX kernels (Q8_0, Q4 types) died with SIGILL at `tilezero` on a VM that lists
  # amx_tile/amx_int8 (its own permission request succeeded), so the build leaves them out; the
  # AVX-512/VNNI kernels and the weight repacking stay.
  EXTRA_FLAGS=""
  if grep -q -m1 'amx_tile' /proc/cpuinfo; then EXTRA_FLAGS="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"; fi
  CPU_STAMP=$( (grep -m1 '^flags' /proc/cpuinfo; echo "$EXTRA_FLAGS") | md5sum | cut -d' ' -f1)
  STAMP_FILE="$LLAMA_BUILD/.cpu-flags"
  if [ -x "$LLAMA_SERVER" ] && [ -x "$LLAMA_QUANTIZE" ] && [ ! -f "$STAMP_FILE" ]; then
    echo "$CPU_STAMP" > "$STAMP_FILE"  # built here before the stamp existed
  fi
  if [ -f "$STAMP_FILE" ] && [ "$(cat "$STAMP_FILE")" != "$CPU_STAMP" ]; then
    log "the CPU or the build flags changed since llama.cpp was built: rebuilding"
    rm -rf "$LLAMA_BUILD"
  fi
  if [ ! -x "$LLAMA_SERVER" ] || [ ! -x "$LLAMA_QUANTIZE" ]; then
    log "building llama-server and llama-quantize in $LLAMA_BUILD (-j$JOBS, niced; this takes a while) ..."
    nice -n 10 cmake -S "$LLAMA_SRC" -B "$LLAMA_BUILD" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
      -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF "-DCMAKE_C_FLAGS=$EXTRA_FLAGS" "-DCMAKE_CXX_FLAGS=$EXTRA_FLAGS" \
      > "$PEERS_ROOT/cmake-configure.log" 2>&1
    nice -n 10 cmake --build "$LLAMA_BUILD" --config Release -j "$JOBS" --target llama-server llama-quantize \
      > "$PEERS_ROOT/cmake-build.log" 2>&1 || { tail -30 "$PEERS_ROOT/cmake-build.log" >&2; exit 1; }
    echo "$CPU_STAMP" > "$STAMP_FILE"
  fi
  # The converter's packages, in the OpenVINO venv (torch and transformers are there already).
  if [ -x "$OV_VENV/bin/python" ] && [ ! -f "$OV_VENV/.gguf-ready" ]; then
    ov_pip "$LLAMA_SRC/gguf-py" "sentencepiece>=0.1.98,<0.3.0"
    touch "$OV_VENV/.gguf-ready"
  fi
fi

# -- model files ----------------------------------------------------------------------------------------
OV_FORMATS=fp32,int8,int4
GGUF_TYPES=f32,q8_0,q4_k_m
[ "${SKIP_OV:-}" = 1 ] && OV_FORMATS=
[ "${SKIP_LLAMACPP:-}" = 1 ] && GGUF_TYPES=
for CHECKPOINT in "$@"; do
  "$PYTHON" -m qwen3_rerank.bench.peers prepare "$CHECKPOINT" --ov "$OV_FORMATS" --gguf "$GGUF_TYPES"
done
"$PYTHON" -m qwen3_rerank.bench.peers paths
