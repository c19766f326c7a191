"""qwen3-rerank: Qwen3-Reranker on ONNX Runtime, with scores equal to the official PyTorch recipe."""

from .errors import InputError, ModelLoadError, RerankError, ScoringCancelled, TokenizerError
from .files import DEFAULT_MODEL, DTYPES
from .prompt import TEMPLATES, PromptTemplate
from .reranker import Reranker, RerankResult, ScoringRequest

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL",
    "DTYPES",
    "InputError",
    "ModelLoadError",
    "PromptTemplate",
    "RerankError",
    "RerankResult",
    "Reranker",
    "ScoringCancelled",
    "ScoringRequest",
    "TEMPLATES",
    "TokenizerError",
    "__version__",
]
