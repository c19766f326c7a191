"""LangChain document compressor: rerank retrieved ``Document`` objects with Qwen3-Reranker.

    from langchain_classic.retrievers import ContextualCompressionRetriever  # 0.3: langchain.retrievers
    from qwen3_rerank.integrations.langchain import Qwen3RerankCompressor

    compressor = Qwen3RerankCompressor.from_pretrained("onnx-community/Qwen3-Reranker-0.6B-ONNX", top_n=3)
    retriever = ContextualCompressionRetriever(base_compressor=compressor, base_retriever=base)

Returned documents are copies, best first, with the score in ``metadata["relevance_score"]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._extras import require

require("langchain_core", "langchain", "the LangChain integration")

from langchain_core.callbacks import Callbacks  # noqa: E402
from langchain_core.documents import BaseDocumentCompressor, Document  # noqa: E402
from pydantic import ConfigDict, Field  # noqa: E402

from ..reranker import Reranker  # noqa: E402


class Qwen3RerankCompressor(BaseDocumentCompressor):
    """Keeps the ``top_n`` documents most relevant to the query, ordered by :meth:`Reranker.rerank`."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    reranker: Reranker
    top_n: int | None = Field(default=3, ge=1)
    """How many documents to keep (``None``: all of them, reordered)."""
    instruction: str | None = None
    """Task instruction for the prompt (default: the model's web-search one)."""
    score_key: str = "relevance_score"
    """Metadata key that receives the score."""

    @classmethod
    def from_pretrained(
        cls,
        model: str = "onnx-community/Qwen3-Reranker-0.6B-ONNX",
        *,
        top_n: int | None = 3,
        instruction: str | None = None,
        **options: Any,
    ) -> Qwen3RerankCompressor:
        """Load the model with :meth:`Reranker.from_pretrained` (``options`` go to it).

        Args:
            model: a local folder in the published layout, or a Hub repo id.
            top_n: how many documents to keep (``None``: all of them, reordered).
            instruction: the task instruction (default: the model's web-search one).
            **options: more keyword arguments of :meth:`Reranker.from_pretrained` (``dtype``,
                ``device``, ``threads``, ...).

        Returns:
            The compressor, with the loaded reranker.

        Raises:
            ModelLoadError: the model cannot be found, downloaded or loaded.
        """
        return cls(reranker=Reranker.from_pretrained(model, **options), top_n=top_n, instruction=instruction)

    def compress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """The ``top_n`` documents by relevance to ``query``, best first, each with its score.

        Args:
            documents: the retrieved documents; their ``page_content`` is scored.
            query: the query.
            callbacks: LangChain callbacks (not used).

        Returns:
            Copies of the kept documents with the score in ``metadata[score_key]``.
        """
        documents = list(documents)
        if not documents:
            return []
        results = self.reranker.rerank(
            query,
            [doc.page_content for doc in documents],
            top_k=self.top_n,
            instruction=self.instruction,
            return_documents=False,
        )
        return [
            documents[r.index].model_copy(update={"metadata": {**documents[r.index].metadata, self.score_key: r.score}})
            for r in results
        ]
