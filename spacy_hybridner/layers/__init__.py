"""thinc wrappers around the PyTorch modules."""
from .char_cnn import char_cnn
from .crf import crf_decode, crf_layer
from .encoder import hybrid_encoder, window_indices
from .word_dropout import word_dropout

__all__ = [
    "char_cnn", "crf_decode", "crf_layer", "hybrid_encoder", "window_indices", "word_dropout"]
