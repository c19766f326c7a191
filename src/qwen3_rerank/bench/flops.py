"""FLOP count of a Qwen3 decoder pass, to turn measured time into achieved GFLOP/s.

Counted: the linears of every layer (q, k, v, o, gate, up, down; 2 FLOPs per multiply-add) and
the attention products (Q·Kᵀ and P·V over the causal window, all heads). Not counted: norms,
rotary, softmax, elementwise work (a few % of the FLOPs, but not GEMM work), the embedding gather
and the language-model head, which a score graph cuts to 2 rows (negligible) and the full-logits
recipe runs over the whole vocabulary (reported apart as ``lm_head_gflop``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ..export.random_model import CONFIGS

#: The shapes the FLOP count needs, from the real Qwen3-Reranker-0.6B configuration.
QWEN3_06B: dict[str, int] = {
    key: CONFIGS["0.6B"][key]
    for key in (
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "vocab_size",
    )
}


def linear_shapes(config: Mapping[str, int]) -> list[tuple[int, int]]:
    """(in, out) of the seven linears of one layer."""
    h = config["hidden_size"]
    i = config["intermediate_size"]
    d = config.get("head_dim") or h // config["num_attention_heads"]
    q = config["num_attention_heads"] * d
    kv = config["num_key_value_heads"] * d
    return [(h, q), (h, kv), (h, kv), (q, h), (h, i), (h, i), (i, h)]


def linear_flops_per_token(config: Mapping[str, int]) -> int:
    """FLOPs of the linears of all layers for one token."""
    return 2 * config["num_hidden_layers"] * sum(k * n for k, n in linear_shapes(config))


def attention_flops(config: Mapping[str, int], new_tokens: int, past: int = 0) -> int:
    """Q·Kᵀ and P·V for ``new_tokens`` tokens after ``past`` cached ones (causal)."""
    d = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    heads = config["num_attention_heads"]
    # token at position p attends to p + 1 keys; sum over p = past .. past + new - 1
    keys = new_tokens * past + new_tokens * (new_tokens + 1) // 2
    return config["num_hidden_layers"] * heads * d * 2 * 2 * keys


def pass_flops(config: Mapping[str, int], new_tokens: int, past: int = 0) -> dict[str, int]:
    """FLOPs of one pass of ``new_tokens`` tokens after ``past``: ``{"linear", "attention"}``."""
    return {
        "linear": linear_flops_per_token(config) * new_tokens,
        "attention": attention_flops(config, new_tokens, past),
    }


def workload_flops(
    config: Mapping[str, int], segments: Iterable[tuple[int, int]], lm_head_rows: int = 0
) -> dict[str, float]:
    """GFLOP of a job given as ``(new_tokens, past)`` segments.

    ``lm_head_rows`` positions run the full vocabulary head (full-logits recipes).
    """
    linear = attention = 0
    for new, past in segments:
        linear += linear_flops_per_token(config) * new
        attention += attention_flops(config, new, past)
    lm_head = 2 * config["hidden_size"] * config["vocab_size"] * lm_head_rows
    return {
        "linear_gflop": linear / 1e9,
        "attention_gflop": attention / 1e9,
        "model_gflop": (linear + attention) / 1e9,
        "lm_head_gflop": lm_head / 1e9,
    }
