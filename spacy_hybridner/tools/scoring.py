"""Entity scores checked and broken down: the test F of spaCy's scorer recomputed with
``seqeval`` on IOB2 tags (an implementation that shares no code with spaCy's), and recall
per type and on names that contain words never seen in training.

``seqeval`` comes with ``pip install spacy-hybridner[report]``.
"""

import math
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Set

from spacy.language import Language
from spacy.scorer import get_ner_prf
from spacy.tokens import Doc, DocBin
from spacy.training import Corpus, Example
from spacy.vocab import Vocab

from ..calibration import confidence_pairs, entity_offsets, reliability

AGREEMENT_TOLERANCE = 1e-9


def predict_examples(nlp: Language, data_path: Path, batch_size: int = 64) -> List[Example]:
    """Examples of (predicted, gold) for a .spacy file, made as ``spacy evaluate`` makes
    them: spaCy's ``Corpus`` decides the tokenization (the gold tokens where the gold
    docs have no whitespace information, as converted CoNLL files do), then the
    pipeline annotates the predicted docs."""
    examples = list(Corpus(data_path)(nlp))
    predicted = nlp.pipe((eg.predicted for eg in examples), batch_size=batch_size)
    return [Example(pred, eg.reference) for pred, eg in zip(predicted, examples)]


def require_seqeval():
    """RETURNS (module): ``seqeval.metrics.sequence_labeling``; raises ImportError saying
    how to install seqeval when it is missing."""
    try:
        from seqeval.metrics import sequence_labeling
    except ImportError:
        raise ImportError(
            "The seqeval cross-check needs seqeval: pip install 'spacy-hybridner[report]' (or pip install seqeval)."
        ) from None
    return sequence_labeling


def gold_iob2(doc: Doc) -> List[str]:
    """The IOB2 tags of a gold document from its tokens' ``ent_iob_`` and ``ent_type_``
    (spaCy's token-level view of ``doc.ents``). A token without entity annotation
    (``ent_iob_ == ""``) is tagged ``O``.

    doc (Doc): A gold document. RETURNS (List[str]): One tag per token, e.g. ``B-PER``.
    """
    return [f"{t.ent_iob_}-{t.ent_type_}" if t.ent_iob_ in ("B", "I") else "O" for t in doc]


def predicted_iob2(predicted: Doc, reference: Doc) -> List[str]:
    """The IOB2 tags of the predicted entities on the *reference* document's tokens: each
    entity is mapped by its character offsets (``Doc.char_span``, ``alignment_mode="expand"``
    where the two tokenizations differ, the rule spaCy's scorer applies through its alignment).

    predicted (Doc): The document the pipeline annotated. reference (Doc): The gold document.
    RETURNS (List[str]): One tag per reference token.
    """
    tags = ["O"] * len(reference)
    for ent in predicted.ents:
        span = reference.char_span(ent.start_char, ent.end_char, alignment_mode="expand")
        if span is None or len(span) == 0:
            continue
        tags[span.start] = f"B-{ent.label_}"
        for i in range(span.start + 1, span.end):
            tags[i] = f"I-{ent.label_}"
    return tags


def seqeval_scores(examples: Iterable[Example]) -> Dict:
    """Entity-level micro P/R/F and per-type P/R/F with ``seqeval`` (conlleval's rules) on
    IOB2 tags. Documents without entity annotation are left out, as spaCy's scorer does.

    examples (Iterable[Example]): (predicted, gold) pairs.
    RETURNS (Dict): ``ents_p``, ``ents_r``, ``ents_f`` and ``ents_per_type`` (label ->
        ``{"p", "r", "f", "support"}``), the keys of spaCy's ``get_ner_prf``.
    """
    sequence_labeling = require_seqeval()
    y_true, y_pred = [], []
    for eg in examples:
        if not eg.reference.has_annotation("ENT_IOB"):
            continue
        y_true.append(gold_iob2(eg.reference))
        y_pred.append(predicted_iob2(eg.predicted, eg.reference))
    p, r, f, _ = sequence_labeling.precision_recall_fscore_support(y_true, y_pred, average="micro", zero_division=0)
    report = sequence_labeling.classification_report(y_true, y_pred, output_dict=True, zero_division=0)
    per_type = {
        label: {
            "p": float(v["precision"]),
            "r": float(v["recall"]),
            "f": float(v["f1-score"]),
            "support": int(v["support"]),
        }
        for label, v in sorted(report.items())
        if not label.endswith(" avg")
    }
    return {"ents_p": float(p), "ents_r": float(r), "ents_f": float(f), "ents_per_type": per_type}


