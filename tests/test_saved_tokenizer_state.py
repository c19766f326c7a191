"""A checkpoint whose ``tokenizer.json`` carries saved padding and truncation state scores right.

``transformers`` writes the state of the last call into ``tokenizer.json`` on ``save_pretrained``
(``"padding": {"strategy": "BatchLongest", "direction": "Left", ...}``, ``"truncation": {...}``),
so a fine-tune saved after a batched call has it. The reference recipe ignores it (every call sets
padding and truncation explicitly); the ``tokenizers`` library applies it to every ``encode_batch``.
These tests build such a checkpoint the way users do and compare with the clean one and with the
PyTorch recipe.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from qwen3_rerank.prompt import format_content
from qwen3_rerank.prompt_tokenizer import PromptTokenizer

QUERY = "What is the capital of France?"
DOCS = [
    "Paris is the capital of France.",
    "Berlin.",
    "東京は日本の首都です。 Ünïcödé façade 🙂👍🏽",
    "first line\nsecond line\r\n\n  indented\tTabbed " * 3,
    "word " * 60,
    "",
]
SAVED_MAX_LENGTH = 12  # far below the documents' lengths


def _save_with_state(source: Path, out: Path) -> Path:
    """Copy ``source`` and re-save its tokenizer after a padded, truncated batch call."""
    from transformers import AutoTokenizer

    shutil.copytree(source, out, ignore=shutil.ignore_patterns("*.score.*"))
    tokenizer = AutoTokenizer.from_pretrained(str(source), padding_side="left")
    tokenizer(DOCS, padding=True, truncation=True, max_length=SAVED_MAX_LENGTH)
    tokenizer.save_pretrained(str(out))
    saved = json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))
    assert saved["padding"] and saved["padding"]["direction"] == "Left", "the fixture must carry padding state"
    assert saved["truncation"] and saved["truncation"]["max_length"] == SAVED_MAX_LENGTH
    return out


@pytest.fixture(scope="module")
def stateful_checkpoint(tmp_path_factory, tiny_checkpoint) -> Path:
    return _save_with_state(tiny_checkpoint, tmp_path_factory.mktemp("stateful") / "ckpt")


@pytest.fixture(scope="module")
def stateful_model_dir(tmp_path_factory, tiny_model_dir) -> Path:
    """The tiny ONNX model folder, its tokenizer re-saved with padding and truncation state."""
    return _save_with_state(tiny_model_dir, tmp_path_factory.mktemp("stateful") / "model")


def _ids(tokenizer: PromptTokenizer, docs: list[str], max_length: int = 8192) -> list[list[int]]:
    return tokenizer.encode_contents([format_content(QUERY, d) for d in docs], max_length)


def test_saved_state_never_changes_ids(tiny_model_dir, stateful_model_dir):
    clean = PromptTokenizer.from_file(tiny_model_dir / "tokenizer.json")
    stateful = PromptTokenizer.from_file(stateful_model_dir / "tokenizer.json")
    assert _ids(stateful, DOCS) == _ids(clean, DOCS)  # a batch
    for doc in DOCS:  # one at a time
        assert _ids(stateful, [doc]) == _ids(clean, [doc])
    assert _ids(stateful, DOCS, max_length=90) == _ids(clean, DOCS, max_length=90)  # our own cut
    long_doc = DOCS[4]
    assert stateful.cut_text(long_doc, 30) == clean.cut_text(long_doc, 30)
    assert stateful.cut_text_start(long_doc, 30) == clean.cut_text_start(long_doc, 30)
    assert stateful.prefix_ids == clean.prefix_ids and stateful.suffix_ids == clean.suffix_ids


def test_saved_state_never_changes_chunks(tiny_model_dir, stateful_model_dir):
    from qwen3_rerank import Reranker

    kw = dict(dtype="fp32", threads=1, score_graph=False)
    clean = Reranker.from_pretrained(tiny_model_dir, **kw)
    stateful = Reranker.from_pretrained(stateful_model_dir, **kw)
    args = dict(chunking="max", chunk_tokens=16, chunk_overlap=4)
    a = clean.prepare(QUERY, DOCS, **args)
    b = stateful.prepare(QUERY, DOCS, **args)
    assert b.sequences == a.sequences and b.chunks == a.chunks and b.window_counts == a.window_counts
    assert max(a.window_counts) > 1  # the long documents really were split


@pytest.mark.slow  # the PyTorch recipe on a second checkpoint; the ids tests above run in the fast tier
@pytest.mark.parametrize("fast", [True, False], ids=["score-graph", "plain"])
def test_batched_scores_equal_recipe_with_saved_state(stateful_model_dir, stateful_checkpoint, fast):
    from reference import OfficialRecipe

    from qwen3_rerank import Reranker

    reranker = Reranker.from_pretrained(
        stateful_model_dir, dtype="fp32", threads=2, score_graph=fast, prefix_reuse=fast
    )
    expected = OfficialRecipe(stateful_checkpoint).gaps(QUERY, DOCS)
    got = reranker.score(QUERY, DOCS, raw=True)
    assert max(abs(a - b) for a, b in zip(got, expected, strict=True)) < 1e-5


@pytest.mark.slow
def test_export_verification_passes_with_saved_state(tmp_path, stateful_checkpoint):
    from qwen3_rerank.export.pipeline import export_checkpoint

    result = export_checkpoint(stateful_checkpoint, tmp_path / "out", dtypes="fp32")
    fp32 = result.report["variants"]["fp32"]
    assert result.report["ok"], result.report["summary"]
    assert fp32["max_abs_gap_diff"] < 1e-4
