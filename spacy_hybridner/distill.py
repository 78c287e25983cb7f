"""Distillation, in one place: what a teacher writes into its Docs, what a silver example
carries, and the loss a student takes from them.

- A teacher's ``hybrid_ner`` with marginals switched on (:func:`enable_marginals`, what
  ``annotate --marginals`` calls) stores its tag marginals in each Doc's ``user_data``
  (:data:`MARGINALS_KEY`, with their tag names under :data:`MARGINAL_TAGS_KEY`).
- ``spacy-hybridner.GoldSilverCorpus.v1`` (``readers``) marks a silver example's reference
  with its loss weight (:data:`WEIGHT_KEY`) and the share of its loss taken against the
  teacher's marginals (:data:`SOFT_WEIGHT_KEY`), after :func:`soften`-ing them.
- The student's ``hybrid_ner`` takes :func:`weighted_loss`: each example's CRF negative
  log-likelihood times its weight, a share of it replaced by the CRF's cross-entropy
  against the teacher's marginals where the example has them.
Other components ignore all of it.
"""

from typing import List, Optional, Sequence, Tuple

import numpy
from spacy.language import Language
from spacy.tokens import Doc
from spacy.training import Example
from thinc.api import Model
from thinc.types import Floats2d, Ints1d

from .layers import crf_soft_loss

#: Key of ``Doc.user_data`` on a reference doc: the weight of the example's loss.
WEIGHT_KEY = "hybridner_weight"
#: Keys of ``Doc.user_data`` written by a teacher's ``hybrid_ner`` with marginals on
#: (``annotate --marginals``): its tag marginals ``(len(doc), K)`` and their tag names.
MARGINALS_KEY = "hybridner_marginals"
MARGINAL_TAGS_KEY = "hybridner_marginal_tags"
#: Key of ``Doc.user_data`` on a reference doc: the share of its loss that is the soft
#: (marginals) loss, the rest being the hard-label loss; set by ``GoldSilverCorpus``.
SOFT_WEIGHT_KEY = "hybridner_soft_weight"


def example_weight(example: Example) -> float:
    """The loss weight of an example: its reference's ``user_data[WEIGHT_KEY]``, else 1.0."""
    return float(example.reference.user_data.get(WEIGHT_KEY, 1.0))


def soft_weight(example: Example) -> float:
    """The share of an example's loss taken against its teacher's marginals (0: hard
    labels only): its reference's ``user_data[SOFT_WEIGHT_KEY]`` when it has marginals."""
    data = example.reference.user_data
    return float(data.get(SOFT_WEIGHT_KEY, 0.0)) if MARGINALS_KEY in data else 0.0


def soften(marginals: numpy.ndarray, temperature: float) -> numpy.ndarray:
    """Per-token distributions raised to ``1 / temperature`` and renormalised: above 1
    flatter, below 1 sharper, 1 unchanged."""
    q = numpy.asarray(marginals, dtype="float64")
    if temperature != 1.0:
        q = numpy.power(numpy.clip(q, 0.0, None), 1.0 / temperature)
    total = q.sum(axis=1, keepdims=True)
    return (q / numpy.where(total > 0, total, 1.0)).astype("float32")


def store_marginals(doc: Doc, marginals: numpy.ndarray, tag_names: Sequence[str]) -> None:
    """Write a teacher's tag marginals ``(len(doc), K)`` (as float16) and their tag names
    into ``doc.user_data``, where :func:`teacher_marginals` reads them."""
    doc.user_data[MARGINALS_KEY] = numpy.asarray(marginals).astype("float16")
    doc.user_data[MARGINAL_TAGS_KEY] = list(tag_names)


def teacher_marginals(example: Example, tag_names: Sequence[str]) -> Optional[numpy.ndarray]:
    """The teacher's tag marginals of the example's reference in the order of
    ``tag_names`` (float32), or None: no marginals, tokens that differ from the predicted
    doc's, or tags that do not match (the example then trains on its entities alone)."""
    data = example.reference.user_data
    marginals, names = data.get(MARGINALS_KEY), data.get(MARGINAL_TAGS_KEY)
    if marginals is None or names is None:
        return None
    predicted, reference = example.predicted, example.reference
    if (
        len(predicted) != len(reference)
        or len(marginals) != len(reference)
        or any(a.text != b.text for a, b in zip(predicted, reference))
    ):
        return None
    if set(names) != set(tag_names):
        return None
    order = [list(names).index(name) for name in tag_names]
    return numpy.asarray(marginals, dtype="float32")[:, order]


def weighted_loss(
    crf: Model, scores: List[Floats2d], gold: List[Ints1d], examples: Sequence[Example], tag_names: Sequence[str]
) -> Tuple[float, List[Floats2d]]:
    """The loss of each example times its weight (:func:`example_weight`): the CRF's
    negative log-likelihood of the gold tags or, for a share :func:`soft_weight` of it,
    the CRF's cross-entropy against the teacher's marginals (``crf_soft_loss``); and its
    gradient. As a side effect the CRF's transition scores receive their gradient.

    crf (Model): the CRF layer (``model.get_ref("crf")``).
    scores (List[Floats2d]): tag scores of each example's predicted doc.
    gold (List[Ints1d]): gold tag ids (-1 where unknown).
    tag_names (Sequence[str]): the CRF's tags, in order.
    RETURNS (Tuple[float, List[Floats2d]]): the loss and its gradient per example.
    """
    ops = crf.ops
    weights = [example_weight(eg) for eg in examples]
    shares = [soft_weight(eg) for eg in examples]
    targets = [teacher_marginals(eg, tag_names) if a > 0 else None for eg, a in zip(examples, shares)]
    shares = [a if t is not None else 0.0 for a, t in zip(shares, targets)]
    hard = ops.asarray1f([w * (1.0 - a) for w, a in zip(weights, shares)])
    nll, backprop = crf.begin_update((scores, gold))
    d_scores, _ = backprop(hard)
    loss = float((ops.to_numpy(nll) * ops.to_numpy(hard)).sum())
    soft = [i for i, a in enumerate(shares) if a > 0]
    if soft:
        soft_loss, d_soft = crf_soft_loss(crf, [scores[i] for i in soft], [ops.asarray2f(targets[i]) for i in soft])
        soft_loss = ops.to_numpy(soft_loss)
        d_scores = list(d_scores)
        for j, i in enumerate(soft):
            scale = weights[i] * shares[i]
            d_scores[i] = d_scores[i] + scale * d_soft[j]
            loss += float(scale * soft_loss[j])
    return loss, d_scores


def enable_marginals(nlp: Language, source: str = "the pipeline") -> List[str]:
    """Make every ``hybrid_ner`` component of ``nlp`` store its tag marginals in the Docs
    it annotates (a teacher for a soft-target student). RETURNS the components' names;
    raises ValueError, naming ``source`` and its pipes, when there is none."""
    from .pipeline_component import HybridEntityRecognizer

    names = [name for name, pipe in nlp.pipeline if isinstance(pipe, HybridEntityRecognizer)]
    if not names:
        raise ValueError(
            f"{source} has no hybrid_ner component, whose tag marginals --marginals "
            f"stores (its pipes: {nlp.pipe_names}); leave --marginals out for hard labels only."
        )
    for name in names:
        nlp.get_pipe(name).store_marginals = True
    return names
