"""Print the measured parity figures of the runtime against the official PyTorch recipe.

Builds the tiny random-weight checkpoint of the tests, exports it, and reports max |Δ| of the
yes−no logit gap for each scenario of the parity tests. Usage:

    python scripts/parity_report.py [--tokenizer ../shared/qwen3-tokenizer] [--out report.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokenizer", default=str(REPO.parent / "shared" / "qwen3-tokenizer"))
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    from conftest import write_model_dir
    from reference import OfficialRecipe
    from test_parity import DOCS, QUERY

    from qwen3_rerank import Reranker
    from qwen3_rerank.export.random_model import make_random_checkpoint

    work = Path(tempfile.mkdtemp(prefix="parity-"))
    checkpoint = make_random_checkpoint(work / "ckpt", args.tokenizer, size="tiny", seed=0)
    model_dir = write_model_dir(checkpoint, work / "onnx")
    nopast_dir = write_model_dir(checkpoint, work / "onnx-nopast", with_past=False)
    official = OfficialRecipe(checkpoint)
    instruction = "Given a trivia question, find the sentence that answers it"
    report = {}

    def gap_delta(ours, ref):
        return float(np.max(np.abs(np.asarray(ours) - np.asarray(ref))))

    for name, kwargs in {
        "plain path (full graph, left padding)": dict(score_graph=False, prefix_reuse=False),
        "score graph (right padding)": dict(prefix_reuse=False),
        "score graph + prefix reuse (default)": {},
    }.items():
        rr = Reranker.from_pretrained(model_dir, dtype="fp32", **kwargs)
        report[name] = {
            "mixed batch": gap_delta(rr.score(QUERY, DOCS, raw=True), official.gaps(QUERY, DOCS)),
            "custom instruction": gap_delta(
                rr.score(QUERY, DOCS, raw=True, instruction=instruction), official.gaps(QUERY, DOCS, instruction)
            ),
            "probabilities": gap_delta(rr.score(QUERY, DOCS), official.scores(QUERY, DOCS)),
        }
        short = Reranker.from_pretrained(model_dir, dtype="fp32", max_length=90, **kwargs)
        report[name]["cut by max_length=90"] = gap_delta(
            short.score(QUERY, DOCS, raw=True), OfficialRecipe(checkpoint, max_length=90).gaps(QUERY, DOCS)
        )
        single = Reranker.from_pretrained(model_dir, dtype="fp32", batch_size=1, **kwargs)
        report[name]["batched vs one at a time"] = gap_delta(
            rr.score(QUERY, DOCS, raw=True), [single.score(QUERY, [d], raw=True)[0] for d in DOCS]
        )
    nopast = Reranker.from_pretrained(nopast_dir, dtype="fp32")
    report["graph without past_key_values"] = {
        "mixed batch": gap_delta(nopast.score(QUERY, DOCS, raw=True), official.gaps(QUERY, DOCS))
    }
    report["spread of the reference gaps (std)"] = float(np.std(official.gaps(QUERY, DOCS)))
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
