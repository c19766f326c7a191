"""Reranker prompts as data (no I/O, no tokenizer): :class:`PromptTemplate` and the built-ins.

The model is a causal LM asked to answer "yes" or "no"; the prompt is a chat turn with a fixed
system line, the user's instruction/query/document, and an assistant turn that starts after an
empty think block. Two built-in templates:

* ``official`` (the default): the strings of the model card's PyTorch reference recipe, byte for
  byte. Scores equal the recipe's.
* ``card``: the prompt of the ONNX repo's model card (``onnx-community/Qwen3-Reranker-0.6B-ONNX``)
  exactly as its Transformers.js code builds it: a blank line between ``<Instruct>``, ``<Query>``
  and ``<Document>``, and an assistant turn that ends with ``</think>\\n``. It gives other numbers
  than ``official``; it exists so that a user moving from that code to Python can reproduce them.

A template is three strings, the answer tokens and a default instruction. Only the content (the
part with ``{instruction}``, ``{query}`` and ``{document}``) is ever truncated; the prefix and the
suffix are always kept whole.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

from .errors import InputError

SYSTEM_LINE = (
    "Judge whether the Document meets the requirements based on the Query and the Instruct provided. "
    'Note that the answer can only be "yes" or "no".'
)
DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"

# Special tokens every template relies on; a tokenizer without them is not a Qwen3 one.
TEMPLATE_SPECIAL_TOKENS = ("<|im_start|>", "<|im_end|>", "<think>", "</think>")
_FIELDS = ("instruction", "query", "document")


@dataclass(frozen=True)
class PromptTemplate:
    """How a (query, document) pair becomes the model's prompt.

    Attributes:
        name: a short name (``official``, ``card`` or a user's own).
        prefix: text before the content (system turn and the start of the user turn).
        content: the user's part, with the fields ``{instruction}``, ``{query}`` and
            ``{document}`` once each, ``{document}`` last; only this part is ever cut.
        suffix: text after the content (end of the user turn, the assistant turn); always kept.
        answer_tokens: the (yes, no) tokens whose logits make the score.
        default_instruction: the instruction used when a call gives none.

    Raises:
        InputError: when ``content`` lacks a field, repeats one, has another one, or does not end
            its fields with ``{document}``.
    """

    name: str
    prefix: str
    content: str
    suffix: str
    answer_tokens: tuple[str, str] = ("yes", "no")
    default_instruction: str = DEFAULT_INSTRUCTION

    def __post_init__(self) -> None:
        fields = [f for _, f, _, _ in string.Formatter().parse(self.content) if f is not None]
        if sorted(fields) != sorted(_FIELDS) or fields[-1] != "document":
            raise InputError(
                f"prompt template {self.name!r}: the content must hold {{instruction}}, {{query}} and "
                f"{{document}} once each, {{document}} last (it has: {', '.join(fields) or 'no fields'})"
            )
        if len(self.answer_tokens) != 2 or self.answer_tokens[0] == self.answer_tokens[1]:
            raise InputError(f"prompt template {self.name!r}: answer_tokens must be two different tokens")

    def format_content(self, query: str, document: str, instruction: str | None = None) -> str:
        """The user-turn content between :attr:`prefix` and :attr:`suffix`."""
        return self.content.format(instruction=self._instruction(instruction), query=query, document=document)

    def content_head(self, query: str, instruction: str | None = None) -> str:
        """The start of the content that all documents of one query share.

        It ends before ``{document}`` without the spaces in front of it: the tokenizer attaches a
        leading space to the word after it, so the space stays with the document. Whether a whole
        prompt really starts with the head's tokens is checked on tokens (see
        :meth:`PromptTokenizer.shared_prefix`); this is only the candidate split.
        """
        head = self.content[: self.content.index("{document}")].rstrip(" ")
        return head.format(instruction=self._instruction(instruction), query=query)

    def format_prompt(self, query: str, document: str, instruction: str | None = None) -> str:
        """The whole prompt as one string (for display and debugging; scoring works on tokens)."""
        return self.prefix + self.format_content(query, document, instruction) + self.suffix

    def _instruction(self, instruction: str | None) -> str:
        return self.default_instruction if instruction is None else instruction


OFFICIAL = PromptTemplate(
    name="official",
    prefix=f"<|im_start|>system\n{SYSTEM_LINE}<|im_end|>\n<|im_start|>user\n",
    content="<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}",
    suffix="<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
)
CARD = PromptTemplate(
    name="card",
    prefix=f"<|im_start|>system\n{SYSTEM_LINE}<|im_end|>\n<|im_start|>user\n",
    content="<Instruct>: {instruction}\n\n<Query>: {query}\n\n<Document>: {document}",
    suffix="<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n",
)
#: The built-in templates by name.
TEMPLATES: dict[str, PromptTemplate] = {t.name: t for t in (OFFICIAL, CARD)}
DEFAULT_TEMPLATE = OFFICIAL.name


def get_template(template: str | PromptTemplate | None) -> PromptTemplate:
    """A built-in template by name (``None``: the default), or ``template`` itself.

    Raises:
        InputError: for an unknown name.
    """
    if template is None:
        return OFFICIAL
    if isinstance(template, PromptTemplate):
        return template
    try:
        return TEMPLATES[template]
    except (KeyError, TypeError):
        raise InputError(f"unknown prompt template {template!r}; choose one of: {', '.join(TEMPLATES)}") from None


# The official template's pieces, as module-level names (the reference recipe's strings).
PREFIX = OFFICIAL.prefix
SUFFIX = OFFICIAL.suffix
format_content = OFFICIAL.format_content
content_head = OFFICIAL.content_head
format_prompt = OFFICIAL.format_prompt
