"""Adapters for other frameworks, each an optional extra:

* :mod:`qwen3_rerank.integrations.langchain`: ``Qwen3RerankCompressor`` (``pip install 'qwen3-rerank[langchain]'``)
* :mod:`qwen3_rerank.integrations.llamaindex`: ``Qwen3RerankPostprocessor`` (``pip install 'qwen3-rerank[llamaindex]'``)
* :mod:`qwen3_rerank.integrations.haystack`: ``Qwen3Ranker`` (``pip install 'qwen3-rerank[haystack]'``)
"""
