"""PyTorch modules: padded tensors, masks and lengths only (no spaCy, no thinc)."""
from .crf import CRF, length_buckets
from .encoder import HybridEncoder

__all__ = ["CRF", "HybridEncoder", "length_buckets"]
