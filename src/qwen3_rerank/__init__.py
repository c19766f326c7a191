"""qwen3-rerank: Qwen3-Reranker on ONNX Runtime, with scores equal to the official PyTorch recipe."""

from .chunking import AGGREGATIONS, Chunk, ChunkingOptions
from .errors import InputError, ModelLoadError, RerankError, ScoringCancelled, TokenizerError
from .files import DEFAULT_MODEL, DTYPES
from .prompt import TEMPLATES, PromptTemplate
from .request_builder import ScoringRequest
from .reranker import Reranker
from .results import RerankResult, ScoredDocument
from .truncation import Truncation

__version__ = "0.1.0"

__all__ = [
    "AGGREGATIONS",
    "Chunk",
    "ChunkingOptions",
    "DEFAULT_MODEL",
    "DTYPES",
    "InputError",
    "ModelLoadError",
    "PromptTemplate",
    "RerankError",
    "RerankResult",
    "Reranker",
    "ScoredDocument",
    "ScoringCancelled",
    "ScoringRequest",
    "TEMPLATES",
    "TokenizerError",
    "Truncation",
    "__version__",
]
