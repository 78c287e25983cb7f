"""PyTorch modules: padded tensors, masks and lengths only (no spaCy, no thinc)."""
from .crf import CRF, length_buckets
from .encoder import EncoderSettings, HybridEncoder

__all__ = ["CRF", "EncoderSettings", "HybridEncoder", "length_buckets"]
