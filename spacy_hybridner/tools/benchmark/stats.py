"""The runs of a benchmark summarised per config: mean and sample standard deviation."""

from statistics import mean, stdev
from typing import Dict, List, Optional

# Figures whose mean a summary gives (test F, best dev F and words/s get mean and sd).
MEAN_KEYS = (
    "p",
    "r",
    "seconds_to_best",
    "steps_to_best",
    "model_mb",
    "seqeval_f",
    "recall_unseen",
    "recall_seen",
    "n_unseen",
    "n_seen",
)
MEAN_SD_KEYS = ("f", "best_dev_f", "words_per_second")


def mean_sd(values: List[Optional[float]]) -> Dict[str, Optional[float]]:
    """Mean and sample standard deviation (n - 1) of the values that are not None; sd is
    None for fewer than two values."""
    known = [v for v in values if v is not None]
    return {"mean": mean(known) if known else None, "sd": stdev(known) if len(known) > 1 else None}


def _mean_of(runs: List[Dict], key: str) -> Optional[float]:
    return mean_sd([r.get(key) for r in runs])["mean"]


def _mean_per_label(runs: List[Dict], key: str) -> Dict[str, float]:
    """Mean per label of a figure that the runs give per label (``per_type_f``)."""
    labels = sorted({label for r in runs for label in (r.get(key) or {})})
    return {label: mean_sd([(r.get(key) or {}).get(label) for r in runs])["mean"] for label in labels}


def summarize_config(name: str, runs: List[Dict]) -> Dict:
    """The summary of one config's runs (see ``summarize_runs``)."""
    return {
        "name": name,
        "runs": runs,
        "seeds": [r.get("seed") for r in runs],
        **{key: mean_sd([r.get(key) for r in runs]) for key in MEAN_SD_KEYS},
        **{key: _mean_of(runs, key) for key in MEAN_KEYS},
        "per_type_f": _mean_per_label(runs, "per_type_f"),
        "recall_per_type": _mean_per_label(runs, "recall_per_type"),
        "peak_rss_mb": max((r["peak_rss_mb"] for r in runs if r.get("peak_rss_mb")), default=None),
        "peak_gpu_mb": max((r["peak_gpu_mb"] for r in runs if r.get("peak_gpu_mb") is not None), default=None),
        "scorers_agree": sum(1 for r in runs if r.get("scorers_agree")),
    }


def summarize_runs(rows: List[Dict]) -> List[Dict]:
    """Group the runs by config name (in order of first appearance) and summarise each
    group: mean and sample standard deviation of test F, best dev F and words/s, means of
    the other figures.

    rows (List[Dict]): One row per run (``benchmark_config``).
    RETURNS (List[Dict]): One summary per config: ``name``, ``runs`` (the rows), ``seeds``,
        ``f``, ``best_dev_f``, ``words_per_second`` (each ``{"mean", "sd"}``), and means of
        ``p``, ``r``, ``per_type_f``, ``seconds_to_best``, ``steps_to_best``, ``model_mb``,
        ``seqeval_f``, ``recall_unseen``, ``recall_seen``, ``recall_per_type``; the largest
        ``peak_rss_mb`` and ``peak_gpu_mb``; ``scorers_agree`` (runs that agree).
    """
    groups: Dict[str, List[Dict]] = {}
    for r in rows:
        groups.setdefault(r["name"], []).append(r)
    return [summarize_config(name, runs) for name, runs in groups.items()]
