"""The one place ``Span._.confidence`` is registered.

Its own module (spaCy only, no torch) so that the component and the outer ring
(``annotate`` reading DocBin shards back) register it the same way without importing
the model.
"""

from spacy.tokens import Span


def install_extensions() -> None:
    """Register ``Span._.confidence`` (default None) unless it is registered already.
    Called by every ``HybridEntityRecognizer`` (as spacy-transformers registers
    ``Doc._.trf_data``) and by code that reads saved docs without a component. Code
    that reads it for any pipeline checks ``Span.has_extension("confidence")`` first."""
    if not Span.has_extension("confidence"):
        Span.set_extension("confidence", default=None)
