"""Registered callbacks for training configs."""
from typing import Callable

from spacy.language import Language
from spacy.tokens import Doc
from spacy.training import Example
from spacy.util import registry


@registry.callbacks("spacy-hybridner.initialize_frozen.v1")
def initialize_frozen_v1() -> Callable[[Language], Language]:
    """For ``[initialize.before_init]``: initialize the components listed in
    ``[training] frozen_components`` that are not sourced from a trained pipeline.

    spaCy leaves frozen components out of ``initialize``, expecting them to come
    trained from another pipeline. A pretrained transformer is trained already, but
    spacy-transformers loads its weights in ``initialize``; this callback does that, so
    ``frozen_components = ["transformer"]`` (with ``annotating_components =
    ["transformer"]``) trains only the head on a frozen backbone. Sourced components
    are left alone.
    """

    def before_init(nlp: Language) -> Language:
        frozen = nlp.config["training"].get("frozen_components", [])
        for name in frozen:
            if "source" in nlp.config["components"].get(name, {}):
                continue
            pipe = nlp.get_pipe(name)
            if not hasattr(pipe, "initialize"):
                continue
            doc = Doc(nlp.vocab, words=["hello"])
            pipe.initialize(lambda doc=doc: [Example(doc, doc)], nlp=nlp)
            if hasattr(pipe, "find_listeners"):  # link listeners of disabled pipes too
                for other in nlp.components:
                    pipe.find_listeners(other[1])
        return nlp

    return before_init
