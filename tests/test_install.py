"""``pip install .`` without extras: a working ``qwen3-rerank rerank`` with no torch or transformers."""

from __future__ import annotations

import json
import subprocess
import venv
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_runtime_install_has_no_torch_and_reranks(tmp_path, tiny_model_dir, reranker):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", str(REPO)],
        capture_output=True, text=True, timeout=900,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    for heavy in ("torch", "transformers"):
        probe = subprocess.run([python, "-c", f"import {heavy}"], capture_output=True, text=True)
        assert probe.returncode != 0, f"{heavy} was installed by the runtime install"
    docs = ["Berlin is the capital of Germany.", "Paris is the capital of France."]
    proc = subprocess.run(
        [env_dir / "bin" / "qwen3-rerank", "rerank", "--model", tiny_model_dir, "--dtype", "fp32",
         "--query", "capital of France?", "--json", *docs],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    expected = reranker.rerank("capital of France?", docs)
    assert [r["index"] for r in results] == [r.index for r in expected]
    np.testing.assert_allclose([r["score"] for r in results], [r.score for r in expected], atol=1e-6)
