"""Error analysis of an NER pipeline on gold data: scores per type, a confusion matrix
of entity types with missed and spurious entities, calibration of ``ent._.confidence``,
the worst documents in displaCy, and training curves from the training log.

Scores come from spaCy's own scorer; plots need matplotlib (``pip install
spacy-hybridner[report]``).
"""

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import srsly
from spacy import displacy
from spacy.language import Language
from spacy.scorer import get_ner_prf
from spacy.training import Example

from ..calibration import confidence_pairs, entity_offsets, reliability
from .scoring import (
    breakdown_markdown,
    crosscheck_line,
    crosscheck_scores,
    predict_examples,
    recall_breakdown,
    training_words,
)

MISSED = "(missed)"
SPURIOUS = "(spurious)"


def confusion_counts(examples: Sequence[Example]) -> Tuple[List[str], Dict[str, Dict[str, int]]]:
    """Counts of (gold type, predicted type) over entities matched by exact span.

    A gold entity with no predicted entity of the same span is (type, MISSED); a
    predicted entity with no gold entity of the same span is (SPURIOUS, type).
    RETURNS (Tuple[List[str], Dict[str, Dict[str, int]]]): the types, sorted, and
        ``counts[gold][predicted]``.
    """
    counts: Dict[str, Dict[str, int]] = {}
    labels = set()

    def add(gold: str, pred: str) -> None:
        counts.setdefault(gold, {})
        counts[gold][pred] = counts[gold].get(pred, 0) + 1

    for eg in examples:
        gold, pred = entity_offsets(eg.reference), entity_offsets(eg.predicted)
        labels.update(gold.values(), pred.values())
        for span, label in gold.items():
            add(label, pred.get(span, MISSED))
        for span, label in pred.items():
            if span not in gold:
                add(SPURIOUS, label)
    return sorted(labels), counts


def calibration(examples: Sequence[Example], n_bins: int = 10) -> Dict:
    """Reliability of ``ent._.confidence``: predicted entities binned by confidence,
    each bin's mean confidence against its share of correct entities (same span and
    type as a gold entity), and the expected calibration error (see
    ``calibration.reliability``)."""
    pairs = confidence_pairs(examples)
    return reliability(pairs, n_bins)


def document_scores(examples: Sequence[Example]) -> List[Dict]:
    """Entity P/R/F of each document (exact span and type)."""
    rows = []
    for i, eg in enumerate(examples):
        gold = set(entity_offsets(eg.reference).items())
        pred = set(entity_offsets(eg.predicted).items())
        tp = len(gold & pred)
        p = tp / len(pred) if pred else 1.0
        r = tp / len(gold) if gold else 1.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        rows.append({"doc": i, "tp": tp, "fp": len(pred) - tp, "fn": len(gold) - tp, "f": f})
    return rows


def read_training_log(path: Path) -> List[Dict]:
    """The records of a JSONL training log (``spacy-hybridner.TrainingLogger.v1``, or
    spaCy's ConsoleLogger with ``output_file``, which has no wall time)."""
    return list(srsly.read_jsonl(path))


def scores_markdown(scores: Dict, support: Dict[str, int], ece: Optional[float]) -> str:
    lines = ["| type | P | R | F | gold entities |", "| --- | ---: | ---: | ---: | ---: |"]
    for label, s in sorted((scores.get("ents_per_type") or {}).items()):
        lines.append(
            f"| {label} | {100 * s['p']:.2f} | {100 * s['r']:.2f} | {100 * s['f']:.2f} | {support.get(label, 0)} |"
        )
    lines.append(
        f"| **all** | **{100 * scores['ents_p']:.2f}** | **{100 * scores['ents_r']:.2f}** | "
        f"**{100 * scores['ents_f']:.2f}** | {sum(support.values())} |"
    )
    if ece is not None:
        lines.append(f"\nExpected calibration error of `ent._.confidence`: {ece:.4f}")
    return "\n".join(lines) + "\n"


# --- pictures ------------------------------------------------------------------------------
def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError(
            "The report's plots need matplotlib: pip install 'spacy-hybridner[report]' (or pip install matplotlib)."
        ) from None
    return plt


