"""thinc wrappers around the PyTorch modules."""

from .char_cnn import char_cnn
from .char_embed import char_embed
from .crf import crf_decode, crf_layer, crf_marginals, crf_soft_loss
from .encoder import hybrid_encoder, window_indices
from .shim import module_is_built, torch_module
from .word_dropout import word_dropout

__all__ = [
    "char_cnn",
    "char_embed",
    "crf_decode",
    "crf_layer",
    "crf_marginals",
    "crf_soft_loss",
    "hybrid_encoder",
    "module_is_built",
    "torch_module",
    "window_indices",
    "word_dropout",
]
