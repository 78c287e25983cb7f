"""``inference-benchmark``: what trained pipelines cost and give at inference, side by side.

For each named pipeline, in a child process of its own (so that its peak memory is its
alone): dev and test F of spaCy's scorer (``nlp.evaluate``), the expected calibration error
of ``ent._.confidence`` on the test split, the predicted entities of every test document
(to compare a pipeline with its "twin", e.g. a quantized one with its float32 original),
the latency of one short text at batch 1, the peak RSS and the folder's size on disk.
Words/s are not measured here: ``speed`` measures them (all pipelines in one run), and
its ``--results-path`` JSON can be read into the same rows and table.
"""

import datetime
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .benchmark.render import _table, command_block
from .benchmark.runner import dir_size_mb, machine_description, run_streaming

CHILD_MODULE = "spacy_hybridner.tools.inference_benchmark"
LATENCY_WORDS = 30


def parse_twins(items: Sequence[str], names: Sequence[str]) -> Dict[str, str]:
    """``NAME=TWIN`` items (e.g. ``hybrid_trf_int8=hybrid_trf``) as ``{NAME: TWIN}``; both
    must be names of the pipelines. Raises ValueError naming what is wrong."""
    twins: Dict[str, str] = {}
    for item in items:
        name, sep, twin = item.partition("=")
        if not sep or not name or not twin:
            raise ValueError(f"--twin {item}: give NAME=TWIN, two names of the pipelines")
        if name in twins:
            raise ValueError(f"--twin {item}: {name} already has the twin {twins[name]}")
        twins[name] = twin
    check_twins(twins, names)
    return twins


def check_twins(twins: Dict[str, str], names: Sequence[str]) -> None:
    """Raise ValueError when a name of ``twins`` is none of the pipelines' or a pipeline is its own twin."""
    for name, twin in twins.items():
        for side in (name, twin):
            if side not in names:
                raise ValueError(f"--twin {name}={twin}: {side} is none of the pipelines' names: {list(names)}")
        if name == twin:
            raise ValueError(f"--twin {name}={twin}: a pipeline cannot be its own twin")


def read_speed_results(path: Path) -> Dict[str, Any]:
    """The JSON that ``speed --results-path`` writes (``command`` and ``runs``, each with its
    ``name`` and the ``median`` words/s of its rounds). RETURNS (Dict): ``command`` and
    ``words_per_second`` by name. Raises FileNotFoundError or ValueError."""
    if not Path(path).exists():
        raise FileNotFoundError(f"--speed-results not found: {path}")
    data = json.loads(Path(path).read_text(encoding="utf8"))
    runs = data.get("runs") if isinstance(data, dict) else None
    if not runs or not all(isinstance(r, dict) and "name" in r and "median" in r for r in runs):
        raise ValueError(f"{path} is not the JSON of `speed --results-path` (runs with a name and a median)")
    return {"command": data.get("command"), "words_per_second": {r["name"]: float(r["median"]) for r in runs}}


# --- the child: one pipeline ---------------------------------------------------------------
def _evaluate(nlp: Any, path: Path) -> Tuple[Dict, List]:
    """``nlp.evaluate`` on the examples of a .spacy file (made by spaCy's ``Corpus``, as
    ``spacy evaluate`` makes them). RETURNS: the scores and the predicted examples (kept
    by the scorer, so that the pipeline annotates the split once)."""
    from spacy.scorer import Scorer
    from spacy.training import Corpus

    class KeepingScorer(Scorer):
        examples: List = []

        def score(self, examples, **kwargs):
            self.examples = list(examples)
            return super().score(self.examples, **kwargs)

    scorer = KeepingScorer(nlp=nlp)
    scores = nlp.evaluate(list(Corpus(str(path))(nlp)), scorer=scorer)
    return scores, scorer.examples


def latency_text(texts: Sequence[str], n_words: int = LATENCY_WORDS) -> str:
    """The first ``n_words`` words (split at whitespace) of the texts in order, as one
    text: those of the first document, and of the next ones while it has fewer."""
    words: List[str] = []
    for text in texts:
        words += text.split()[: n_words - len(words)]
        if len(words) >= n_words:
            break
    return " ".join(words)


