"""A ``Qwen3ForSequenceClassification`` checkpoint made from a causal Qwen3-Reranker checkpoint.

The conversion is the one vLLM's ``convert_model_to_seq_cls.py --method from_2_way_softmax``
describes (written here from that description): the same configuration with ``num_labels=1``,
the causal model's transformer weights copied as they are, and a one-row score head equal to
``lm_head[yes] - lm_head[no]``, so that the head's logit at the last token is the causal model's
yes − no logit gap and its sigmoid is P(yes). It shares no code with the package.
"""

from __future__ import annotations

import shutil
from pathlib import Path

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt")


def convert_to_seq_cls(causal: Path, out: Path, *, num_labels: int = 1) -> Path:
    """Write the one-label sequence-classification form of the causal checkpoint ``causal``.

    ``num_labels`` other than 1 gives a (meaningless) multi-label head, for the refusal tests.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, Qwen3ForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(str(causal))
    causal_lm = AutoModelForCausalLM.from_pretrained(str(causal), dtype=torch.float32).eval()
    yes_id = tokenizer.convert_tokens_to_ids("yes")
    no_id = tokenizer.convert_tokens_to_ids("no")

    config = AutoConfig.from_pretrained(str(causal), num_labels=num_labels)
    config.architectures = ["Qwen3ForSequenceClassification"]
    seq_cls = Qwen3ForSequenceClassification(config).eval()
    seq_cls.model.load_state_dict(causal_lm.model.state_dict(), strict=True)  # the transformer, as it is
    with torch.no_grad():
        rows = causal_lm.lm_head.weight
        head = (rows[yes_id] - rows[no_id]).unsqueeze(0)
        seq_cls.score.weight.copy_(head.expand(num_labels, -1).clone())
    out.mkdir(parents=True, exist_ok=True)
    seq_cls.save_pretrained(out)
    for name in TOKENIZER_FILES:
        if (causal / name).is_file():
            shutil.copyfile(causal / name, out / name)
    return out
