"""The score graph run one decoder layer at a time, and long rows fed through it in slices
(qwen3_rerank.layered): the scores are the one-pass scores and the reference recipe's."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given
from hypothesis import strategies as st

from qwen3_rerank import InputError, Reranker
from qwen3_rerank.engine import OnnxEngine, _layered_allowed
from qwen3_rerank.layered import LayeredSession, StageSplitError, plan_slices, split_stages
from qwen3_rerank.score_graph import OUTPUT, ScoreGraph

QUERY = "Which river flows through Paris?"
DOCS = [
    "The Seine flows through Paris.",
    "",
    "Rivers of Europe: " + "the Danube, the Rhine, the Loire, the Seine and the Thames. " * 9,
    "A long one. " + "Paris sits on the Seine, and its bridges are famous; " * 30,
    "東京は日本の首都です。 🙂",
]


def load(model_dir, **kw):
    return Reranker.from_pretrained(model_dir, dtype=kw.pop("dtype", "fp32"), threads=1, **kw)


@pytest.fixture(scope="module")
def one_piece(tiny_model_dir):
    reranker = load(tiny_model_dir, slice_tokens=None)
    assert isinstance(reranker.engine.session, ort.InferenceSession)
    return reranker


class Recorder:
    """Wraps a stage's ONNX Runtime session and keeps the ``input_ids`` and mask width of each run."""

    def __init__(self, session):
        self.session = session
        self.runs: list[tuple[list[int], int]] = []

    def run(self, names, feed):
        self.runs.append((feed["input_ids"][0].tolist(), feed["attention_mask"].shape[1]))
        return self.session.run(names, feed)


