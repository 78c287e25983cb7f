"""Calibration of entity confidences as plain functions: which predicted entities are
right, reliability bins and expected calibration error, log loss, and the temperature
search. Shared by ``HybridEntityRecognizer.calibrate``, ``calibrate_pipeline`` (with
``calibrate_and_save``, the ``calibrate`` command) and the report.
"""

from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy
from spacy.language import Language
from spacy.tokens import Doc, Span
from spacy.training import Example

Offsets = Dict[Tuple[int, int], str]


def entity_offsets(doc: Doc) -> Offsets:
    """doc (Doc): A document. RETURNS (Dict[Tuple[int, int], str]): the label of each
    entity by its character offsets ``(start_char, end_char)``."""
    return {(e.start_char, e.end_char): e.label_ for e in doc.ents}


def is_correct(span: Span, gold: Offsets) -> bool:
    """Whether a predicted entity is right: a gold entity has exactly its characters
    and its label.

    span (Span): A predicted entity.
    gold (Dict[Tuple[int, int], str]): The gold entities, from ``entity_offsets``.
    RETURNS (bool): True if the entity is right.
    """
    return gold.get((span.start_char, span.end_char)) == span.label_


def confidence_pairs(examples: Iterable[Example]) -> List[Tuple[float, bool]]:
    """examples (Iterable[Example]): Predicted docs with their gold references.
    RETURNS (List[Tuple[float, bool]]): ``(ent._.confidence, is_correct)`` of each
    predicted entity that has a confidence."""
    pairs: List[Tuple[float, bool]] = []
    if not Span.has_extension("confidence"):  # no hybrid_ner made in this process
        return pairs
    for eg in examples:
        gold = entity_offsets(eg.reference)
        for ent in eg.predicted.ents:
            if ent._.confidence is not None:
                pairs.append((float(ent._.confidence), is_correct(ent, gold)))
    return pairs


def reliability(pairs: Sequence[Tuple[float, bool]], n_bins: int = 10) -> Dict:
    """Bin (confidence, correct) pairs by confidence.

    pairs (Sequence[Tuple[float, bool]]): Confidence and correctness of each entity.
    n_bins (int): Equal-width bins over [0, 1].
    RETURNS (Dict): ``n_entities``; ``bins``, each with its range, count, mean
        confidence and share correct; and ``ece``, the expected calibration error
        ``sum_b n_b / N * |accuracy_b - confidence_b|`` (None without pairs).
    """
    bins: List[Dict] = []
    for b in range(n_bins):
        low, high = b / n_bins, (b + 1) / n_bins
        members = [(c, ok) for c, ok in pairs if low <= c < high or (b == n_bins - 1 and c >= 1.0)]
        if members:
            bins.append(
                {
                    "low": low,
                    "high": high,
                    "count": len(members),
                    "confidence": sum(c for c, _ in members) / len(members),
                    "accuracy": sum(ok for _, ok in members) / len(members),
                }
            )
    total = len(pairs)
    ece = sum(b["count"] / total * abs(b["accuracy"] - b["confidence"]) for b in bins) if total else None
    return {"n_entities": total, "ece": ece, "bins": bins}


def expected_calibration_error(
    confidences: Union[Sequence[float], numpy.ndarray], correct: Sequence[bool], n_bins: int = 10
) -> float:
    """confidences (Sequence[float]): One per entity. correct (Sequence[bool]): Whether
    each entity is right. n_bins (int): Bins of ``reliability``.
    RETURNS (float): The expected calibration error; 0.0 without entities."""
    ece = reliability(list(zip((float(c) for c in confidences), (bool(k) for k in correct))), n_bins)["ece"]
    return ece if ece is not None else 0.0


def log_loss(confidences: Union[Sequence[float], numpy.ndarray], correct: Sequence[bool]) -> float:
    """Mean negative log-likelihood of the entities being right or wrong (binary cross
    entropy), confidences clipped to ``[1e-7, 1 - 1e-7]``.

    confidences (Sequence[float]): One per entity. correct (Sequence[bool]): Whether
        each entity is right.
    RETURNS (float): The log loss; 0.0 without entities.
    """
    if not len(confidences):
        return 0.0
    p = numpy.clip(numpy.asarray(confidences, dtype="float64"), 1e-7, 1 - 1e-7)
    y = numpy.asarray(correct, dtype="float64")
    return float(-numpy.mean(y * numpy.log(p) + (1 - y) * numpy.log(1 - p)))


def default_temperatures() -> List[float]:
    """RETURNS (List[float]): The candidates of ``fit_temperature``: 33 values spaced
    evenly on a log scale from 0.5 to 8."""
    return [float(t) for t in numpy.geomspace(0.5, 8.0, 33)]