def latency_ms(nlp: Any, text: str, calls: int = 100, warmup: int = 5) -> Dict[str, float]:
    """``nlp(text)`` ``warmup`` times, then ``calls`` times, each timed.
    RETURNS (Dict): ``median`` and ``p95`` (95th percentile, linear interpolation) in ms."""
    import numpy

    for _ in range(warmup):
        nlp(text)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        nlp(text)
        times.append(1000 * (time.perf_counter() - start))
    return {"median": median(times), "p95": float(numpy.percentile(times, 95))}


def measure_pipeline(
    model: Path, dev: Path, test: Path, *, latency_calls: int = 100, warmup: int = 5, gpu_id: int = -1
) -> Dict[str, Any]:
    """Measure one pipeline in this process (the child of :func:`run_inference_benchmark`).
    Torch's thread count is left as the process has it, and recorded.

    RETURNS (Dict): ``dev_f``, ``test_f``, ``test_ece`` (None without confidences),
        ``n_confidences``, ``entities`` (per test document, ``[start_char, end_char, label]``),
        the latency (``latency_median_ms``, ``latency_p95_ms``, ``latency_words``),
        ``peak_rss_mb`` of this process, ``torch_threads`` and ``temperatures`` (of the
        components that have one).
    """
    import spacy
    import torch

    from ..calibration import confidence_pairs, expected_calibration_error
    from ..gpu import setup_gpu

    setup_gpu(gpu_id)
    nlp = spacy.load(model)
    dev_scores, _ = _evaluate(nlp, dev)
    test_scores, examples = _evaluate(nlp, test)
    pairs = confidence_pairs(examples)
    text = latency_text([eg.reference.text for eg in examples])
    latency = latency_ms(nlp, text, latency_calls, warmup)
    return {
        "dev_f": dev_scores.get("ents_f"),
        "test_f": test_scores.get("ents_f"),
        "test_ece": expected_calibration_error([c for c, _ in pairs], [ok for _, ok in pairs]) if pairs else None,
        "n_confidences": len(pairs),
        "entities": [[[e.start_char, e.end_char, e.label_] for e in eg.predicted.ents] for eg in examples],
        "latency_median_ms": latency["median"],
        "latency_p95_ms": latency["p95"],
        "latency_words": len(text.split()),
        "latency_calls": latency_calls,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "torch_threads": torch.get_num_threads(),
        "temperatures": {n: p.cfg["temperature"] for n, p in nlp.pipeline if "temperature" in getattr(p, "cfg", {})},
    }


def _child_main(argv: List[str]) -> None:
    """``python -m spacy_hybridner.tools.inference_benchmark SETTINGS_JSON OUT_JSON``."""
    settings = json.loads(argv[0])
    result = measure_pipeline(
        Path(settings["model"]),
        Path(settings["dev"]),
        Path(settings["test"]),
        latency_calls=settings["latency_calls"],
        warmup=settings["warmup"],
        gpu_id=settings["gpu_id"],
    )
    Path(argv[1]).write_text(json.dumps(result), encoding="utf8")


