"""Errors that the library raises for problems a user can fix.

The CLI and the server print or return their message as it is: one line, no traceback.
"""

from __future__ import annotations


class RerankError(Exception):
    """Base class of every error the user can act on."""


class ModelLoadError(RerankError):
    """The model files could not be found, downloaded or loaded."""


class TokenizerError(ModelLoadError):
    """The tokenizer is missing or is not a Qwen3 one."""


class InputError(RerankError, ValueError):
    """The query, documents or options given to a call are not valid."""


class ScoringCancelled(RerankError):
    """``should_stop`` said so between two model batches: the call scored only part of its input.

    ``unscored`` of the call's ``total`` token sequences (documents, or windows with chunking)
    were left unscored; no scores are returned for any of them.
    """

    def __init__(self, unscored: int, total: int) -> None:
        super().__init__(f"scoring cancelled: {unscored} of {total} sequences left unscored")
        self.unscored = unscored
        self.total = total
