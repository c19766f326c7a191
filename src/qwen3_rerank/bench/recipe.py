"""The model card's PyTorch recipe: its tokenization and its yes/no score, shared by the baselines.

The torch engine, the OpenVINO peer (``OVModelForCausalLM``) and the llama.cpp peer's token check
all take their inputs from here, so every baseline sees the same token ids: ``AutoTokenizer`` with
left padding, the content tokenized with ``truncation='longest_first'`` to ``max_length`` less the
prefix and suffix, prefix and suffix ids kept around it, padded with ``tokenizer.pad``. Needs
``transformers`` and ``torch`` (the ``export`` extra, or the OpenVINO peer's own venv).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..prompt import PREFIX, SUFFIX, format_content

if TYPE_CHECKING:
    import torch
    from transformers import BatchEncoding

MAX_LENGTH = 8192


class RecipeTokenizer:
    """The recipe's ``process_inputs`` for one checkpoint's tokenizer.

    Args:
        checkpoint: a folder with the Hugging Face tokenizer files.
        max_length: the recipe's ``max_length`` (the whole prompt, prefix and suffix included).
    """

    def __init__(self, checkpoint: Path | str, max_length: int = MAX_LENGTH) -> None:
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(checkpoint), padding_side="left")
        self.max_length = max_length
        self.yes_id = self._token_id("yes")
        self.no_id = self._token_id("no")
        self.prefix_tokens: list[int] = self.tokenizer.encode(PREFIX, add_special_tokens=False)
        self.suffix_tokens: list[int] = self.tokenizer.encode(SUFFIX, add_special_tokens=False)

    def _token_id(self, token: str) -> int:
        """The id of one token (``convert_tokens_to_ids`` of a single string is one int)."""
        value = self.tokenizer.convert_tokens_to_ids(token)
        if not isinstance(value, int):
            raise TypeError(f"no single id for {token!r}")
        return value

    def batch(self, query: str, docs: Sequence[str]) -> BatchEncoding:
        """Left-padded ``input_ids`` and ``attention_mask`` (torch tensors) of ``docs`` for ``query``."""
        inputs = self.tokenizer(
            [format_content(query, d) for d in docs],
            padding=False,
            truncation="longest_first",
            return_attention_mask=False,
            max_length=self.max_length - len(self.prefix_tokens) - len(self.suffix_tokens),
        )
        for i, ele in enumerate(inputs["input_ids"]):
            inputs["input_ids"][i] = self.prefix_tokens + ele + self.suffix_tokens
        return self.tokenizer.pad(inputs, padding=True, return_tensors="pt", max_length=self.max_length)

    def token_ids(self, query: str, docs: Sequence[str]) -> list[list[int]]:
        """The unpadded ids of every prompt, as the recipe feeds them to the model."""
        inputs = self.batch(query, docs)
        return [
            [int(t) for t in row[mask.bool()].tolist()]
            for row, mask in zip(inputs["input_ids"], inputs["attention_mask"], strict=True)
        ]

    def scores(self, last_logits: torch.Tensor) -> list[float]:
        """``softmax([yes, no])[0]`` of each row of last-position logits, as the recipe computes it."""
        import torch

        pair = torch.stack([last_logits[:, self.no_id], last_logits[:, self.yes_id]], dim=1).float()
        return [float(s) for s in torch.nn.functional.log_softmax(pair, dim=1)[:, 1].exp().tolist()]
