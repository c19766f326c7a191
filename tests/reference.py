"""The official Qwen3-Reranker PyTorch recipe (model card), the independent reference for parity.

Written from the model card's description: ``AutoTokenizer`` with left padding, the content
tokenized with the default special-token behaviour and ``truncation='longest_first'`` to
``max_length - len(prefix) - len(suffix)``, prefix and suffix ids added around it, padded with
``tokenizer.pad``, ``AutoModelForCausalLM`` logits at the last position, yes/no looked up with
``convert_tokens_to_ids``. It shares no code with the package.
"""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

REF_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
    'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
REF_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
REF_TASK = "Given a web search query, retrieve relevant passages that answer the query"


def ref_format(instruction, query, doc):
    if instruction is None:
        instruction = REF_TASK
    return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}"


class OfficialRecipe:
    def __init__(self, checkpoint, max_length: int = 8192):
        self.tokenizer = AutoTokenizer.from_pretrained(str(checkpoint), padding_side="left")
        self.model = AutoModelForCausalLM.from_pretrained(str(checkpoint), dtype=torch.float32).eval()
        self.max_length = max_length
        self.yes = self.tokenizer.convert_tokens_to_ids("yes")
        self.no = self.tokenizer.convert_tokens_to_ids("no")
        self.prefix_tokens = self.tokenizer.encode(REF_PREFIX, add_special_tokens=False)
        self.suffix_tokens = self.tokenizer.encode(REF_SUFFIX, add_special_tokens=False)

    def process_inputs(self, pairs):
        inputs = self.tokenizer(
            pairs,
            padding=False,
            truncation="longest_first",
            return_attention_mask=False,
            max_length=self.max_length - len(self.prefix_tokens) - len(self.suffix_tokens),
        )
        for i, ele in enumerate(inputs["input_ids"]):
            inputs["input_ids"][i] = self.prefix_tokens + ele + self.suffix_tokens
        return self.tokenizer.pad(inputs, padding=True, return_tensors="pt", max_length=self.max_length)

    def token_ids(self, query, docs, instruction=None):
        pairs = [ref_format(instruction, query, d) for d in docs]
        inputs = self.process_inputs(pairs)
        return [
            row[mask.bool()].tolist() for row, mask in zip(inputs["input_ids"], inputs["attention_mask"], strict=True)
        ]

    @torch.no_grad()
    def gaps(self, query, docs, instruction=None):
        """logit(yes) - logit(no) at the last position, one batch for all documents."""
        pairs = [ref_format(instruction, query, d) for d in docs]
        inputs = self.process_inputs(pairs)
        logits = self.model(**inputs).logits[:, -1, :].double()
        return (logits[:, self.yes] - logits[:, self.no]).tolist()

    @torch.no_grad()
    def scores(self, query, docs, instruction=None):
        pairs = [ref_format(instruction, query, d) for d in docs]
        inputs = self.process_inputs(pairs)
        batch_scores = self.model(**inputs).logits[:, -1, :]
        stacked = torch.stack([batch_scores[:, self.no], batch_scores[:, self.yes]], dim=1)
        return torch.nn.functional.log_softmax(stacked, dim=1)[:, 1].exp().tolist()
