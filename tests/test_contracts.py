"""Explicit contracts between the library, the engine and the score graph: the score-graph record
that the engine is built from, and the whitelist of session options."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest

from qwen3_rerank import InputError, ModelLoadError, Reranker
from qwen3_rerank.engine import SESSION_OPTIONS, OnnxEngine
from qwen3_rerank.files import resolve_model
from qwen3_rerank.prompt_tokenizer import PromptTokenizer
from qwen3_rerank.score_graph import OUTPUT, SEQ_CLS_OUTPUT, ScoreGraph, ensure_score_graph, file_sha256

QUERY = "What is the capital of France?"
DOCS = ["Paris is the capital of France.", "Berlin is in Germany.", "", "word " * 40, "Lyon is in France."]


@pytest.fixture
def model_copy(tmp_path, tiny_model_dir):
    """A private copy of the tiny model without any score graph, so each test builds its own."""
    folder = tmp_path / "m"
    shutil.copytree(tiny_model_dir, folder)
    for stale in folder.glob("onnx/*.score*"):
        stale.unlink()
    return folder


def _ids(folder):
    files = resolve_model(folder, "fp32")
    tokenizer = PromptTokenizer.from_file(files.tokenizer, pad_token=files.pad_token)
    return files, tokenizer


def test_ensure_score_graph_returns_its_record(model_copy):
    files, tokenizer = _ids(model_copy)
    graph = ensure_score_graph(files.onnx, tokenizer.yes_id, tokenizer.no_id)
    assert isinstance(graph, ScoreGraph)
    assert graph.path == files.onnx.with_name("model.score.onnx") and graph.path.is_file()
    assert graph.output == OUTPUT
    assert graph.max_batch_with_past is None  # the fp32 export has no GroupQueryAttention
    assert graph.source_sha256 == file_sha256(files.onnx)
    # a second call finds the same graph, and the record reads back the same from its sidecar
    assert ensure_score_graph(files.onnx, tokenizer.yes_id, tokenizer.no_id) == graph
    assert ScoreGraph.from_record(graph.path) == graph
    with pytest.raises(dataclasses.FrozenInstanceError):
        graph.max_batch_with_past = 1  # type: ignore[misc]


def test_record_says_when_a_past_needs_a_batch_of_one(model_copy):
    files, tokenizer = _ids(model_copy)
    graph = ensure_score_graph(files.onnx, tokenizer.yes_id, tokenizer.no_id)
    sidecar = graph.path.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    meta["group_query_attention"] = True
    sidecar.write_text(json.dumps(meta))
    record = ScoreGraph.from_record(graph.path)
    assert record.max_batch_with_past == 1
    # the engine takes the limit from the record at construction; nothing patches it later
    assert OnnxEngine(record, config=files.config).max_batch_with_past == 1
    assert OnnxEngine(graph.path, config=files.config).max_batch_with_past is None  # a bare path: no record


def test_engine_from_the_record_scores_as_from_pretrained(model_copy):
    files, tokenizer = _ids(model_copy)
    loaded = Reranker.from_pretrained(model_copy, dtype="fp32", threads=1)
    assert loaded.engine.is_score_graph and loaded.prefix_reuse
    graph = ensure_score_graph(files.onnx, tokenizer.yes_id, tokenizer.no_id)
    built = Reranker(OnnxEngine(graph, config=files.config, threads=1), tokenizer, files=files)
    assert built.engine.path == loaded.engine.path == graph.path
    plain = Reranker.from_pretrained(model_copy, dtype="fp32", score_graph=False, prefix_reuse=False)
    expected = plain.score(QUERY, DOCS, raw=True)
    np.testing.assert_allclose(built.score(QUERY, DOCS, raw=True), loaded.score(QUERY, DOCS, raw=True), atol=1e-6)
    np.testing.assert_allclose(built.score(QUERY, DOCS, raw=True), expected, atol=1e-4)


def test_engine_refuses_a_record_that_names_another_output(model_copy):
    files, tokenizer = _ids(model_copy)
    graph = ensure_score_graph(files.onnx, tokenizer.yes_id, tokenizer.no_id)
    with pytest.raises(ModelLoadError, match=SEQ_CLS_OUTPUT):
        OnnxEngine(dataclasses.replace(graph, output=SEQ_CLS_OUTPUT), config=files.config)


def test_no_record_is_a_clear_error(tmp_path):
    from qwen3_rerank.score_graph import ScoreGraphError

    with pytest.raises(ScoreGraphError, match="no readable score-graph record"):
        ScoreGraph.from_record(tmp_path / "x.score.onnx")


def test_unknown_session_option_names_the_allowed_ones(tiny_model_dir):
    source = tiny_model_dir / "onnx" / "model.onnx"
    with pytest.raises(InputError) as info:
        OnnxEngine(source, session_options={"intra_op_threads": 2})
    message = str(info.value)
    assert "'intra_op_threads'" in message and "intra_op_num_threads" in message
    assert all(name in message for name in SESSION_OPTIONS)
    with pytest.raises(InputError, match="unknown session option"):
        Reranker.from_pretrained(tiny_model_dir, dtype="fp32", session_options={"add_free_dimension_override": 1})


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"enable_mem_pattern": "yes"}, "enable_mem_pattern"),
        ({"graph_optimization_level": "ORT_FASTEST"}, "ORT_FASTEST"),
        ({"config_entries": 3}, "config_entries"),
    ],
)
def test_bad_session_option_values_are_input_errors(tiny_model_dir, options, match):
    with pytest.raises(InputError, match=match):
        OnnxEngine(tiny_model_dir / "onnx" / "model.onnx", session_options=options)


def test_whitelisted_session_options_reach_the_session(tiny_model_dir, tmp_path):
    optimized = tmp_path / "opt.onnx"
    rr = Reranker.from_pretrained(
        tiny_model_dir,
        dtype="fp32",
        threads=2,
        session_options={
            "intra_op_num_threads": 1,
            "enable_mem_pattern": False,
            "graph_optimization_level": "ORT_ENABLE_BASIC",
            "optimized_model_filepath": str(optimized),
            "config_entries": {"session.disable_prepacking": "1"},
        },
    )
    options = rr.engine.session.get_session_options()
    assert options.intra_op_num_threads == 1  # applied after threads=2
    assert options.enable_mem_pattern is False
    assert str(options.graph_optimization_level).endswith("ORT_ENABLE_BASIC")
    assert options.get_session_config_entry("session.disable_prepacking") == "1"
    assert optimized.is_file()
    assert np.isfinite(rr.score(QUERY, DOCS[:2])).all()


def test_a_score_graph_that_does_not_load_falls_back_to_the_full_graph(model_copy, monkeypatch, caplog):
    """A score graph ONNX Runtime refuses costs speed, not the model: one warning, full graph."""
    import logging

    import qwen3_rerank.reranker as reranker_module

    broken = model_copy / "onnx" / "broken.score.onnx"
    broken.write_bytes(b"not a protobuf")
    monkeypatch.setattr(reranker_module, "score_graph_for", lambda *a, **k: ScoreGraph(path=broken))
    with caplog.at_level(logging.WARNING, logger="qwen3_rerank"):
        reranker = Reranker.from_pretrained(model_copy, dtype="fp32", threads=2)
    assert not reranker.engine.is_score_graph
    assert any("its score graph does not load" in r.getMessage() for r in caplog.records)
    plain = Reranker.from_pretrained(model_copy, dtype="fp32", threads=2, score_graph=False)
    np.testing.assert_allclose(
        reranker.score("What is the capital of France?", ["Paris.", "Berlin."], raw=True),
        plain.score("What is the capital of France?", ["Paris.", "Berlin."], raw=True),
        rtol=0,
        atol=1e-6,
    )
