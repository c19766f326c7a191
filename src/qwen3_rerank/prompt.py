"""The official Qwen3-Reranker prompt, as plain strings (no I/O, no tokenizer).

The model is a causal LM asked to answer "yes" or "no"; the prompt is a chat turn with a fixed
system line, the user's instruction/query/document, and an assistant turn that starts after an
empty think block. These strings are the ones of the model card's reference recipe, byte for byte.
"""

from __future__ import annotations

PREFIX = (
    "<|im_start|>system\n"
    "Judge whether the Document meets the requirements based on the Query and the Instruct provided. "
    'Note that the answer can only be "yes" or "no".<|im_end|>\n'
    "<|im_start|>user\n"
)
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"

# Special tokens the template relies on; a tokenizer without them is not a Qwen3 one.
TEMPLATE_SPECIAL_TOKENS = ("<|im_start|>", "<|im_end|>", "<think>", "</think>")


def format_content(query: str, document: str, instruction: str | None = None) -> str:
    """The user-turn content between :data:`PREFIX` and :data:`SUFFIX`.

    Only this part is ever truncated (its end is cut, as in the reference recipe).
    """
    if instruction is None:
        instruction = DEFAULT_INSTRUCTION
    return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}"


def content_head(query: str, instruction: str | None = None) -> str:
    """The part of the content that all documents of one query share.

    ``format_content(q, d, i) == content_head(q, i) + " " + d``; the space stays with the document
    because the tokenizer attaches a leading space to the word after it.
    """
    if instruction is None:
        instruction = DEFAULT_INSTRUCTION
    return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>:"


def format_prompt(query: str, document: str, instruction: str | None = None) -> str:
    """The whole prompt as one string (for display and debugging; scoring works on tokens)."""
    return PREFIX + format_content(query, document, instruction) + SUFFIX
