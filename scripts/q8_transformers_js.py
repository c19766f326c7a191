"""How far each q8 runtime is from fp32: Transformers.js (the model card's code) and ours.

Transformers.js runs the published per-tensor graph on one whole prompt at a time; ours runs the
score graph with the shared-prefix pass and batches (the default), or the file as it is. Each is
compared with our fp32 variant of the same export (equal to the PyTorch recipe within 1e-5 on the
gap, tests/test_parity.py). Needs node and tests/js/node_modules (`npm ci` in tests/js).

    PYTHONPATH=src python scripts/q8_transformers_js.py --model EXPORTED_DIR --out docs/benchmarks/q8-rows/js-tiny.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from qwen3_rerank import Reranker
from qwen3_rerank.prompt import CARD

JS_DIR = Path(__file__).resolve().parent.parent / "tests" / "js"
QUERY = "What is the capital of France?"


def documents(count: int, seed: int) -> list[str]:
    """Documents of 5-120 words from a small vocabulary (seeded: every runtime gets the same)."""
    rng = np.random.default_rng(seed)
    words = "Paris capital France the is of Berlin river tower 1889 city Seine museum old bridge north".split()
    return [" ".join(rng.choice(words, int(rng.integers(5, 120)))) for _ in range(count)]


def transformers_js_gaps(model: Path, docs: list[str]) -> np.ndarray:
    """Gaps from Transformers.js running the card's code (CARD prompt, one prompt per call)."""
    with tempfile.TemporaryDirectory() as tmp:
        prompts = Path(tmp) / "prompts.json"
        prompts.write_text(json.dumps([CARD.format_prompt(QUERY, d) for d in docs]), encoding="utf-8")
        proc = subprocess.run(
            ["node", str(JS_DIR / "score.mjs"), str(model), "q8", str(prompts)],
            cwd=JS_DIR,
            capture_output=True,
            text=True,
            check=True,
        )
    return np.array([r["gap"] for r in json.loads(proc.stdout.strip().splitlines()[-1])])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="exported folder with fp32 and q8")
    parser.add_argument("--docs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    docs = documents(args.docs, args.seed)

    def ours(dtype: str, **kw: object) -> np.ndarray:
        reranker = Reranker.from_pretrained(args.model, dtype=dtype, threads=2, template="card", **kw)  # type: ignore[arg-type]
        return np.asarray(reranker.score(QUERY, docs, raw=True))

    fp32 = ours("fp32")
    runs = {
        "transformers.js q8 (card code, whole prompt, per-tensor)": transformers_js_gaps(args.model, docs),
        "ours q8, file as it is (score_graph=False, prefix_reuse=False, batch 1)": ours(
            "q8", score_graph=False, prefix_reuse=False, batch_size=1
        ),
        "ours q8 default (score graph, per-token activations, prefix reuse, batches)": ours("q8"),
        "ours q8 per-tensor score graph (q8_activations='tensor')": ours("q8", q8_activations="tensor"),
    }
    sigmoid = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    result = {
        "model": str(args.model),
        "documents": args.docs,
        "fp32_abs_gap_max": float(np.abs(fp32).max()),
        "runs": {
            name: {
                "max_abs_gap_error": float(np.abs(g - fp32).max()),
                "mean_abs_gap_error": float(np.abs(g - fp32).mean()),
                "max_abs_probability_error": float(np.abs(sigmoid(g) - sigmoid(fp32)).max()),
            }
            for name, g in runs.items()
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
