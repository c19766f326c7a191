"""Export a Qwen3 causal-LM checkpoint to ONNX with the published graph interface.

Inputs ``input_ids``, ``attention_mask``, ``position_ids``, ``past_key_values.N.key/value``;
outputs ``logits``, ``present.N.key/value`` (the interface of the onnx-community files, which
Transformers.js and our runtime feed). The export is ``torch.onnx.export`` (dynamo) of the
``transformers`` model itself, wrapped only to turn the flat cache tensors into a cache object.

A one-label ``Qwen3ForSequenceClassification`` checkpoint (vLLM's ``from_2_way_softmax``
conversion: score head = ``lm_head[yes] - lm_head[no]``) gets the same interface, with its score
head applied at every position: ``logits`` is ``[batch, seq, 1]``, the yes − no gap at each
position. transformers' own forward pools that head at the last non-pad token, which needs a pad
id and would hide the per-position values the runtime (and its score graph) read, so the export
runs the transformer and the head itself.

Attention is exported in its "eager" form: its additive mask uses the dtype's lowest finite
value, not ``-inf``, so a fully masked row (heavy left padding) gives a uniform softmax instead
of NaN.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedModel

OPSET = 18


def load_checkpoint(source: str | os.PathLike[str], *, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """The checkpoint as a ``transformers`` model in eval mode, with eager attention.

    A causal LM, or for a ``Qwen3ForSequenceClassification`` checkpoint that model (its
    ``score`` head replaces ``lm_head``).

    Args:
        source: a checkpoint folder, or a Hub id (then a causal LM).
        dtype: the torch dtype to load the weights in.

    Returns:
        The model, in eval mode.
    """
    import json

    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from .source import is_seq_cls

    config_path = Path(source) / "config.json"  # a Hub id has none here: a causal LM, as before
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    auto = AutoModelForSequenceClassification if is_seq_cls(config) else AutoModelForCausalLM
    model: PreTrainedModel = auto.from_pretrained(str(source), dtype=dtype, attn_implementation="eager")
    model.eval()  # type: ignore[no-untyped-call]  # transformers leaves eval() unannotated; it returns model
    return model


class _CausalLMWithFlatCache(torch.nn.Module):
    """Flat cache tensors in and out, as the published ONNX interface has them."""

    def __init__(self, model: PreTrainedModel, with_past: bool) -> None:
        super().__init__()
        self.model = model
        self.with_past = with_past
        self.num_layers = model.config.num_hidden_layers
        #: A sequence-classification model: its transformer and score head are run separately.
        self.score_head = getattr(model, "score", None) if not hasattr(model, "lm_head") else None

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        past: tuple[torch.Tensor, ...] = (),
    ) -> tuple[torch.Tensor, ...]:
        """``(logits,)``, and with a past the new cache as ``key, value`` per layer after it."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        for layer in range(len(past) // 2):
            cache.update(past[2 * layer], past[2 * layer + 1], layer)
        run = self.model if self.score_head is None else self.model.model
        out = run(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=self.with_past,
        )
        # [batch, seq, vocab], or [batch, seq, num_labels] from the score head at every position
        logits = out.logits if self.score_head is None else self.score_head(out.last_hidden_state)
        if not self.with_past:
            return (logits,)
        flat = [logits]
        for layer in out.past_key_values.layers:
            flat += [layer.keys, layer.values]
        return tuple(flat)


def io_names(num_layers: int, with_past: bool = True) -> tuple[list[str], list[str]]:
    """The graph's input and output names: ``input_ids``, ``attention_mask``, ``position_ids`` and
    ``logits``, plus one key and one value per layer (``past_key_values.N.*`` in,
    ``present.N.*`` out) when ``with_past``."""
    inputs = ["input_ids", "attention_mask", "position_ids"]
    outputs = ["logits"]
    if with_past:
        for layer in range(num_layers):
            inputs += [f"past_key_values.{layer}.key", f"past_key_values.{layer}.value"]
            outputs += [f"present.{layer}.key", f"present.{layer}.value"]
    return inputs, outputs


def export_model(
    model: PreTrainedModel, onnx_path: str | os.PathLike[str], *, with_past: bool = True, external_data: bool = True
) -> Path:
    """Write ``model`` (a float32 ``transformers`` Qwen3 causal LM or one-label sequence
    classifier) to ``onnx_path``.

    With ``external_data`` the weights go to ``<name>_data`` next to it, as in the published repo
    (needed past protobuf's 2 GB limit).

    Returns:
        ``onnx_path`` as a :class:`~pathlib.Path`.
    """
    import onnx

    config = model.config
    wrapper = _CausalLMWithFlatCache(model, with_past).eval()
    batch, seq, past_len = 2, 4, 3
    kv_heads = config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    input_ids = torch.randint(0, min(config.vocab_size, 1000), (batch, seq))
    total = seq + (past_len if with_past else 0)
    attention_mask = torch.ones(batch, total, dtype=torch.int64)
    position_ids = torch.arange(total - seq, total).expand(batch, seq)
    past = tuple(
        torch.zeros(batch, kv_heads, past_len, head_dim, dtype=next(model.parameters()).dtype)
        for _ in range(2 * config.num_hidden_layers if with_past else 0)
    )
    b, s, t = (
        torch.export.Dim("batch_size"),
        torch.export.Dim("sequence_length"),
        torch.export.Dim("total_sequence_length"),
    )
    p = torch.export.Dim("past_sequence_length")
    args: tuple[torch.Tensor | tuple[torch.Tensor, ...], ...] = (input_ids, attention_mask, position_ids)
    dynamic_shapes: tuple[dict[int, torch.export.Dim] | tuple[dict[int, torch.export.Dim], ...], ...] = (
        {0: b, 1: s},
        {0: b, 1: t},
        {0: b, 1: s},
    )
    if with_past:  # torch.export cannot match an empty tuple of cache tensors, so none is passed
        args += (past,)
        dynamic_shapes += (tuple({0: b, 2: p} for _ in past),)
    input_names, output_names = io_names(config.num_hidden_layers, with_past)
    with torch.no_grad():
        program = torch.onnx.export(
            wrapper,
            args,
            input_names=input_names,
            output_names=output_names,
            dynamic_shapes=dynamic_shapes,
            opset_version=OPSET,
            dynamo=True,
            verbose=False,
        )
    assert program is not None  # None only without dynamo
    proto = program.model_proto
    onnx_path = Path(onnx_path)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    if external_data:
        data_name = onnx_path.name + "_data"
        (onnx_path.parent / data_name).unlink(missing_ok=True)
        onnx.save_model(
            proto,
            str(onnx_path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=data_name,
            size_threshold=1024,
        )
    else:
        onnx.save_model(proto, str(onnx_path))
    return onnx_path
