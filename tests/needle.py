"""A tiny Qwen3 whose answer depends on the content: "yes" exactly when a needle token was read.

How it works (one layer, weights set by hand, the rest zero):
* every token embeds to zero except the needle, which embeds to the unit vector e0;
* q_proj and k_proj are zero, so attention is uniform over the tokens each position can see;
  v_proj copies e0 into head 0 and o_proj writes that head into e1, so the last position's
  residual is c·e1 with c > 0 if the needle is anywhere in the prompt and exactly 0 otherwise;
* the final RMSNorm scales c·e1 to 8·e1 whatever c is (and leaves 0 at 0), and lm_head's "yes"
  row reads e1: the yes−no gap is 8 when the needle was seen, 0 when not.
So a document scores sigmoid(8) ≈ 0.9997 if the model saw the needle and 0.5 if it did not.
"""

from __future__ import annotations

from pathlib import Path


def pick_needle_id(tokenizer, with_needle: str, haystack: str) -> int:
    """A token of ``with_needle`` that never occurs in ``haystack`` (template, query, filler)."""
    busy = set(tokenizer.encode(haystack, add_special_tokens=False).ids)
    for token in tokenizer.encode(with_needle, add_special_tokens=False).ids:
        if token not in busy:
            return token
    raise AssertionError("no needle token free of the haystack")


def make_needle_checkpoint(out: Path, tokenizer_dir: Path, needle_id: int, yes_id: int) -> Path:
    import torch

    from qwen3_rerank.export.random_model import make_random_checkpoint

    out = make_random_checkpoint(
        out, tokenizer_dir, size="tiny", num_hidden_layers=1, tie_word_embeddings=False, intermediate_size=64
    )
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
        inner = model.model
        inner.embed_tokens.weight[needle_id, 0] = 1.0
        layer = inner.layers[0]
        for norm in (
            layer.input_layernorm,
            layer.post_attention_layernorm,
            layer.self_attn.q_norm,
            layer.self_attn.k_norm,
            inner.norm,
        ):
            norm.weight.fill_(1.0)
        layer.self_attn.v_proj.weight[0, 0] = 1.0  # kv head 0, dim 0 <- hidden e0
        layer.self_attn.o_proj.weight[1, 0] = 1.0  # hidden e1 <- head 0, dim 0
        model.lm_head.weight[yes_id, 1] = 1.0
    model.save_pretrained(out)
    return out
