"""PyTorch modules: padded tensors, masks and lengths only (no spaCy, no thinc)."""
from .buckets import length_buckets
from .crf import CRF
from .encoder import EncoderSettings, HybridEncoder

__all__ = ["CRF", "EncoderSettings", "HybridEncoder", "length_buckets"]