def plot_confusion(labels: List[str], counts: Dict[str, Dict[str, int]], path: Path) -> None:
    plt = _pyplot()
    rows = labels + [SPURIOUS]
    cols = labels + [MISSED]
    matrix = [[counts.get(r, {}).get(c, 0) for c in cols] for r in rows]
    size = 1.2 + 0.6 * len(cols)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    top = max(max(r) for r in matrix) or 1
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            ax.text(
                j, i, str(value), ha="center", va="center", fontsize=8, color="white" if value > top / 2 else "black"
            )
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set_title("Entity types (exact spans)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_reliability(calib: Dict, path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    bins = calib["bins"]
    ax.bar(
        [(b["low"] + b["high"]) / 2 for b in bins],
        [b["accuracy"] for b in bins],
        width=[b["high"] - b["low"] for b in bins],
        alpha=0.6,
        edgecolor="black",
        label="share correct",
    )
    ax.plot(
        [b["confidence"] for b in bins], [b["accuracy"] for b in bins], marker="o", color="C1", label="mean confidence"
    )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("ent._.confidence")
    ax.set_ylabel("share of entities that are correct")
    ece = calib["ece"]
    ax.set_title(f"Reliability (ECE = {ece:.3f}, {calib['n_entities']} entities)" if ece is not None else "Reliability")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_training_curves(records: List[Dict], path: Path) -> None:
    plt = _pyplot()
    steps = [r["step"] for r in records]
    loss_names = sorted({k for r in records for k in r.get("losses", {})})
    has_time = all("seconds" in r for r in records)
    fig, axes = plt.subplots(1, 3 if has_time else 2, figsize=(15 if has_time else 10, 4))
    for name in loss_names:
        axes[0].plot(steps, [r["losses"].get(name) for r in records], label=name)
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("loss (summed between evaluations)")
    axes[0].legend()
    f = [100 * r["scores"].get("ents_f", r["score"]) for r in records]
    axes[1].plot(steps, f, marker=".")
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("dev entity F")
    if has_time:
        axes[2].plot([r["seconds"] / 60 for r in records], f, marker=".")
        axes[2].set_xlabel("wall time (minutes)")
        axes[2].set_ylabel("dev entity F")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --- the report ------------------------------------------------------------------------------
def _scores_text(
    scores: Dict,
    support: Dict[str, int],
    calib: Dict,
    check: Dict,
    breakdown: Optional[Dict],
    train_path: Optional[Path],
) -> str:
    """What ``scores.md`` holds: the scores, the seqeval cross-check and the recall breakdown."""
    markdown = scores_markdown(scores, support, calib["ece"]) + "\n" + crosscheck_line(check) + "\n"
    if breakdown is not None:
        markdown += f"\nRecall by type and by words seen in training ({train_path}):\n\n"
        markdown += breakdown_markdown(breakdown)
    return markdown


def _worst_documents(examples: Sequence[Example], per_doc: List[Dict], n_worst: int) -> Tuple[List[Dict], str]:
    """The ``n_worst`` documents with errors, lowest F first (most errors first at the same F).
    RETURNS: Their scores, and a displaCy page of each one's gold and predicted entities."""
    worst = sorted((d for d in per_doc if d["fp"] + d["fn"]), key=lambda d: (d["f"], -(d["fp"] + d["fn"])))[:n_worst]
    shown = []
    for d in worst:
        eg = examples[d["doc"]]
        gold, pred = eg.reference, eg.predicted
        gold.user_data["title"] = f"document {d['doc']}: gold"
        pred.user_data["title"] = f"document {d['doc']}: predicted (F {100 * d['f']:.1f})"
        shown.extend([gold, pred])
    return worst, displacy.render(shown, style="ent", page=True) if shown else "<p>No errors.</p>"


def _training_records(training_dir: Optional[Path]) -> List[Dict]:
    """The training log of ``training_dir`` (none without one); FileNotFoundError when it has none."""
    if training_dir is None:
        return []
    log_path = training_dir / "log.jsonl"
    if not log_path.exists():
        raise FileNotFoundError(
            f"No training log at {log_path}. Train with the logger "
            f"spacy-hybridner.TrainingLogger.v1 and --paths.log {log_path}."
        )
    return read_training_log(log_path)


def write_report(
    nlp: Language,
    data_path: Path,
    output_dir: Path,
    training_dir: Optional[Path] = None,
    n_worst: int = 10,
    plots: bool = True,
    train_path: Optional[Path] = None,
) -> Dict:
    """Write ``scores.md``, ``report.json``, ``worst.html`` and, with ``plots``,
    ``confusion.png``, ``reliability.png`` (and ``training.png`` given a training
    folder with ``log.jsonl``) to ``output_dir``. The scores are cross-checked with
    seqeval (``scoring.crosscheck_scores``); given ``train_path`` (the training .spacy
    file), recall per type and on names with words never seen in training is added
    (``scoring.recall_breakdown``). RETURNS (Dict): what report.json holds."""

    seen_words = training_words(train_path) if train_path is not None else None
    output_dir.mkdir(parents=True, exist_ok=True)
    examples = predict_examples(nlp, data_path)
    scores = get_ner_prf(examples)
    labels, counts = confusion_counts(examples)
    support = {label: sum(counts.get(label, {}).values()) for label in labels}
    calib = calibration(examples)
    check = crosscheck_scores(examples)
    breakdown = recall_breakdown(examples, seen_words) if seen_words is not None else None
    markdown = _scores_text(scores, support, calib, check, breakdown, train_path)
    (output_dir / "scores.md").write_text(markdown, encoding="utf8")
    worst, worst_html = _worst_documents(examples, document_scores(examples), n_worst)
    (output_dir / "worst.html").write_text(worst_html, encoding="utf8")
    records = _training_records(training_dir)
    if plots:
        plot_confusion(labels, counts, output_dir / "confusion.png")
        plot_reliability(calib, output_dir / "reliability.png")
        if records:
            plot_training_curves(records, output_dir / "training.png")
    report = {
        "scores": {k: scores[k] for k in ("ents_p", "ents_r", "ents_f")},
        "per_type": scores.get("ents_per_type") or {},
        "support": support,
        "confusion": counts,
        "calibration": calib,
        "worst_documents": worst,
        "training_log": records,
        "crosscheck": check,
    }
    if breakdown is not None:
        report["breakdown"] = breakdown
    (output_dir / "report.json").write_text(json.dumps(report, indent=2), encoding="utf8")
    return report