@given(length=st.integers(1, 300), slice_tokens=st.integers(1, 64))
def test_slices_cover_the_row_in_order(length, slice_tokens):
    slices = plan_slices(length, slice_tokens)
    assert slices[0][0] == 0 and slices[-1][1] == length
    assert all(a < b <= a + slice_tokens for a, b in slices)
    assert all(prev[1] == nxt[0] for prev, nxt in zip(slices, slices[1:], strict=False))
    assert len(slices) == -(-length // slice_tokens)


def test_slices_need_positive_sizes():
    with pytest.raises(ValueError):
        plan_slices(0, 4)
    with pytest.raises(ValueError):
        plan_slices(4, 0)


def test_one_stage_per_layer_each_with_its_own_cache(tiny_model_dir):
    engine = load(tiny_model_dir, slice_tokens=16).engine
    session = engine._layered()
    assert isinstance(session, LayeredSession) and engine.session is session and engine.slice_tokens == 16
    layers = engine.past_inputs[-1].name.split(".")[1]
    assert [s.layer for s in session.stages] == list(range(int(layers) + 1))
    for stage in session.stages:
        assert stage.past == (f"past_key_values.{stage.layer}.key", f"past_key_values.{stage.layer}.value")
        assert set(stage.present) <= set(stage.outputs)
        # another layer's past is read for its shape only, answered by this layer's own
        reads = {name for name in stage.inputs if name.startswith("past_key_values.")}
        assert reads <= set(stage.past)
    assert OUTPUT in session.stages[-1].outputs
    assert all(OUTPUT not in s.outputs for s in session.stages[:-1])
    # the engine sees the whole graph's inputs and outputs
    assert [i.name for i in session.get_inputs()] == [i.name for i in ort_inputs(engine.path)]


def test_rows_over_the_threshold_run_in_slices_of_at_most_max_slice_tokens(tiny_model_dir):
    """``slice_tokens`` is when a row is sliced; a slice never holds more than MAX_SLICE_TOKENS."""
    from qwen3_rerank.layered import DEFAULT_SLICE_TOKENS, MAX_SLICE_TOKENS

    assert DEFAULT_SLICE_TOKENS > MAX_SLICE_TOKENS  # rows of a few hundred tokens run in one pass
    session = load(tiny_model_dir, slice_tokens=16).engine._layered()
    threshold = MAX_SLICE_TOKENS + 100

    def feed(n):
        return {"input_ids": np.ones((1, n), np.int64), "attention_mask": np.ones((1, n), np.int64)}

    assert session.slices_for(feed(threshold), threshold) is None
    slices = session.slices_for(feed(threshold + 700), threshold)
    assert slices == plan_slices(threshold + 700, MAX_SLICE_TOKENS) and len(slices) == 3
    assert session.slices_for(feed(40), 16) == plan_slices(40, 16)


def ort_inputs(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_inputs()


@pytest.mark.parametrize("slice_tokens", [5, 16, 64])
def test_sliced_rows_score_as_one_pass_and_as_the_reference(tiny_model_dir, one_piece, official, slice_tokens):
    layered = load(tiny_model_dir, slice_tokens=slice_tokens)
    session = layered.engine._layered()
    recorders = [Recorder(s) for s in session._sessions]
    session._sessions = recorders
    sliced_rows: list[tuple[list[int], int]] = []
    run_sliced = session.run_sliced

    def spy(names, feeds, slices):
        for recorder in recorders:
            recorder.runs.clear()
        out = run_sliced(names, feeds, slices)
        ids, mask_width = feeds["input_ids"][0].tolist(), feeds["attention_mask"].shape[1]
        past = mask_width - len(ids)
        # every stage ran the row's tokens once, in order, one slice at a time, each slice with
        # a mask over the past and the slices before it: the token ids never change
        for recorder in recorders:
            assert [tok for run_ids, _ in recorder.runs for tok in run_ids] == ids
            assert [width for _, width in recorder.runs] == [past + end for _, end in slices]
            assert all(len(run_ids) <= slice_tokens for run_ids, _ in recorder.runs)
        sliced_rows.append((ids, past))
        return out

    session.run_sliced = spy
    request = layered.prepare(QUERY, DOCS)
    for prefix_reuse in (False, True):
        layered.prefix_reuse = one_piece.prefix_reuse = prefix_reuse
        sliced_rows.clear()
        got = np.array(layered.score(QUERY, DOCS, raw=True))
        np.testing.assert_allclose(got, one_piece.score(QUERY, DOCS, raw=True), rtol=0, atol=1e-5)
        np.testing.assert_allclose(got, official.gaps(QUERY, DOCS), rtol=0, atol=1e-5)
        # exactly the rows longer than a slice ran in slices, after the shared prefix with reuse
        past = request.shared_prefix if prefix_reuse else 0
        long = sorted(list(seq[past:]) for seq in request.sequences if len(seq) - past > slice_tokens)
        assert long and sorted(ids for ids, _ in sliced_rows) == long
        assert {p for _, p in sliced_rows} == {past}


def test_slices_only_for_one_unpadded_row_of_known_inputs(tiny_model_dir):
    engine = load(tiny_model_dir, slice_tokens=4).engine
    session = engine._layered()
    ids = np.arange(100, 110, dtype=np.int64)[None]
    feed = engine.feeds(ids, np.ones_like(ids))
    assert session.slices_for(feed, 4) == [(0, 4), (4, 8), (8, 10)]
    assert session.slices_for(feed, 10) is None  # fits one slice
    two = engine.feeds(np.repeat(ids, 2, axis=0), np.ones((2, 10), np.int64))
    assert session.slices_for(two, 4) is None  # more than one row
    padded = np.ones_like(ids)
    padded[0, -3:] = 0
    assert session.slices_for(engine.feeds(ids, padded), 4) is None
    assert session.slices_for({**feed, "token_type_ids": ids}, 4) is None  # an input it cannot cut


def test_sliced_row_after_a_prefix_cache_equals_the_whole_row(tiny_model_dir):
    engine = load(tiny_model_dir, slice_tokens=6).engine
    row = list(range(300, 341))
    whole = engine.gaps(np.array([row]), np.ones((1, len(row)), np.int64), 1, 2)
    assert isinstance(engine.session, LayeredSession)
    cache = engine.prefix_cache(row[:9])
    rest = np.array([row[9:]])
    after = engine.gaps(rest, np.ones((1, len(row)), np.int64), 1, 2, past=cache)
    plain = OnnxEngine(engine.path, slice_tokens=None).gaps(np.array([row]), np.ones((1, len(row)), np.int64), 1, 2)
    np.testing.assert_allclose(after, whole, rtol=0, atol=1e-5)
    np.testing.assert_allclose(whole, plain, rtol=0, atol=1e-5)


def test_short_rows_keep_the_one_graph_session_until_a_long_row_comes(tiny_model_dir, one_piece):
    reranker = load(tiny_model_dir, slice_tokens=64)
    short = [d for d in DOCS if len(d) < 100]
    before = reranker.score(QUERY, short, raw=True)
    assert isinstance(reranker.engine.session, ort.InferenceSession)
    np.testing.assert_allclose(reranker.score(QUERY, DOCS, raw=True), one_piece.score(QUERY, DOCS, raw=True), atol=1e-5)
    assert isinstance(reranker.engine.session, LayeredSession)
    np.testing.assert_allclose(reranker.score(QUERY, short, raw=True), before, rtol=0, atol=1e-5)


def test_graphs_that_cannot_be_cut_run_in_one_piece(
    tiny_model_dir, tiny_model_nopast_dir, one_piece, monkeypatch, caplog
):
    import logging

    from qwen3_rerank import layered

    nopast = load(tiny_model_nopast_dir, slice_tokens=8)  # no KV cache: nothing to slice with
    assert nopast.engine.slice_tokens is None and nopast.engine._layered() is None
    with pytest.raises(StageSplitError, match="no past_key_values"):
        split_stages(onnx.load(str(nopast.engine.path), load_external_data=False).graph)

    def refuse(graph):
        raise StageSplitError("a shape this module does not cut")

    monkeypatch.setattr(layered, "split_stages", refuse)
    reranker = load(tiny_model_dir, slice_tokens=8)
    with caplog.at_level(logging.INFO, logger="qwen3_rerank"):
        got = reranker.score(QUERY, DOCS, raw=True)
    assert "runs in one piece: a shape this module does not cut" in caplog.text
    assert isinstance(reranker.engine.session, ort.InferenceSession) and reranker.engine.slice_tokens is None
    np.testing.assert_allclose(got, one_piece.score(QUERY, DOCS, raw=True), rtol=0, atol=1e-5)


def test_layered_only_on_the_cpu_without_io_binding_profiling_or_saved_graphs():
    cpu = ["CPUExecutionProvider"]
    assert _layered_allowed(cpu, False, None)
    assert not _layered_allowed(["CUDAExecutionProvider", *cpu], False, None)
    assert not _layered_allowed(cpu, True, None)
    assert not _layered_allowed(cpu, False, {"enable_profiling": True})
    assert not _layered_allowed(cpu, False, {"optimized_model_filepath": "x.onnx"})


def test_slice_tokens_must_be_positive(tiny_model_dir):
    with pytest.raises(InputError, match="slice_tokens"):
        load(tiny_model_dir, slice_tokens=0)
    with pytest.raises(InputError, match="slice_tokens"):
        OnnxEngine(ScoreGraph.from_record(load(tiny_model_dir, slice_tokens=None).engine.path), slice_tokens=-1)


@pytest.mark.parametrize("dtype", ["fp16", "q8", "q4"])
def test_sliced_rows_of_every_variant_score_as_one_pass(exported, dtype):
    """q8 and q4 quantise activations per token and fp16 runs its attention in float32, so a
    slice boundary changes nothing but the order of the attention sums."""
    whole = load(exported, dtype=dtype, slice_tokens=None)
    sliced = load(exported, dtype=dtype, slice_tokens=16)
    got = sliced.score(QUERY, DOCS, raw=True)
    assert isinstance(sliced.engine.session, LayeredSession)
    np.testing.assert_allclose(got, whole.score(QUERY, DOCS, raw=True), rtol=0, atol=1e-5)
