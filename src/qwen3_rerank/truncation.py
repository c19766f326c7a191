"""What happens to a text that is too long: cut at its end or its start, or refused.

Two limits apply to a document. ``max_doc_tokens``, when set, is the document's own limit (the
rerank APIs' "max tokens per document"), checked on the document alone before it is placed in the
prompt; ``max_length`` (the :class:`~qwen3_rerank.Reranker`'s) is the whole prompt's, and cuts the
end of the content as the reference recipe does. :class:`Truncation` says what to do at both:

* ``enabled=True`` (default): cut. A document over ``max_doc_tokens`` loses its end
  (``direction="right"``) or its start (``"left"``, TEI's ``truncation_direction``); a prompt over
  ``max_length`` loses the end of its content.
* ``enabled=False``: refuse (:class:`~qwen3_rerank.InputError`) a document over either limit, so
  no text is ever scored on a part of itself (TEI's ``truncate=false``).

The server builds one per request from its API's fields; the library applies it in one place
(:class:`~qwen3_rerank.request_builder.RequestBuilder`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from .errors import InputError

#: Which end of a document a cut to ``max_doc_tokens`` removes: ``right`` its end, ``left`` its start.
DIRECTIONS = ("right", "left")


class TextCutter(Protocol):
    """The tokenizer's two ways of cutting a text to about ``max_tokens`` tokens.

    :class:`~qwen3_rerank.prompt_tokenizer.PromptTokenizer` is one; a test can pass a word cutter.
    """

    def cut_text(self, text: str, max_tokens: int) -> str:
        """``text`` without the tokens after the first ``max_tokens`` (``text`` itself if it fits)."""
        ...

    def cut_text_start(self, text: str, max_tokens: int) -> str:
        """``text`` without the tokens before the last ``max_tokens`` (``text`` itself if it fits)."""
        ...


@dataclass(frozen=True)
class Truncation:
    """The truncation policy of one request (see the module for the two limits).

    Args:
        enabled: cut a too-long text (True) or refuse it with :class:`~qwen3_rerank.InputError`.
        direction: ``"right"`` cuts a document's end to fit ``max_doc_tokens``, ``"left"`` its
            start. A prompt over ``max_length`` always loses the end of its content, as in the
            reference recipe.
        max_doc_tokens: a document's own limit in tokens, or None for the prompt limit alone.

    Raises:
        InputError: an unknown ``direction`` or a ``max_doc_tokens`` below 1.
    """

    enabled: bool = True
    direction: Literal["right", "left"] = "right"
    max_doc_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise InputError(f"truncation direction must be one of {', '.join(DIRECTIONS)}, got {self.direction!r}")
        limit = self.max_doc_tokens
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise InputError(f"max tokens per document must be at least 1, got {limit}")

    def apply(self, documents: Sequence[str], cutter: TextCutter) -> list[str]:
        """The documents held to ``max_doc_tokens``: cut on ``direction``'s side, or refused.

        Args:
            documents: the texts, in input order.
            cutter: the model's tokenizer (it decides what a token is).

        Returns:
            The documents, each cut to about ``max_doc_tokens`` tokens where it was longer (all of
            them unchanged without a limit).

        Raises:
            InputError: with ``enabled=False``, for the first document longer than the limit.
        """
        limit = self.max_doc_tokens
        if limit is None:
            return list(documents)
        if not self.enabled:
            for i, text in enumerate(documents):
                if cutter.cut_text(text, limit) != text:
                    raise InputError(f"document {i} is longer than {limit} tokens and truncation is off")
            return list(documents)
        cut = cutter.cut_text if self.direction == "right" else cutter.cut_text_start
        return [cut(text, limit) for text in documents]
