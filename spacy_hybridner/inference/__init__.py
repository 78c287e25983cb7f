"""Inference on a CPU for trained transformer pipelines: int8 weights, ONNX Runtime and
windows grouped by length, as the ``hybrid_inference`` component and ``optimize``."""

from .component import PRECISIONS, RUNTIMES, InferenceSettings, make_hybrid_inference
from .optimize import COMPONENT, add_inference, apply_inference, load_float32, optimize

__all__ = [
    "COMPONENT",
    "PRECISIONS",
    "RUNTIMES",
    "InferenceSettings",
    "add_inference",
    "apply_inference",
    "load_float32",
    "make_hybrid_inference",
    "optimize",
]
