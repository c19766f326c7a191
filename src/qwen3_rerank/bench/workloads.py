"""Deterministic synthetic benchmark inputs with exact token counts, made with the real tokenizer.

Queries and documents are seeded random English-like words taken from the tokenizer's own
vocabulary (whole-word tokens), cut at a token boundary with :meth:`PromptTokenizer.cut_text` so
that each document holds exactly the target number of tokens on its own. The same texts go to
every engine (this library, the PyTorch recipe, Transformers.js), so the work is identical.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..prompt_tokenizer import PromptTokenizer

QUERY_TOKENS = 16


@dataclass(frozen=True)
class Workload:
    """``queries`` queries, each with ``docs`` documents of ``doc_tokens`` tokens."""

    name: str
    queries: int
    docs: int
    doc_tokens: int
    query_tokens: int = QUERY_TOKENS

    def to_dict(self) -> dict[str, str | int]:
        """The workload's fields as a JSON-ready dict."""
        return asdict(self)


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("1x100x128", 1, 100, 128),
        Workload("1x20x512", 1, 20, 512),
        Workload("16x10x256", 16, 10, 256),
        # Memory: one 8,192-token document (the prompt is cut to max_length=8192 like the recipe).
        Workload("1x1x8192", 1, 1, 8192),
        # --quick and tests: small enough for the tiny model and a few seconds.
        Workload("1x8x32", 1, 8, 32),
        Workload("2x4x64", 2, 4, 64),
    )
}
MAIN_WORKLOADS = ("1x100x128", "1x20x512", "16x10x256")
QUICK_WORKLOADS = ("1x8x32", "2x4x64")


def get_workload(name: str) -> Workload:
    """A named workload, or one spelled ``QxDxT`` (queries x documents x tokens)."""
    if name in WORKLOADS:
        return WORKLOADS[name]
    try:
        q, d, t = (int(part) for part in name.split("x"))
    except ValueError:
        raise ValueError(f"unknown workload {name!r}: use one of {', '.join(WORKLOADS)} or QxDxT") from None
    if min(q, d, t) < 1:
        raise ValueError(f"workload {name!r}: every count must be at least 1")
    return Workload(name, q, d, t)


def _text(rng: random.Random, words: tuple[str, ...], tokens: int, tokenizer: PromptTokenizer) -> str:
    """Random words cut to exactly ``tokens`` tokens (fewer only if the cut cannot be exact)."""
    # Whole-word tokens are mostly one token each; draw a margin and cut.
    count = tokens + tokens // 4 + 8
    while True:
        text = " ".join(rng.choice(words) for _ in range(count))
        if len(tokenizer.tokenizer.encode(text, add_special_tokens=False).ids) > tokens:
            break
        count *= 2
    return tokenizer.cut_text(text, tokens).rstrip()


def make_inputs(workload: Workload, tokenizer: PromptTokenizer, seed: int = 0) -> list[tuple[str, list[str]]]:
    """``[(query, [documents])]`` for ``workload``; the same for the same tokenizer and seed.

    ``tokenizer`` is a :class:`qwen3_rerank.prompt_tokenizer.PromptTokenizer`.
    """
    words = _words_for(tokenizer)
    calls: list[tuple[str, list[str]]] = []
    for q in range(workload.queries):
        rng = random.Random(f"{seed}/{workload.name}/{q}")
        query = _text(rng, words, workload.query_tokens, tokenizer)
        docs = [_text(rng, words, workload.doc_tokens, tokenizer) for _ in range(workload.docs)]
        calls.append((query, docs))
    return calls


def _words_for(tokenizer: PromptTokenizer) -> tuple[str, ...]:
    vocab = tokenizer.tokenizer.get_vocab()
    key = (len(vocab), tokenizer.tokenizer.token_to_id("\u0120the"))
    if key not in _WORDS_CACHE:
        words = sorted(
            tok[1:]
            for tok in vocab
            if tok.startswith("\u0120")
            and 3 <= len(tok) - 1 <= 10
            and tok[1:].isascii()
            and tok[1:].isalpha()
            and tok[1:].islower()
        )
        if len(words) < 100:
            raise ValueError("the tokenizer has too few whole-word tokens for synthetic texts")
        _WORDS_CACHE[key] = tuple(words)
    return _WORDS_CACHE[key]


#: (vocabulary size, id of "Ġthe") → the whole-word tokens: one list per tokenizer.
_WORDS_CACHE: dict[tuple[int, int | None], tuple[str, ...]] = {}


def prompt_lengths(
    calls: Sequence[tuple[str, Sequence[str]]], tokenizer: PromptTokenizer, max_length: int = 8192
) -> list[list[int]]:
    """Token count of every full prompt (prefix + content + suffix), as this library builds them."""
    from ..prompt import format_content

    out: list[list[int]] = []
    for query, docs in calls:
        seqs = tokenizer.encode_contents([format_content(query, d, None) for d in docs], max_length)
        out.append([len(s) for s in seqs])
    return out
