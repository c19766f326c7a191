"""Long documents: a relevant sentence buried at the end is found by chunking, missed by truncation.

The needle model is a second torch export, so the tests on it are ``slow``; the window and option
checks run in the fast tier (and the window/aggregation bookkeeping is unit-tested on a fake engine
in test_request_builder.py and test_reranker_facade.py).
"""

from __future__ import annotations

from itertools import pairwise

import pytest

from qwen3_rerank import InputError, Reranker
from qwen3_rerank.chunking import split_windows
from qwen3_rerank.prompt import format_prompt
from qwen3_rerank.prompt_tokenizer import PromptTokenizer

QUERY = "Which mountain is covered in snow?"
FILLER = "The committee met on Tuesday to discuss the budget for the next year. " * 40
SENTENCE = "The summit wears a ☃ all winter."
LONG_DOC = FILLER + SENTENCE
SHORT_LENGTH = 256


@pytest.fixture(scope="module")
def needle_model(tmp_path_factory, tokenizer_dir):
    from conftest import write_model_dir
    from needle import make_needle_checkpoint, pick_needle_id

    tok = PromptTokenizer.from_file(tokenizer_dir / "tokenizer.json")
    haystack = format_prompt(QUERY, FILLER + "The summit is bare all winter.")
    needle_id = pick_needle_id(tok.tokenizer, format_prompt(QUERY, LONG_DOC), haystack)
    base = tmp_path_factory.mktemp("needle")
    checkpoint = make_needle_checkpoint(base / "ckpt", tokenizer_dir, needle_id, tok.yes_id)
    return write_model_dir(checkpoint, base / "onnx-model")


@pytest.fixture(scope="module")
def short_context(needle_model):
    return Reranker.from_pretrained(needle_model, dtype="fp32", max_length=SHORT_LENGTH)


@pytest.mark.slow  # the needle model: a second torch export
def test_the_fixture_model_reads_content(needle_model):
    rr = Reranker.from_pretrained(needle_model, dtype="fp32")
    with_needle, without = rr.score(QUERY, [SENTENCE, "The summit is bare all winter."])
    assert with_needle > 0.999 and abs(without - 0.5) < 1e-6


@pytest.mark.slow  # the needle model: a second torch export
def test_truncation_misses_the_buried_sentence(short_context):
    request = short_context.prepare(QUERY, [LONG_DOC])
    assert request.truncated == (True,)
    (score,) = short_context.score(QUERY, [LONG_DOC])
    assert abs(score - 0.5) < 1e-6


@pytest.mark.slow  # the needle model: a second torch export
def test_chunking_finds_the_buried_sentence(short_context):
    distractor = FILLER + "The summit is bare all winter."
    results = short_context.rerank(QUERY, [distractor, LONG_DOC], chunking="max", chunk_tokens=150, chunk_overlap=20)
    assert [r.index for r in results] == [1, 0]
    best, other = results
    assert best.score > 0.999 and abs(other.score - 0.5) < 1e-6
    chunk = best.best_chunk
    assert chunk is not None and chunk.index > 0
    assert SENTENCE in LONG_DOC[chunk.char_start : chunk.char_end]
    assert chunk.token_end - chunk.token_start <= 150


@pytest.mark.slow  # the needle model: a second torch export
def test_aggregations(short_context):
    kwargs = dict(chunk_tokens=150, chunk_overlap=20)
    (first,) = short_context.score(QUERY, [LONG_DOC], chunking="first", **kwargs)
    (mean,) = short_context.score(QUERY, [LONG_DOC], chunking="mean", **kwargs)
    (best,) = short_context.score(QUERY, [LONG_DOC], chunking="max", **kwargs)
    request = short_context.prepare(QUERY, [LONG_DOC], chunking="mean", **kwargs)
    windows = request.window_counts[0]
    assert windows >= 3
    assert abs(first - 0.5) < 1e-6 and best > 0.999
    assert abs(mean - (best + (windows - 1) * 0.5) / windows) < 1e-4  # exactly one window has it


def test_windows_cover_the_document_with_overlap(tokenizer_dir):
    tok = PromptTokenizer.from_file(tokenizer_dir / "tokenizer.json").tokenizer
    encoding = tok.encode(LONG_DOC, add_special_tokens=False)
    windows = split_windows(encoding.offsets, len(LONG_DOC), 100, 25)
    assert windows[0].token_start == 0 and windows[-1].token_end == len(encoding.ids)
    for a, b in pairwise(windows):
        assert a.token_end - b.token_start == 25
        assert b.char_start < a.char_end
    # each window's text is exactly the text of its tokens: every token of the window lies inside its
    # character span, and the tokens on either side of the window lie outside it
    offsets = encoding.offsets
    for w in windows:
        assert all(
            w.char_start <= offsets[t][0] and offsets[t][1] <= w.char_end for t in range(w.token_start, w.token_end)
        )
        if w.token_start:
            assert offsets[w.token_start - 1][0] < w.char_start
        if w.token_end < len(offsets):
            assert w.char_end <= offsets[w.token_end][0]
    assert windows[0].char_start == 0 and windows[-1].char_end == len(LONG_DOC)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(chunking="median"), "unknown chunking"),
        (dict(chunking="max", chunk_tokens=0), "chunk_tokens"),
        (dict(chunking="max", chunk_tokens=10, chunk_overlap=10), "chunk_overlap"),
    ],
)
def test_bad_chunking_options(reranker, kwargs, message):
    with pytest.raises(InputError, match=message):
        reranker.score(QUERY, [LONG_DOC], **kwargs)
