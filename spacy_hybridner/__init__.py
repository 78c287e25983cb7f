"""spacy-hybridner: Transformer + BiLSTM + CRF named entity recognition for spaCy.

Importing the package registers the ``hybrid_ner`` factory and the
``spacy-hybridner.HybridNER.v1`` architecture; installed, spaCy finds both through
entry points without the import.
"""
from .about import __version__
from .architectures import build_hybrid_ner
from .callbacks import initialize_frozen_v1
from .loggers import training_logger_v1
from .pipeline_component import HybridEntityRecognizer, make_hybrid_ner

__all__ = [
    "HybridEntityRecognizer", "__version__", "build_hybrid_ner", "initialize_frozen_v1",
    "make_hybrid_ner", "training_logger_v1",
]
