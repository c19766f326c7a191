"""Token-level assembly of reranker prompts with the model's own ``tokenizer.json``.

The reference recipe tokenizes the content (instruction + query + document) with the tokenizer's
default special-token behaviour and a content budget of ``max_length - len(prefix) - len(suffix)``
tokens, cuts the end of the content when it is longer, and then wraps it in the prefix and suffix
ids (tokenized without special tokens). :class:`PromptTokenizer` does exactly that, so that ids
equal the reference ones whether or not the content was cut.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tokenizers import Encoding, Tokenizer

from .errors import InputError, TokenizerError
from .prompt import TEMPLATE_SPECIAL_TOKENS, PromptTemplate, get_template


class PromptTokenizer:
    """Turns prompt contents into the exact token ids the model is fed, for one prompt template.

    Args:
        tokenizer: the model's ``tokenizers`` tokenizer; any padding or truncation saved in it is
            turned off.
        pad_token: the token that fills padded positions (default ``<|endoftext|>``).
        template: the prompt template, by name or as a :class:`PromptTemplate` (default
            ``official``); its prefix and suffix are tokenized once here.

    Raises:
        TokenizerError: the tokenizer lacks the template's special tokens or its answer tokens.
        InputError: an unknown template name.
    """

    def __init__(
        self, tokenizer: Tokenizer, *, pad_token: str | None = None, template: str | PromptTemplate | None = None
    ) -> None:
        # A tokenizer.json saved by ``transformers`` after a batched call carries that call's
        # padding and truncation (e.g. left padding to the batch's longest, a max_length of 512);
        # ``tokenizers`` would apply them to every encode, padding or cutting the content *inside*
        # the prompt. The reference recipe sets both on every call, so a saved state never counts:
        # this is the one place where every tokenizer of the package is made stateless.
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self.tokenizer = tokenizer
        self.template = get_template(template)
        self._check_qwen3()
        self.yes_id = self._single_id(self.template.answer_tokens[0])
        self.no_id = self._single_id(self.template.answer_tokens[1])
        pad_token = pad_token or "<|endoftext|>"
        pad_id = tokenizer.token_to_id(pad_token)
        # The pad id is only ever seen under a zero attention mask; any valid id does.
        self.pad_id = pad_id if pad_id is not None else self.no_id
        self.prefix_ids = tokenizer.encode(self.template.prefix, add_special_tokens=False).ids
        self.suffix_ids = tokenizer.encode(self.template.suffix, add_special_tokens=False).ids
        # Tokens the post-processor adds to a single sequence (0 for Qwen3's ByteLevel one).
        self.num_added_tokens = tokenizer.num_special_tokens_to_add(False)

    @classmethod
    def from_file(
        cls, path: str | Path, *, pad_token: str | None = None, template: str | PromptTemplate | None = None
    ) -> PromptTokenizer:
        """Load ``tokenizer.json`` at ``path``; see the class for the arguments and errors."""
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # the Rust error text is one line and names the problem
            raise TokenizerError(f"cannot read tokenizer file {path}: {exc}") from None
        return cls(tokenizer, pad_token=pad_token, template=template)

    def _single_id(self, token: str) -> int:
        token_id = self.tokenizer.token_to_id(token)
        if token_id is None:
            raise TokenizerError(f"tokenizer has no token {token!r}: not a Qwen3 reranker tokenizer")
        return token_id

    def _check_qwen3(self) -> None:
        missing = []
        for token in TEMPLATE_SPECIAL_TOKENS:
            ids = self.tokenizer.encode(token, add_special_tokens=False).ids
            if len(ids) != 1 or self.tokenizer.token_to_id(token) != ids[0]:
                missing.append(token)
        if missing:
            raise TokenizerError(
                "tokenizer is not a Qwen3 one: the chat-template tokens "
                f"{', '.join(missing)} are not single special tokens"
            )

    def content_budget(self, max_length: int) -> int:
        """How many content tokens fit in a prompt of ``max_length`` tokens."""
        budget = max_length - len(self.prefix_ids) - len(self.suffix_ids)
        if budget <= self.num_added_tokens:
            raise InputError(
                f"max_length={max_length} leaves no room for content: the prompt's fixed prefix and "
                f"suffix take {len(self.prefix_ids) + len(self.suffix_ids)} tokens"
            )
        return budget

    def encode_contents(self, contents: Sequence[str], max_length: int, *, truncate: bool = True) -> list[list[int]]:
        """Prompt ids for each content, the content's end cut to fit ``max_length`` in all.

        With ``truncate=False`` a content that does not fit raises :class:`InputError` instead.
        """
        return self.encode_contents_with_cut_flags(contents, max_length, truncate=truncate)[0]

    def encode_contents_with_cut_flags(
        self, contents: Sequence[str], max_length: int, *, truncate: bool = True
    ) -> tuple[list[list[int]], list[bool]]:
        """:meth:`encode_contents`, and for each content whether it was cut (one tokenization).

        Args:
            contents: user-turn contents (see :meth:`PromptTemplate.format_content`).
            max_length: most tokens in one whole prompt.
            truncate: cut a content's end to fit (True), or refuse it.

        Returns:
            ``(sequences, cut)``: the prompt ids of each content, and whether its end was cut.

        Raises:
            InputError: with ``truncate=False``, when any content does not fit (the message
                lists the first ten indices).
        """
        budget = self.content_budget(max_length)
        encodings = self.tokenizer.encode_batch(list(contents), add_special_tokens=False)
        cut = [len(enc.ids) + self.num_added_tokens > budget for enc in encodings]
        if not truncate and any(cut):
            too_long = [i for i, flag in enumerate(cut) if flag]
            shown = ", ".join(map(str, too_long[:10])) + (" ..." if len(too_long) > 10 else "")
            raise InputError(
                f"{len(too_long)} input(s) longer than max_length={max_length} tokens "
                f"(at index {shown}) and truncation is off"
            )
        sequences = [self.prefix_ids + self._content_ids(enc, budget) + self.suffix_ids for enc in encodings]
        return sequences, cut

    def cut_text(self, text: str, max_tokens: int) -> str:
        """``text`` cut at a token boundary so that it holds about ``max_tokens`` tokens.

        Used to limit a document on its own (an API's "max tokens per document"), before it is
        placed in the prompt; the cut is made at the start of the first token that does not fit.
        """
        if max_tokens < 1:
            raise InputError(f"max tokens per document must be at least 1, got {max_tokens}")
        encoding = self.tokenizer.encode(text, add_special_tokens=False)
        if len(encoding.ids) <= max_tokens:
            return text
        return text[: encoding.offsets[max_tokens][0]]

    def shared_prefix(self, sequences: Sequence[Sequence[int]], head: str) -> tuple[int, list[bool]]:
        """Length of the prefix + ``head`` tokens, and which ``sequences`` start with exactly them.

        The split is taken from the whole prompts' own tokens: where tokenizing ``head`` alone
        gives other tokens than a whole prompt has there (a merge across the boundary, a cut by
        truncation), that sequence is marked False and is scored the plain way. So reusing the
        prefix never changes a token id.
        """
        shared = list(self.prefix_ids) + self.tokenizer.encode(head, add_special_tokens=False).ids
        n = len(shared)
        return n, [len(seq) > n and list(seq[:n]) == shared for seq in sequences]

    def cut_text_start(self, text: str, max_tokens: int) -> str:
        """``text`` with its start cut so that it holds about ``max_tokens`` tokens (keeps its end).

        The mirror of :meth:`cut_text`, for APIs that truncate on the left (TEI's
        ``truncation_direction="left"``); the cut is made at the start of the first token kept.
        """
        if max_tokens < 1:
            raise InputError(f"max tokens per document must be at least 1, got {max_tokens}")
        encoding = self.tokenizer.encode(text, add_special_tokens=False)
        if len(encoding.ids) <= max_tokens:
            return text
        return text[encoding.offsets[len(encoding.ids) - max_tokens][0] :]

    def _content_ids(self, encoding: Encoding, budget: int) -> list[int]:
        if self.num_added_tokens == 0:
            # Fast path: the post-processor adds nothing (Qwen3's ByteLevel one).
            return encoding.ids[:budget]
        # Same order as the reference tokenizer call: cut to leave room for what the
        # post-processor adds, then let it add its tokens.
        if len(encoding.ids) > budget - self.num_added_tokens:
            encoding.truncate(budget - self.num_added_tokens)
        return self.tokenizer.post_process(encoding, None, True).ids
