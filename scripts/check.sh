#!/usr/bin/env bash
# Lint, format and type checks, as configured in pyproject.toml ([tool.ruff], [tool.mypy]):
#
#   scripts/check.sh
#
# Runs every check even when an earlier one fails, then exits non-zero if any failed. Needs ruff and
# mypy on PATH (or RUFF / MYPY set to them) and, for mypy, the packages of the `test` extra installed
# (their type information is read).
set -uo pipefail
cd "$(dirname "$0")/.."
RUFF=${RUFF:-ruff}
MYPY=${MYPY:-mypy}

failed=()
run() {
    echo "+ $*" >&2
    "$@" || failed+=("$*")
}

run "$RUFF" check src tests scripts
run "$RUFF" format --check src tests scripts
run "$MYPY"  # the files in [tool.mypy] (src/qwen3_rerank), strict

if ((${#failed[@]})); then
    printf 'check.sh: failed: %s\n' "${failed[@]}" >&2
    exit 1
fi
echo "check.sh: all checks passed" >&2
