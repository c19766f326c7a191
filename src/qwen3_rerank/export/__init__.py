"""Checkpoint → ONNX in the published Transformers.js layout (needs the ``export`` extra)."""
