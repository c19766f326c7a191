"""Model folders and Hub repos: the published layout, and one clear error for each problem."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from qwen3_rerank import ModelLoadError, Reranker
from qwen3_rerank.files import DTYPE_FILES, resolve_model


def copy_model(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_dtype_names_follow_transformers_js():
    assert DTYPE_FILES["fp32"] == "model.onnx"
    assert DTYPE_FILES["fp16"] == "model_fp16.onnx"
    assert DTYPE_FILES["q8"] == "model_quantized.onnx"
    assert DTYPE_FILES["q4"] == "model_q4.onnx"
    assert {"int8", "uint8", "q4f16", "bnb4"} <= set(DTYPE_FILES)


def test_missing_folder():
    with pytest.raises(ModelLoadError, match="model folder not found: ./no/such/folder"):
        resolve_model("./no/such/folder", "fp32")


def test_unknown_dtype(tiny_model_dir):
    with pytest.raises(ModelLoadError, match="unknown dtype 'q3'"):
        resolve_model(tiny_model_dir, "q3")


def test_missing_variant_lists_available(tiny_model_dir):
    with pytest.raises(ModelLoadError, match=r"no q4 variant \(onnx/model_q4.onnx\); available dtypes: fp32"):
        resolve_model(tiny_model_dir, "q4")


def test_not_a_model_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelLoadError, match="missing config.json, tokenizer.json .*it has: notes.txt"):
        resolve_model(tmp_path, "fp32")


def test_not_a_qwen3_model(tmp_path, tiny_model_dir):
    folder = copy_model(tiny_model_dir, tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "bert"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="not a Qwen3 model: config.json has model_type='bert'"):
        resolve_model(folder, "fp32")


def test_empty_onnx_file(tmp_path, tiny_model_dir):
    folder = copy_model(tiny_model_dir, tmp_path / "m")
    (folder / "onnx" / "model.onnx").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="is empty"):
        Reranker.from_pretrained(folder, dtype="fp32")


def test_corrupt_onnx_file(tmp_path, tiny_model_dir):
    folder = copy_model(tiny_model_dir, tmp_path / "m")
    path = folder / "onnx" / "model.onnx"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    with pytest.raises(ModelLoadError, match="corrupt or truncated"):
        Reranker.from_pretrained(folder, dtype="fp32")


def test_missing_external_data(tmp_path, tiny_model_dir):
    folder = copy_model(tiny_model_dir, tmp_path / "m")
    (folder / "onnx" / "model.onnx_data").unlink()
    with pytest.raises(ModelLoadError, match="cannot load .*model.onnx"):
        Reranker.from_pretrained(folder, dtype="fp32")


def test_truncated_external_data(tmp_path, tiny_model_dir):
    folder = copy_model(tiny_model_dir, tmp_path / "m")
    data = folder / "onnx" / "model.onnx_data"
    data.write_bytes(data.read_bytes()[:1000])
    with pytest.raises(
        ModelLoadError, match="cannot load .*model.onnx: its external weight file is missing or truncated"
    ):
        Reranker.from_pretrained(folder, dtype="fp32")


def test_hub_repo_offline_and_not_cached(tmp_path):
    with pytest.raises(ModelLoadError, match="not in the Hugging Face cache"):
        resolve_model("onnx-community/Qwen3-Reranker-0.6B-ONNX", "q8", cache_dir=tmp_path, local_files_only=True)


def _fake_hub_cache(cache_dir, repo_id, model_dir, commit="0123456789abcdef0123456789abcdef01234567"):
    """The Hugging Face cache layout for ``repo_id``, as huggingface_hub writes it: files in
    ``blobs/`` and, in the snapshot, relative symbolic links to them."""
    import hashlib
    import os

    repo_folder = cache_dir / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo_folder / "snapshots" / commit
    blobs = repo_folder / "blobs"
    blobs.mkdir(parents=True)
    (repo_folder / "refs").mkdir()
    (repo_folder / "refs" / "main").write_text(commit)
    for source in sorted(model_dir.rglob("*")):
        if not source.is_file() or ".score." in source.name:
            continue
        data = source.read_bytes()
        blob = blobs / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / source.relative_to(model_dir)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return snapshot


def test_hub_repo_from_cache_offline(tmp_path, tiny_model_dir, reranker):
    repo_id = "someone/tiny-qwen3-reranker-onnx"
    snapshot = _fake_hub_cache(tmp_path, repo_id, tiny_model_dir)
    files = resolve_model(repo_id, "fp32", cache_dir=tmp_path, local_files_only=True)
    assert files.root == snapshot and files.onnx == snapshot / "onnx" / "model.onnx"
    assert (snapshot / "onnx" / "model.onnx_data").is_symlink()
    rr = Reranker.from_pretrained(repo_id, dtype="fp32", cache_dir=tmp_path, local_files_only=True)
    assert rr.engine.is_score_graph  # built from symlinked files, as the HF cache has them
    docs = ["Paris is in France.", "Berlin is in Germany."]
    np.testing.assert_allclose(rr.score("capital?", docs), reranker.score("capital?", docs), atol=1e-7)


def test_hub_repo_cached_without_the_variant(tmp_path, tiny_model_dir):
    repo_id = "someone/tiny-qwen3-reranker-onnx"
    _fake_hub_cache(tmp_path, repo_id, tiny_model_dir)
    with pytest.raises(ModelLoadError, match=f"{repo_id} has no q4 variant.*available dtypes: fp32"):
        resolve_model(repo_id, "q4", cache_dir=tmp_path, local_files_only=True)
