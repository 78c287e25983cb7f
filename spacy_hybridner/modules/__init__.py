"""PyTorch modules: padded tensors, masks and lengths only (no spaCy, no thinc)."""

from .buckets import CRF_BATCH_TOKENS, ENCODER_BATCH_TOKENS, consecutive_parts, length_buckets
from .crf import CRF
from .encoder import EncoderSettings, HybridEncoder

__all__ = [
    "CRF",
    "CRF_BATCH_TOKENS",
    "ENCODER_BATCH_TOKENS",
    "EncoderSettings",
    "HybridEncoder",
    "consecutive_parts",
    "length_buckets",
]
