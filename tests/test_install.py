"""``pip install .`` without extras: a working ``qwen3-rerank rerank`` with no torch or transformers."""

from __future__ import annotations

import json
import subprocess
import sys
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
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    for heavy in ("torch", "transformers"):
        probe = subprocess.run([python, "-c", f"import {heavy}"], capture_output=True, text=True)
        assert probe.returncode != 0, f"{heavy} was installed by the runtime install"
    docs = ["Berlin is the capital of Germany.", "Paris is the capital of France."]
    proc = subprocess.run(
        [
            env_dir / "bin" / "qwen3-rerank",
            "rerank",
            "--model",
            tiny_model_dir,
            "--dtype",
            "fp32",
            "--query",
            "capital of France?",
            "--json",
            *docs,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    expected = reranker.rerank("capital of France?", docs)
    assert [r["index"] for r in results] == [r.index for r in expected]
    np.testing.assert_allclose([r["score"] for r in results], [r.score for r in expected], atol=1e-6)


@pytest.mark.slow
def test_wheel_holds_the_bench_js_engine_and_type_marker(tmp_path):
    """A non-editable install must carry bench/js (the Transformers.js engine) and py.typed."""
    import shutil
    import zipfile

    from qwen3_rerank import __version__

    # From a copy without build outputs: setuptools reuses build/, which can hide a missing file.
    source = tmp_path / "src"
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(
            ".git",
            ".venv*",
            "build",
            "dist",
            "*.egg-info",
            "node_modules",
            "__pycache__",
            ".hypothesis",
            ".pytest_cache",
        ),
    )
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--disable-pip-version-check",
            "-w",
            str(tmp_path),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    [wheel] = tmp_path.glob("qwen3_rerank-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("bench/js/bench.mjs", "bench/js/package.json", "bench/js/package-lock.json", "py.typed"):
        assert f"qwen3_rerank/{needed}" in names, f"{needed} missing from {wheel.name}"
    assert wheel.name.startswith(f"qwen3_rerank-{__version__}-")  # one version source
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
