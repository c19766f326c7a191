"""Where a checkpoint to export comes from: a local folder or a Hub repo id.

Both export steps need it (the export reads the checkpoint, ``verify`` reads it again as its
reference), so it stands on its own rather than inside either of them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import RerankError

HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.jinja", "*.model"]


class ExportError(RerankError):
    """The checkpoint cannot be exported, or the export could not be written or verified."""


def resolve_source(source: str | os.PathLike[str], *, revision: str | None = None) -> Path:
    """A local checkpoint folder, downloading a Hub repo id (``Qwen/Qwen3-Reranker-0.6B``) if needed."""
    path = Path(os.path.expanduser(str(source)))
    if path.exists():
        if not path.is_dir():
            raise ExportError(f"checkpoint must be a folder, got a file: {source}")
        return path
    text = str(source)
    if text.count("/") != 1 or text.startswith((".", "/", "~")):
        raise ExportError(f"checkpoint folder not found: {source}")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(text, revision=revision, allow_patterns=HUB_PATTERNS))
    except Exception as exc:  # offline, unknown repo, gated repo, network error
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ExportError(f"cannot download checkpoint {text} from the Hugging Face Hub: {first}") from None


def is_seq_cls(config: Mapping[str, Any]) -> bool:
    """Whether a checkpoint's config is a ``Qwen3ForSequenceClassification`` (a seq-cls conversion)."""
    return "Qwen3ForSequenceClassification" in (config.get("architectures") or [])