def crosscheck_scores(examples: Sequence[Example], tolerance: float = AGREEMENT_TOLERANCE) -> Dict:
    """spaCy's entity scorer (``get_ner_prf``, what ``spacy evaluate`` and ``nlp.evaluate``
    report as ``ents_p/r/f``) beside ``seqeval`` on the same predictions.

    examples (Sequence[Example]): (predicted, gold) pairs.
    tolerance (float): Largest difference of any P, R or F (overall or per type) that counts
        as agreement.
    RETURNS (Dict): ``spacy`` and ``seqeval`` (each ``ents_p/r/f`` and ``ents_per_type``),
        ``max_difference`` and ``agree``.
    """
    spacy_scores = get_ner_prf(examples)
    checked = seqeval_scores(examples)
    ours = {k: spacy_scores[k] or 0.0 for k in ("ents_p", "ents_r", "ents_f")}
    per_type = {
        label: {k: s[k] for k in ("p", "r", "f")} for label, s in sorted((spacy_scores["ents_per_type"] or {}).items())
    }
    differences = [abs(ours[k] - checked[k]) for k in ours]
    for label in set(per_type) | set(checked["ents_per_type"]):
        a = per_type.get(label, {"p": 0.0, "r": 0.0, "f": 0.0})
        b = checked["ents_per_type"].get(label, {"p": 0.0, "r": 0.0, "f": 0.0})
        differences.extend(abs(a[k] - b[k]) for k in ("p", "r", "f"))
    largest = max(differences)
    return {
        "spacy": {**ours, "ents_per_type": per_type},
        "seqeval": checked,
        "max_difference": largest,
        "agree": bool(largest <= tolerance and not math.isnan(largest)),
    }


def crosscheck_line(check: Dict) -> str:
    """One sentence for a report: both test F and whether they agree."""
    verdict = "agree" if check["agree"] else "DISAGREE"
    return (
        f"Cross-check: spaCy's scorer F {100 * check['spacy']['ents_f']:.4f}, seqeval (IOB2, conlleval rules) "
        f"F {100 * check['seqeval']['ents_f']:.4f}; they {verdict} "
        f"(largest difference of any P/R/F, overall or per type: {check['max_difference']:.1e})."
    )


# --- recall per type and on unseen names --------------------------------------------------------
def training_words(train_path: Path) -> Set[str]:
    """Every token text of a .spacy file (case-sensitive), the words "seen in training".

    train_path (Path): The training .spacy file. RETURNS (Set[str]): The token texts.
    """
    if not Path(train_path).exists():
        raise FileNotFoundError(
            f"Training data not found: {train_path} (pass the .spacy file the model was trained on)"
        )
    words: Set[str] = set()
    for doc in DocBin().from_disk(train_path).get_docs(Vocab()):
        words.update(t.text for t in doc)
    return words


def _recall(found: int, total: int) -> Optional[float]:
    return found / total if total else None


