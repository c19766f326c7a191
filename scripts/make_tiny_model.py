"""Build the tiny random-weight test model (as ``tests/conftest.py`` does) for the benchmark scripts.

    python scripts/make_tiny_model.py OUT_DIR [--tokenizer ../shared/qwen3-tokenizer] [--seed 0]

A Qwen3 checkpoint with random weights of the ``tiny`` size and its fp32 ONNX export in the
published layout (``OUT_DIR/onnx/model.onnx``). Needs the ``export`` extra (torch).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--tokenizer", type=Path, default=REPO.parent / "shared" / "qwen3-tokenizer")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from qwen3_rerank.export.random_model import make_random_checkpoint
    from qwen3_rerank.export.torch_export import export_model, load_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = make_random_checkpoint(Path(tmp) / "tiny", args.tokenizer, size="tiny", seed=args.seed)
        args.out.mkdir(parents=True, exist_ok=True)
        for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
            if (checkpoint / name).is_file():
                shutil.copyfile(checkpoint / name, args.out / name)
        export_model(load_checkpoint(checkpoint), args.out / "onnx" / "model.onnx", with_past=True)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
