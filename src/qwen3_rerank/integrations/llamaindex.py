"""LlamaIndex node postprocessor: rerank retrieved nodes with Qwen3-Reranker.

    from qwen3_rerank.integrations.llamaindex import Qwen3RerankPostprocessor

    rerank = Qwen3RerankPostprocessor.from_pretrained("onnx-community/Qwen3-Reranker-0.6B-ONNX", top_n=3)
    query_engine = index.as_query_engine(similarity_top_k=20, node_postprocessors=[rerank])

Returned nodes are the same nodes, best first, each with the reranker's score as its score.
"""

from __future__ import annotations

from typing import Any

from .._extras import require

require("llama_index.core", "llamaindex", "the LlamaIndex integration")

from llama_index.core.bridge.pydantic import Field, PrivateAttr  # noqa: E402
from llama_index.core.postprocessor.types import BaseNodePostprocessor  # noqa: E402
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle  # noqa: E402

from ..reranker import Reranker  # noqa: E402


class Qwen3RerankPostprocessor(BaseNodePostprocessor):
    """Keeps the ``top_n`` nodes most relevant to the query, ordered by :meth:`Reranker.rerank`."""

    top_n: int | None = Field(default=3, ge=1, description="how many nodes to keep (None: all, reordered)")
    instruction: str | None = Field(default=None, description="task instruction (default: web search)")
    metadata_mode: MetadataMode = Field(
        default=MetadataMode.EMBED, description="which metadata goes into the text the reranker reads"
    )
    _reranker: Reranker = PrivateAttr()

    def __init__(self, reranker: Reranker, **data: Any) -> None:
        """Wrap a loaded reranker.

        Args:
            reranker: the reranker that scores the nodes.
            **data: the fields ``top_n``, ``instruction`` and ``metadata_mode``.

        Raises:
            TypeError: ``reranker`` is not a :class:`Reranker`.
        """
        super().__init__(**data)
        if not isinstance(reranker, Reranker):
            raise TypeError(f"reranker must be a qwen3_rerank.Reranker, got {type(reranker).__name__}")
        self._reranker = reranker

    @classmethod
    def from_pretrained(
        cls,
        model: str = "onnx-community/Qwen3-Reranker-0.6B-ONNX",
        *,
        top_n: int | None = 3,
        instruction: str | None = None,
        **options: Any,
    ) -> Qwen3RerankPostprocessor:
        """Load the model with :meth:`Reranker.from_pretrained` (``options`` go to it).

        Args:
            model: a local folder in the published layout, or a Hub repo id.
            top_n: how many nodes to keep (``None``: all of them, reordered).
            instruction: the task instruction (default: the model's web-search one).
            **options: more keyword arguments of :meth:`Reranker.from_pretrained` (``dtype``,
                ``device``, ``threads``, ...).

        Returns:
            The postprocessor, with the loaded reranker.

        Raises:
            ModelLoadError: the model cannot be found, downloaded or loaded.
        """
        return cls(Reranker.from_pretrained(model, **options), top_n=top_n, instruction=instruction)

    @property
    def reranker(self) -> Reranker:
        """The reranker that scores the nodes."""
        return self._reranker

    @classmethod
    def class_name(cls) -> str:
        """LlamaIndex's name of this component (used when it is serialized)."""
        return "Qwen3RerankPostprocessor"

    def _postprocess_nodes(
        self,
        nodes: list[NodeWithScore],
        query_bundle: QueryBundle | None = None,
    ) -> list[NodeWithScore]:
        if query_bundle is None:
            raise ValueError("Qwen3RerankPostprocessor needs the query: pass query_bundle or query_str")
        if not nodes:
            return []
        results = self._reranker.rerank(
            query_bundle.query_str,
            [n.node.get_content(metadata_mode=self.metadata_mode) for n in nodes],
            top_k=self.top_n,
            instruction=self.instruction,
            return_documents=False,
        )
        return [NodeWithScore(node=nodes[r.index].node, score=r.score) for r in results]