def recall_breakdown(examples: Sequence[Example], seen_words: Set[str]) -> Dict:
    """Recall of the gold entities per type, and for entities with a word never seen in
    training against entities whose words were all seen. A gold entity is found when a
    predicted entity has exactly its characters and its type (as spaCy's scorer counts).
    Words are compared by token text, case-sensitively ("Paris" seen does not make "PARIS" seen).

    examples (Sequence[Example]): (predicted, gold) pairs, e.g. from ``predict_examples``.
    seen_words (Set[str]): Token texts of the training data (``training_words``).
    RETURNS (Dict): ``per_type`` (label -> ``{"gold", "found", "recall"}``), ``unseen`` and
        ``seen`` (each ``{"gold", "found", "recall"}``), and ``words`` naming the rule.
    """
    per_type: Dict[str, Dict] = {}
    buckets = {"unseen": {"gold": 0, "found": 0}, "seen": {"gold": 0, "found": 0}}
    for eg in examples:
        pred = entity_offsets(eg.predicted)
        for ent in eg.reference.ents:
            found = pred.get((ent.start_char, ent.end_char)) == ent.label_
            row = per_type.setdefault(ent.label_, {"gold": 0, "found": 0})
            bucket = buckets["unseen" if any(t.text not in seen_words for t in ent) else "seen"]
            for counts in (row, bucket):
                counts["gold"] += 1
                counts["found"] += int(found)
    for counts in [*per_type.values(), *buckets.values()]:
        counts["recall"] = _recall(counts["found"], counts["gold"])
    return {
        "per_type": dict(sorted(per_type.items())),
        **buckets,
        "words": "token text, case-sensitive, against every token of the training data",
    }


def breakdown_markdown(breakdown: Dict) -> str:
    """The breakdown as a markdown table: one row per type, then the unseen and seen rows."""

    def cell(value: Optional[float]) -> str:
        return f"{100 * value:.2f}" if value is not None else "-"

    lines = ["| gold entities | recall | found | of |", "| --- | ---: | ---: | ---: |"]
    for label, c in breakdown["per_type"].items():
        lines.append(f"| {label} | {cell(c['recall'])} | {c['found']} | {c['gold']} |")
    for key, name in (("unseen", "with a word never seen in training"), ("seen", "all words seen in training")):
        c = breakdown[key]
        lines.append(f"| {name} | {cell(c['recall'])} | {c['found']} | {c['gold']} |")
    return "\n".join(lines) + f"\n\nSeen words: {breakdown['words']}.\n"


def analysis_lines(result: Dict) -> List[str]:
    """What the ``crosscheck`` command prints of an :func:`analyse` result: P/R/F by each
    scorer, :func:`crosscheck_line`, the calibration error of ``ent._.confidence`` (where
    the pipeline gives confidences) and the recall breakdown (given the training data)."""
    check = result["crosscheck"]
    lines = []
    for name in ("spacy", "seqeval"):
        s = check[name]
        lines.append(f"{name:>8}: P {100 * s['ents_p']:.4f}  R {100 * s['ents_r']:.4f}  F {100 * s['ents_f']:.4f}")
    lines.append(crosscheck_line(check))
    calib = result["calibration"]
    if calib["ece"] is not None:
        lines.append(
            f"Expected calibration error of ent._.confidence: {calib['ece']:.4f} ({calib['n_entities']} entities)"
        )
    if "breakdown" in result:
        lines.append(breakdown_markdown(result["breakdown"]))
    return lines


def analyse(nlp: Language, data_path: Path, train_path: Optional[Path] = None) -> Dict:
    """Predict a gold .spacy file once and run the cross-check and, given the training
    data, the breakdown.

    nlp (Language): The pipeline. data_path (Path): Gold .spacy file (e.g. the test split).
    train_path (Optional[Path]): The training .spacy file, for the unseen-name breakdown.
    RETURNS (Dict): ``crosscheck``, ``calibration`` (``n_entities`` with a confidence and
        their ``ece``, None without any) and, given ``train_path``, ``breakdown``.
    """

    seen = training_words(train_path) if train_path is not None else None
    if not Path(data_path).exists():
        raise FileNotFoundError(f"Gold data not found: {data_path}")
    examples = predict_examples(nlp, data_path)
    calib = reliability(confidence_pairs(examples))
    result = {
        "data": str(data_path),
        "crosscheck": crosscheck_scores(examples),
        "calibration": {"n_entities": calib["n_entities"], "ece": calib["ece"]},
    }
    if seen is not None:
        result["train_data"] = str(train_path)
        result["breakdown"] = recall_breakdown(examples, seen)
    return result