def fit_temperature(
    confidences_at: Callable[[float], Sequence[float]],
    correct: Sequence[bool],
    temperatures: Optional[Sequence[float]] = None,
    current: float = 1.0,
    n_bins: int = 10,
) -> Dict[str, float]:
    """Temperature scaling (Guo et al. 2017): the temperature among ``temperatures``
    whose confidences have the lowest log loss (a proper scoring rule, steadier than
    the binned calibration error, which is reported before and after). Ties go to the
    temperature closest to 1.

    confidences_at (Callable[[float], Sequence[float]]): The confidence of each entity
        at a temperature.
    correct (Sequence[bool]): Whether each entity is right, in the same order.
    temperatures (Optional[Sequence[float]]): Candidates (default: ``default_temperatures()``).
    current (float): The temperature in use now; always a candidate, and the one
        "before" refers to.
    n_bins (int): Bins of the calibration error.
    RETURNS (Dict[str, float]): temperature, nll_before / ece_before (at ``current``),
        nll_after / ece_after, n_entities.
    """
    if temperatures is None:
        temperatures = default_temperatures()
    candidates = sorted(set(float(t) for t in temperatures) | {float(current)})
    if any(t <= 0 for t in candidates):
        raise ValueError(f"Temperatures must be positive, got {candidates}.")
    conf = {t: numpy.asarray(confidences_at(t), dtype="float64") for t in candidates}
    losses = {t: log_loss(conf[t], correct) for t in candidates}
    best = min(candidates, key=lambda t: (losses[t], abs(numpy.log(t))))
    return {
        "temperature": best,
        "nll_before": losses[float(current)],
        "nll_after": losses[best],
        "ece_before": expected_calibration_error(conf[float(current)], correct, n_bins),
        "ece_after": expected_calibration_error(conf[best], correct, n_bins),
        "n_entities": len(correct),
    }


def fit_annotation_temperature(
    annotated: Sequence[Doc],
    probs_at: Callable[[float], Sequence[Sequence[float]]],
    examples: Sequence[Example],
    temperatures: Optional[Sequence[float]] = None,
    *,
    current: float = 1.0,
    n_bins: int = 10,
) -> Dict[str, float]:
    """:func:`fit_temperature` for a component whose temperature changes its entities'
    confidences and never the entities: which entities are right is read once, from the
    docs annotated at temperature 1, and at each candidate only the segment probabilities
    are computed again (an entity's confidence is the probability at its last token).

    annotated (Sequence[Doc]): the examples' docs annotated at temperature 1.
    probs_at (Callable[[float], Sequence[Sequence[float]]]): each doc's per-token segment
        probabilities at a temperature.
    examples (Sequence[Example]): the gold examples, in the same order.
    RETURNS (Dict[str, float]): as :func:`fit_temperature`.
    """
    ends = [(i, ent.end - 1) for i, doc in enumerate(annotated) for ent in doc.ents]
    correct = [
        is_correct(ent, entity_offsets(eg.reference)) for doc, eg in zip(annotated, examples) for ent in doc.ents
    ]

    def confidences_at(temperature: float) -> List[float]:
        probs = probs_at(temperature)
        return [float(probs[i][j]) for i, j in ends]

    return fit_temperature(confidences_at, correct, temperatures, current=current, n_bins=n_bins)


def calibrate_pipeline(
    nlp: Language, examples: Iterable[Example], temperatures: Optional[Sequence[float]] = None
) -> Dict[str, Dict[str, float]]:
    """Calibrate every component of ``nlp`` that has a ``calibrate(examples,
    temperatures)`` method (``hybrid_ner``) on held-out gold examples. The pipeline
    runs in order, as ``nlp.evaluate`` runs it: each component calibrates on the docs
    annotated by the components before it (a shared ``tok2vec`` or ``transformer`` it
    listens to, an ``entity_ruler``), then annotates them for the ones after it.

    nlp (Language): The pipeline; the components' temperatures are set in place.
    examples (Iterable[Example]): Gold examples, e.g. ``Corpus(dev_path)(nlp)``.
    temperatures (Optional[Sequence[float]]): Candidates (default: ``default_temperatures()``).
    RETURNS (Dict[str, Dict[str, float]]): By component name, what its ``calibrate``
        returned; empty if no component can be calibrated.
    """
    examples = list(examples)
    docs = [eg.predicted.copy() for eg in examples]
    results = {}
    for name, pipe in nlp.pipeline:
        if callable(getattr(pipe, "calibrate", None)):
            results[name] = pipe.calibrate(
                [Example(doc, eg.reference) for doc, eg in zip(docs, examples)], temperatures=temperatures
            )
        docs = list(pipe.pipe(docs)) if hasattr(pipe, "pipe") else [pipe(doc) for doc in docs]
    return results


def calibrate_and_save(
    nlp: Language,
    data_path: Union[str, Path],
    output_dir: Union[str, Path],
    temperatures: Optional[Sequence[float]] = None,
) -> Dict[str, Dict[str, float]]:
    """What ``python -m spacy_hybridner calibrate`` does: :func:`calibrate_pipeline` on the
    gold Docs of a .spacy file, then save the pipeline, calibrated or (without a component
    to calibrate) unchanged.

    nlp (Language): The pipeline. data_path (Union[str, Path]): Held-out gold .spacy file
        (the dev split, not the test split). output_dir (Union[str, Path]): Where to save.
    temperatures (Optional[Sequence[float]]): Candidates (default: ``default_temperatures()``).
    RETURNS (Dict[str, Dict[str, float]]): As :func:`calibrate_pipeline`.
    """
    from spacy.training import Corpus

    results = calibrate_pipeline(nlp, Corpus(data_path)(nlp), temperatures=temperatures)
    nlp.to_disk(output_dir)
    return results


def describe_calibration(name: str, result: Dict[str, float], data_name: str) -> str:
    """name (str): The component. result (Dict[str, float]): What its ``calibrate``
    returned. data_name (str): The held-out data. RETURNS (str): One line for people."""
    return (
        f"{name}: temperature {result['temperature']:.3f}; on {data_name} "
        f"({result['n_entities']} entities), log loss {result['nll_before']:.4f} -> "
        f"{result['nll_after']:.4f}, expected calibration error {result['ece_before']:.4f} -> "
        f"{result['ece_after']:.4f}"
    )
