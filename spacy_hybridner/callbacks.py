"""Registered callbacks for training configs."""

from typing import Any, Callable, Dict

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


class _ScaledOptimizer:
    """An optimizer seen through a factor on its learning rate (thinc's ``lr_scale``)."""

    def __init__(self, optimizer: Any, scale: float) -> None:
        self.optimizer = optimizer
        self.scale = scale

    def __call__(self, key, weights, gradient, *, lr_scale: float = 1.0):
        return self.optimizer(key, weights, gradient, lr_scale=lr_scale * self.scale)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.optimizer, name)


class ComponentLearnRates:
    """``[training.before_update]`` callback: the named components update with the
    optimizer's rate times a factor, and take no step at all for their first steps.

    Fine-tuning a pretrained encoder under a new, randomly initialised head wants two rates:
    the head trains at a rate that would wreck the pretrained weights, which move at a
    fraction of it (discriminative rates, as in ULMFiT and most BERT NER recipes), and the
    head may first catch up on a frozen encoder. With the optimizer's rate set for the head,
    ``scales = {"transformer": 0.05}`` moves the transformer at 1/20 of it and
    ``frozen_steps = {"transformer": 50}`` holds it still for 50 steps. The schedule applies
    to both; Adam's moments keep accumulating while a component is held.

    The callback wraps the ``finish_update`` of each named component once, at the first
    step, on that pipeline object only; nothing outlasts training (the saved pipeline is
    unchanged). Components must be Python classes (``transformer``, ``hybrid_ner``; spaCy's
    Cython ``ner`` cannot be wrapped, but its rate is the optimizer's own).
    """

    def __init__(self, scales: Dict[str, float], frozen_steps: Dict[str, int]) -> None:
        for name, value in {**scales, **frozen_steps}.items():
            if value < 0:
                raise ValueError(f"component_learn_rates: the value for '{name}' must not be negative (got {value})")
        self.scales = dict(scales)
        self.frozen_steps = dict(frozen_steps)
        self.step = 0
        self.wrapped: Dict[str, Any] = {}

    def scale(self, name: str) -> float:
        """The factor on the rate of component ``name`` at the current step."""
        if self.step < self.frozen_steps.get(name, 0):
            return 0.0
        return self.scales.get(name, 1.0)

    def __call__(self, nlp: Language, info: Dict[str, Any]) -> None:
        self.step = info["step"]
        for name in sorted({*self.scales, *self.frozen_steps} - set(self.wrapped)):
            if name not in nlp.component_names:
                raise ValueError(
                    f"component_learn_rates: no component '{name}' in the pipeline "
                    f"{nlp.component_names}: name the components to scale in [training.before_update]"
                )
            pipe = nlp.get_pipe(name)
            original = pipe.finish_update

            def finish_update(sgd, *, _name=name, _original=original):
                return _original(_ScaledOptimizer(sgd, self.scale(_name)))

            try:
                pipe.finish_update = finish_update
            except AttributeError:
                raise ValueError(
                    f"component_learn_rates: component '{name}' ({type(pipe).__name__}) is a "
                    "Cython class whose update cannot be scaled; scale the other components "
                    "instead (set the optimizer's rate for this one)"
                ) from None
            self.wrapped[name] = original


@registry.callbacks("spacy-hybridner.component_learn_rates.v1")
def component_learn_rates_v1(scales: Dict[str, float], frozen_steps: Dict[str, int]) -> ComponentLearnRates:
    """For ``[training.before_update]``: per-component factors on the learning rate and
    steps for which a component is held still (see ``ComponentLearnRates``).

    scales (Dict[str, float]): component name -> factor on the optimizer's rate.
    frozen_steps (Dict[str, int]): component name -> number of first steps it takes no step.
    """
    return ComponentLearnRates(scales, frozen_steps)