# --- the parent: the pipelines side by side ------------------------------------------------
def _measure_in_child(name: str, model: Path, settings: Dict[str, Any], echo: Callable[[str], None]) -> Dict:
    """:func:`measure_pipeline` in a child process (its output echoed after ``[name]``).
    Raises RuntimeError naming the pipeline when it fails."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        child_settings = json.dumps(dict(settings, model=str(model)))
        result = run_streaming([sys.executable, "-m", CHILD_MODULE, child_settings, str(out)], name, echo)
        if result["returncode"] != 0 or not out.exists():
            raise RuntimeError(
                f"{name}: the measurement of {model} failed (exit status {result['returncode']}); see its output above."
            )
        measured = json.loads(out.read_text(encoding="utf8"))
    measured["seconds"] = result["seconds"]
    return measured


def _twin_columns(measured: Dict[str, Dict], name: str, twin: Optional[str]) -> Dict[str, Any]:
    """ΔF (test F minus the twin's) and the share of test documents whose entities are the twin's."""
    if twin is None:
        return {"twin": None, "delta_f_vs_twin": None, "identical_docs_vs_twin": None}
    mine, theirs = measured[name]["entities"], measured[twin]["entities"]
    if len(mine) != len(theirs):
        raise RuntimeError(f"{name} and its twin {twin} annotated {len(mine)} and {len(theirs)} test documents")
    f, twin_f = measured[name]["test_f"], measured[twin]["test_f"]
    return {
        "twin": twin,
        "delta_f_vs_twin": f - twin_f if f is not None and twin_f is not None else None,
        "identical_docs_vs_twin": sum(a == b for a, b in zip(mine, theirs)) / len(mine) if mine else None,
    }


def _speed_columns(speed: Optional[Dict[str, Any]], name: str, baseline: str) -> Dict[str, Any]:
    """Words/s of ``name`` in the speed results and its ratio to the baseline's."""
    wps = (speed or {}).get("words_per_second", {})
    mine, base = wps.get(name), wps.get(baseline)
    return {
        "words_per_second": mine,
        "speed_ratio": mine / base if mine is not None and base else None,
        "speed_command": speed.get("command") if speed and mine is not None else None,
    }


def run_inference_benchmark(
    models: List[Tuple[str, Path]],
    dev: Path,
    test: Path,
    *,
    echo: Callable[[str], None],
    twins: Optional[Dict[str, str]] = None,
    speed_results: Optional[Path] = None,
    baseline: Optional[str] = None,
    latency_calls: int = 100,
    warmup: int = 5,
    gpu_id: int = -1,
) -> List[Dict]:
    """Measure trained pipelines one after the other, each in a child process.

    models (List[Tuple[str, Path]]): (name, pipeline folder), from ``parse_named_models``.
    dev, test (Path): Gold .spacy files. twins (Dict[str, str]): ``{NAME: TWIN}``.
    speed_results (Path): The JSON of ``speed --results-path``, for words/s (by name).
    baseline (str): The name that the words/s ratio refers to (default: the first).
    latency_calls, warmup (int): Timed calls and warm-up calls of the latency.
    RETURNS (List[Dict]): One row per pipeline, in order (without the entities).
    """
    from .benchmark.speed import speed_baseline

    for path in (dev, test):
        if not Path(path).exists():
            raise FileNotFoundError(f"not found: {path}")
    twins = twins or {}
    check_twins(twins, [n for n, _ in models])
    baseline = speed_baseline(models, baseline)
    speed = read_speed_results(speed_results) if speed_results is not None else None
    settings = {"dev": str(dev), "test": str(test), "latency_calls": latency_calls, "warmup": warmup, "gpu_id": gpu_id}
    measured = {}
    for i, (name, path) in enumerate(models):
        echo(f"== {name} ({i + 1}/{len(models)}): {path}")
        done = measured[name] = _measure_in_child(name, path, settings, echo)
        echo(f"   test F {done['test_f']}, latency median {done['latency_median_ms']:.1f} ms")
    rows = []
    for name, path in models:
        m = {k: v for k, v in measured[name].items() if k != "entities"}
        row = {"name": name, "model": str(path), **_twin_columns(measured, name, twins.get(name))}
        row.update(m, test_docs=len(measured[name]["entities"]), model_mb=dir_size_mb(Path(path)))
        row.update(_speed_columns(speed, name, baseline), baseline=baseline, gpu_id=gpu_id)
        rows.append(row)
    return rows


# --- the section and the picture -----------------------------------------------------------
def _fmt(value: Optional[float], spec: str, scale: float = 1.0, sign: bool = False) -> str:
    if value is None:
        return "-"
    return format(scale * value, ("+" if sign else "") + spec)


def _cells(r: Dict) -> List[str]:
    return [
        r["name"],
        r["twin"] or "-",
        f"**{_fmt(r['test_f'], '.2f', 100)}**",
        _fmt(r["dev_f"], ".2f", 100),
        _fmt(r["delta_f_vs_twin"], ".2f", 100, sign=True),
        _fmt(r["identical_docs_vs_twin"], ".1f", 100),
        _fmt(r["test_ece"], ".4f"),
        _fmt(r["words_per_second"], ",.0f"),
        _fmt(r["speed_ratio"], ".2f"),
        f"{r['latency_median_ms']:.1f} / {r['latency_p95_ms']:.1f}",
        _fmt(r["peak_rss_mb"], ",.0f"),
        f"{r['model_mb']:.1f}",
    ]


def inference_markdown(rows: List[Dict], *, title: str, command: str, gpu_id: int = -1) -> str:
    """The ``## title`` section of an inference benchmark (:func:`run_inference_benchmark`'s rows)."""
    baseline = rows[0]["baseline"] if rows else "-"
    first = rows[0] if rows else {}
    threads = ", ".join(str(t) for t in dict.fromkeys(r["torch_threads"] for r in rows))
    date = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    commands = [command, *dict.fromkeys(r["speed_command"] for r in rows if r.get("speed_command"))]
    head = ["pipeline", "twin", "test F", "dev F", "ΔF vs twin", "identical docs vs twin (%)", "test ECE"]
    head += ["words/s", f"× {baseline}", "latency median / p95 (ms)", "peak RSS (MB)", "disk (MB)"]
    note = (
        f"Run on {date} on {machine_description(gpu_id)}, {'GPU ' + str(gpu_id) if gpu_id >= 0 else 'CPU'}; "
        f"each pipeline in its own process, torch with {threads} thread(s). F: spaCy's scorer (`nlp.evaluate`, "
        f"ents_f) on the dev and test splits; ΔF: test F minus the twin's, in points; identical docs: the share of "
        f"the {first.get('test_docs', 0)} test documents whose predicted entities (characters and label) are the "
        "twin's exactly; test ECE: expected calibration error of `ent._.confidence` on the test split (10 equal "
        'bins), the pipeline as given (calibrated where `calibrate` made it; "-": no confidences). Words/s: the '
        f'median of `speed` (its command below; "-" where it has no such name), × {baseline}: their ratio. '
        f"Latency: `nlp(text)` of one {first.get('latency_words', 0)}-word text (the test split's first words) at "
        f"batch 1, {first.get('latency_calls', 0)} calls after warm-up. Peak RSS: the process's (loading, "
        "evaluating both splits, the latency calls). Disk: the pipeline's folder."
    )
    lines = [f"## {title}", "", note, "", *command_block("\n".join(commands)), *_table(head, [_cells(r) for r in rows])]
    return "\n".join(lines) + "\n"


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError(
            "The frontier plot needs matplotlib: pip install 'spacy-hybridner[report]' (or pip install matplotlib)."
        ) from None
    return plt


def check_plot(models: List[Tuple[str, Path]], speed_results: Optional[Path]) -> None:
    """Before measuring: the frontier plot needs matplotlib and words/s of at least one of the
    pipelines. Raises ValueError (or ImportError naming the extra) otherwise."""
    if speed_results is None:
        raise ValueError("--plot needs --speed-results (the words/s of its x axis)")
    names = read_speed_results(speed_results)["words_per_second"]
    if not any(name in names for name, _ in models):
        raise ValueError(f"--plot: none of the pipelines' names is in {speed_results} (it has {list(names)})")
    _pyplot()


def plot_frontier(rows: List[Dict], path: Path) -> None:
    """A PNG of test F against words/s (log scale) of the pipelines that have both, each
    point labelled with its name; the line joins those that no other is faster and better than."""
    points = sorted(
        (
            (r["words_per_second"], 100 * r["test_f"], r["name"])
            for r in rows
            if r["words_per_second"] and r["test_f"] is not None
        ),
        reverse=True,
    )
    if not points:
        raise ValueError("no pipeline has both words/s (--speed-results) and a test F: nothing to plot")
    frontier, best = [], float("-inf")
    for wps, f, _ in points:  # fastest first: a point is on the frontier when it beats every faster one
        if f > best:
            frontier.append((wps, f))
            best = f
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot([p[0] for p in frontier], [p[1] for p in frontier], color="0.6", linestyle="--", zorder=1)
    ax.scatter([p[0] for p in points], [p[1] for p in points], zorder=2)
    for wps, f, name in points:
        ax.annotate(name, (wps, f), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xscale("log")
    ax.margins(x=0.15, y=0.1)  # room for the names of the outermost points
    ax.set_xlabel("words/s (log scale)")
    ax.set_ylabel("test F (%)")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    plt.close(fig)


if __name__ == "__main__":
    _child_main(sys.argv[1:])
