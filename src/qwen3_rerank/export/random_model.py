"""Random-weight Qwen3 reranker checkpoints, for tests and speed measurements.

No model hub is needed: the architecture comes from ``transformers`` and the weights are random.
``"0.6B"`` is the real Qwen3-Reranker-0.6B configuration (weight values do not change speed);
``"tiny"`` is small enough for unit tests but keeps the real vocabulary size, so real token ids fit.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

CONFIGS: dict[str, dict[str, Any]] = {
    "0.6B": dict(
        vocab_size=151669,
        hidden_size=1024,
        intermediate_size=3072,
        num_hidden_layers=28,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        max_position_embeddings=40960,
        rope_theta=1000000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        initializer_range=0.02,
    ),
    "tiny": dict(
        vocab_size=151669,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=40960,
        rope_theta=1000000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        # Wide enough that yes/no logit gaps differ by whole units between documents.
        initializer_range=0.2,
    ),
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt")


def make_random_checkpoint(
    out: str | os.PathLike[str],
    tokenizer_dir: str | os.PathLike[str],
    *,
    size: str = "tiny",
    seed: int = 0,
    **overrides: Any,
) -> Path:
    """Write a random-weight ``Qwen3ForCausalLM`` checkpoint with the given tokenizer files.

    Args:
        out: the checkpoint folder to write (created if missing).
        tokenizer_dir: a folder whose tokenizer files (those of :data:`TOKENIZER_FILES` present)
            are copied next to the weights.
        size: a key of :data:`CONFIGS`: ``"tiny"`` or ``"0.6B"``.
        seed: the torch seed of the random weights.
        **overrides: ``Qwen3Config`` fields that replace the size's values.

    Returns:
        ``out`` as a :class:`~pathlib.Path`.

    Raises:
        KeyError: an unknown ``size``.
    """
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    values = {**CONFIGS[size], **overrides}
    config = Qwen3Config(**values)
    config.architectures = ["Qwen3ForCausalLM"]
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config).eval()  # type: ignore[no-untyped-call]  # transformers leaves eval() unannotated
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    for name in TOKENIZER_FILES:
        src = Path(tokenizer_dir) / name
        if src.is_file():
            shutil.copyfile(src, out / name)
    return out
