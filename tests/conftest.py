"""Fixtures: a tiny random-weight Qwen3 checkpoint and its ONNX export, built here, no hub needed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_TOKENIZER = REPO.parent / "shared" / "qwen3-tokenizer"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """A test that needs the four-variant export (``exported``, ``export_run``) is ``slow`` wherever it is,
    so that ``-m "not slow"`` never builds it."""
    for item in items:
        if {"exported", "export_run"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def _tokenizer_source(factory) -> tuple[Path, bool]:
    override = os.environ.get("QWEN3_RERANK_TOKENIZER_DIR")
    if override:
        return Path(override), True
    if (SHARED_TOKENIZER / "tokenizer.json").is_file():
        return SHARED_TOKENIZER, True
    from tokenizer_fallback import train_fallback_tokenizer

    return train_fallback_tokenizer(factory.mktemp("fallback-tokenizer")), False


@pytest.fixture(scope="session")
def tokenizer_info(tmp_path_factory):
    """(folder with tokenizer files, whether it is the real Qwen3 tokenizer)."""
    return _tokenizer_source(tmp_path_factory)


@pytest.fixture(scope="session")
def tokenizer_dir(tokenizer_info) -> Path:
    return tokenizer_info[0]


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tokenizer_dir) -> Path:
    from qwen3_rerank.export.random_model import make_random_checkpoint

    return make_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", tokenizer_dir, size="tiny", seed=0)


def write_model_dir(checkpoint: Path, out: Path, *, with_past: bool = True) -> Path:
    """The published layout with an fp32 ``onnx/model.onnx`` exported from ``checkpoint``."""
    from qwen3_rerank.export.torch_export import export_model, load_checkpoint

    out.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        if (checkpoint / name).is_file():
            shutil.copyfile(checkpoint / name, out / name)
    export_model(load_checkpoint(checkpoint), out / "onnx" / "model.onnx", with_past=with_past)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_checkpoint) -> Path:
    return write_model_dir(tiny_checkpoint, tmp_path_factory.mktemp("model") / "tiny-onnx")


@pytest.fixture(scope="session")
def tiny_model_nopast_dir(tmp_path_factory, tiny_checkpoint) -> Path:
    return write_model_dir(tiny_checkpoint, tmp_path_factory.mktemp("model") / "tiny-onnx-nopast", with_past=False)


@pytest.fixture(scope="session")
def official(tiny_checkpoint):
    from reference import OfficialRecipe

    return OfficialRecipe(tiny_checkpoint)


@pytest.fixture(scope="session")
def reranker(tiny_model_dir):
    from qwen3_rerank import Reranker

    return Reranker.from_pretrained(tiny_model_dir, dtype="fp32", threads=2)


@pytest.fixture(scope="session")
def export_run(tmp_path_factory, tiny_checkpoint):
    """``qwen3-rerank export`` of the tiny checkpoint to all four variants, as a real process."""
    out = tmp_path_factory.mktemp("export") / "tiny-exported"
    proc = subprocess.run(
        [sys.executable, "-m", "qwen3_rerank", "export", str(tiny_checkpoint), "--out", str(out), "--quiet"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode != 0:
        raise AssertionError(f"export failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return out, json.loads(proc.stdout)


@pytest.fixture(scope="session")
def exported(export_run) -> Path:
    """The published layout with fp32, fp16, q8 and q4 (GroupQueryAttention in q8/q4)."""
    return export_run[0]
