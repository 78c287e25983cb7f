"""spacy-hybridner: Transformer + BiLSTM + CRF named entity recognition for spaCy.

Importing the package registers the ``hybrid_ner`` factory, the architectures, loggers and
callbacks, readers, schedules and the tokenizer in spaCy's registry, and nothing else;
installed, spaCy finds them all through entry points without the import.
``Span._.confidence`` is registered when a ``hybrid_ner`` component is made
(``extensions.install_extensions``).
"""

from .about import __version__
from .architectures import build_hybrid_ner
from .callbacks import component_learn_rates_v1, initialize_frozen_v1
from .extensions import install_extensions
from .inference import make_hybrid_inference
from .loggers import tensorboard_logger_v1, training_logger_v1
from .pipeline_component import HybridEntityRecognizer, make_hybrid_ner
from .readers import gold_silver_corpus
from .schedules import warmup_linear_epochs
from .tokenizer import BoundedTokenizer, bound_tokenizer, create_bounded_tokenizer

__all__ = [
    "BoundedTokenizer",
    "HybridEntityRecognizer",
    "__version__",
    "bound_tokenizer",
    "create_bounded_tokenizer",
    "build_hybrid_ner",
    "component_learn_rates_v1",
    "initialize_frozen_v1",
    "install_extensions",
    "make_hybrid_inference",
    "make_hybrid_ner",
    "tensorboard_logger_v1",
    "gold_silver_corpus",
    "training_logger_v1",
    "warmup_linear_epochs",
]
