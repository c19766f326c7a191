"""Where the model files are: a local folder or a Hugging Face Hub repo, in the published layout.

The layout is the one of ``onnx-community/Qwen3-Reranker-0.6B-ONNX`` (made for Transformers.js)::

    config.json  tokenizer.json  tokenizer_config.json  onnx/<variant file>

Variant names follow Transformers.js's ``dtype`` option, so a user can say ``dtype="q4"`` in
both runtimes and get the same file.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from .errors import ModelLoadError

DEFAULT_MODEL = "onnx-community/Qwen3-Reranker-0.6B-ONNX"
DEFAULT_DTYPE = "q8"

#: dtype name (as Transformers.js spells it) → file name under ``onnx/``.
DTYPE_FILES: dict[str, str] = {
    "fp32": "model.onnx",
    "fp16": "model_fp16.onnx",
    "q8": "model_quantized.onnx",
    "int8": "model_int8.onnx",
    "uint8": "model_uint8.onnx",
    "q4": "model_q4.onnx",
    "q4f16": "model_q4f16.onnx",
    "bnb4": "model_bnb4.onnx",
}
DTYPES = tuple(DTYPE_FILES)
REQUIRED_FILES = ("config.json", "tokenizer.json")
OPTIONAL_FILES = ("tokenizer_config.json", "generation_config.json")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ModelFiles:
    """The resolved files of one model variant, all local paths."""

    root: Path
    dtype: str
    onnx: Path
    tokenizer: Path
    config: dict[str, Any]
    tokenizer_config: dict[str, Any]

    @property
    def pad_token(self) -> str | None:
        """The tokenizer's pad token from ``tokenizer_config.json``, or ``None`` when it names none."""
        pad = self.tokenizer_config.get("pad_token")
        if isinstance(pad, dict):  # older tokenizer_config files store AddedToken dicts
            pad = pad.get("content")
        return cast("str | None", pad)


def available_dtypes(root: Path) -> list[str]:
    """dtype names whose file is present under ``root/onnx``."""
    onnx_dir = root / "onnx"
    return [d for d, name in DTYPE_FILES.items() if (onnx_dir / name).is_file()]


def onnx_filename(dtype: str) -> str:
    """The file name under ``onnx/`` of a variant.

    Args:
        dtype: a variant name, one of :data:`DTYPES` (Transformers.js's ``dtype`` names).

    Returns:
        The file name, e.g. ``model_quantized.onnx`` for ``q8``.

    Raises:
        ModelLoadError: an unknown ``dtype``.
    """
    try:
        return DTYPE_FILES[dtype]
    except KeyError:
        raise ModelLoadError(f"unknown dtype {dtype!r}; choose one of: {', '.join(DTYPES)}") from None


def resolve_model(
    model: str | os.PathLike[str] = DEFAULT_MODEL,
    dtype: str = DEFAULT_DTYPE,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
) -> ModelFiles:
    """Find (downloading if needed) the files of ``model`` for ``dtype``.

    ``model`` is a local folder or a Hub repo id. From the Hub only the files this dtype needs are
    fetched; ``HF_HUB_OFFLINE=1`` and the HF cache are honoured by ``huggingface_hub`` itself.

    Args:
        model: a local folder in the published layout, or a Hub repo id.
        dtype: the variant, one of :data:`DTYPES`.
        revision: the Hub revision (branch, tag or commit); ignored for a folder.
        cache_dir: the Hugging Face cache to use instead of the default one.
        local_files_only: use the cache only, never the network.
        token: a Hub token, or ``True`` for the saved one.

    Returns:
        The local paths of the variant's ONNX file and tokenizer, and the parsed configs.

    Raises:
        ModelLoadError: an unknown dtype, a missing folder, a failed download, or a folder without
            the files of the layout (or with one that cannot be read).
    """
    filename = onnx_filename(dtype)
    path = Path(os.path.expanduser(str(model)))
    if path.exists():
        root = path
    elif _looks_like_path(str(model)):
        raise ModelLoadError(f"model folder not found: {model}")
    else:
        root = _download(str(model), filename, revision, cache_dir, local_files_only, token)
    return _check_folder(root, dtype, filename, repo_id=None if path.exists() else str(model))


def _looks_like_path(text: str) -> bool:
    return not _REPO_ID.match(text) or text.startswith((".", "/", "~")) or os.sep in text.replace("/", "", 1)


def _download(
    repo_id: str,
    filename: str,
    revision: str | None,
    cache_dir: str | os.PathLike[str] | None,
    local_files_only: bool,
    token: str | bool | None,
) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    patterns = [*REQUIRED_FILES, *OPTIONAL_FILES, f"onnx/{filename}", f"onnx/{filename}_data*"]
    try:
        folder = snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=None if cache_dir is None else os.fspath(cache_dir),  # the Hub types it str | Path
            local_files_only=local_files_only,
            allow_patterns=patterns,
            token=token,
        )
    except HfHubHTTPError as exc:
        raise ModelLoadError(f"cannot download {repo_id} from the Hugging Face Hub: {_first_line(exc)}") from None
    except Exception as exc:  # offline and not cached, network down, bad repo id, ...
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        how = "HF_HUB_OFFLINE is set" if offline or local_files_only else "the Hub could not be reached"
        raise ModelLoadError(
            f"cannot get {repo_id}: {how} and it is not in the Hugging Face cache "
            f"({type(exc).__name__}: {_first_line(exc)}); download it once online, or pass a local folder"
        ) from None
    return Path(folder)


def _check_folder(root: Path, dtype: str, filename: str, repo_id: str | None) -> ModelFiles:
    where = repo_id or str(root)
    if not root.is_dir():
        raise ModelLoadError(f"model path is not a folder: {root}")
    missing = [name for name in REQUIRED_FILES if not (root / name).is_file()]
    if missing:
        present = sorted(p.name for p in root.iterdir())[:12]
        raise ModelLoadError(
            f"{where} is not a Qwen3 reranker model folder: missing {', '.join(missing)} "
            f"(it has: {', '.join(present) or 'nothing'})"
        )
    config = _read_json(root / "config.json")
    model_type = config.get("model_type")
    if model_type != "qwen3":
        raise ModelLoadError(f"{where} is not a Qwen3 model: config.json has model_type={model_type!r}")
    onnx_path = root / "onnx" / filename
    if not onnx_path.is_file():
        have = available_dtypes(root)
        raise ModelLoadError(
            f"{where} has no {dtype} variant (onnx/{filename}); "
            + (f"available dtypes: {', '.join(have)}" if have else "it has no onnx/ model files")
        )
    if onnx_path.stat().st_size == 0:
        raise ModelLoadError(f"{onnx_path} is empty: the download or export did not finish")
    tok_config_path = root / "tokenizer_config.json"
    tok_config = _read_json(tok_config_path) if tok_config_path.is_file() else {}
    return ModelFiles(root, dtype, onnx_path, root / "tokenizer.json", config, tok_config)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"cannot read {path}: {_first_line(exc)}") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path} does not hold a JSON object")
    return data


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
