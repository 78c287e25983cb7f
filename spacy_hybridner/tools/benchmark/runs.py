"""One run of a benchmark: train a config through ``spacy train`` in a child process,
evaluate model-best on the test split, measure its speed, calibrate and cross-check it,
and gather what was measured into the run's row."""

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Callable, Dict, List, Optional, Tuple

import srsly

from .runner import dir_size_mb, run_streaming, with_config_overrides
from .speed import benchmark_speed

Echo = Callable[[str], None]


@dataclass
class BenchmarkSettings:
    """What every run of a benchmark shares.

    train, dev, test (Path): The .spacy files (dev selects model-best and calibrates).
    output_dir (Path): A config's model goes to ``output_dir / name``, or ``output_dir /
        name / seed{seed}``.
    budget_s (float): Wall-time budget of each training.
    gpu_id (int): GPU id, -1 for CPU.
    speed_batches, speed_repeats, speed_batch_size: For ``spacy benchmark speed`` (words/s
        is the median of ``speed_repeats`` runs).
    crosscheck (bool): Cross-check the test scores with seqeval and break recall down by
        type and unseen names (``python -m spacy_hybridner crosscheck``; needs seqeval).
    calibrate (bool): Fit the temperature of ``ent._.confidence`` of a ``hybrid_ner``
        pipeline on the dev split before the cross-check, which then gives its test ECE.
    """

    train: Path
    dev: Path
    test: Path
    output_dir: Path
    budget_s: float
    gpu_id: int = -1
    speed_batches: int = 30
    speed_repeats: int = 3
    speed_batch_size: Optional[int] = None
    crosscheck: bool = True
    calibrate: bool = True


def has_hybrid_ner(config) -> bool:
    """Whether a pipeline's config has a ``hybrid_ner`` component (what ``calibrate`` fits)."""
    return any(c.get("factory") == "hybrid_ner" for c in config.get("components", {}).values())


def training_curve(records: List[Dict]) -> List[Dict]:
    """The training log's evaluations: ``minutes`` since the start, ``step``, ``epoch`` and
    ``dev_f`` (the score) of each."""
    return [
        {"minutes": r["seconds"] / 60, "step": r["step"], "epoch": r["epoch"], "dev_f": r["score"]}
        for r in records
        if r.get("seconds") is not None
    ]


def _train(config: Path, out: Path, s: BenchmarkSettings, seed: Optional[int], echo: Echo) -> Tuple[List[str], Dict]:
    """``spacy train`` within the budget, logging to ``out / log.jsonl``. RETURNS: The
    command and ``run_streaming``'s result. Raises RuntimeError when it saved no model-best."""
    name = config.stem
    train_cmd = [
        sys.executable,
        "-m",
        "spacy",
        "train",
        str(config),
        "--output",
        str(out),
        "--paths.train",
        str(s.train),
        "--paths.dev",
        str(s.dev),
        "--paths.log",
        str(out / "log.jsonl"),
        "--gpu-id",
        str(s.gpu_id),
        *(["--system.seed", str(seed)] if seed is not None else []),
    ]
    echo(f"== {name}: training (budget {s.budget_s / 60:.1f} min{'' if seed is None else f', seed {seed}'})")
    trained = run_streaming(train_cmd, name, echo, s.budget_s)
    if not (out / "model-best").exists():
        raise RuntimeError(
            f"{name}: training produced no model-best (exit code {trained['returncode']}); see the output above."
        )
    return train_cmd, trained


def _evaluate(best_dir: Path, out: Path, s: BenchmarkSettings, name: str, echo: Echo) -> Dict:
    """``spacy evaluate`` of model-best on the test split. RETURNS: Its scores."""
    echo(f"== {name}: evaluating on {s.test}")
    metrics_path = out / "test_scores.json"
    evaluated = run_streaming(
        [
            sys.executable,
            "-m",
            "spacy",
            "evaluate",
            str(best_dir),
            str(s.test),
            "--output",
            str(metrics_path),
            "--gpu-id",
            str(s.gpu_id),
        ],
        name,
        echo,
    )
    if evaluated["returncode"] != 0:
        raise RuntimeError(f"{name}: spacy evaluate failed; see the output above.")
    return json.loads(metrics_path.read_text())


def _speeds(best_dir: Path, s: BenchmarkSettings, name: str, echo: Echo) -> List[float]:
    """Words/s of ``speed_repeats`` runs of ``spacy benchmark speed`` on the test split."""
    speeds = []
    for i in range(s.speed_repeats):
        echo(f"== {name}: spacy benchmark speed ({i + 1}/{s.speed_repeats})")
        speeds.append(
            benchmark_speed(
                best_dir,
                s.test,
                name=name,
                echo=echo,
                batches=s.speed_batches,
                batch_size=s.speed_batch_size,
                gpu_id=s.gpu_id,
            )
        )
    return speeds


def _calibrate(best_dir: Path, out: Path, s: BenchmarkSettings, name: str, echo: Echo) -> Path:
    """``python -m spacy_hybridner calibrate`` on the dev split. RETURNS: The calibrated pipeline."""
    calibrated_dir = out / "model-calibrated"
    echo(f"== {name}: calibrating ent._.confidence on {s.dev}")
    result = run_streaming(
        [
            sys.executable,
            "-m",
            "spacy_hybridner",
            "calibrate",
            str(best_dir),
            str(s.dev),
            str(calibrated_dir),
            "--gpu-id",
            str(s.gpu_id),
        ],
        name,
        echo,
    )
    if result["returncode"] != 0:
        raise RuntimeError(f"{name}: the calibrate command failed; see the output above.")
    return calibrated_dir


def _crosscheck_run(model_dir: Path, check_path: Path, s: BenchmarkSettings, name: str, echo: Echo) -> Dict:
    """Run ``python -m spacy_hybridner crosscheck`` on a trained model. RETURNS (Dict): The
    row's ``seqeval_f``, ``scorers_agree``, ``recall_per_type``, ``recall_unseen``,
    ``recall_seen``, ``n_unseen``, ``n_seen``, and ``test_ece`` (expected calibration error
    of ``ent._.confidence``; None for a pipeline without confidences) with
    ``n_confident_entities``."""
    echo(f"== {name}: seqeval cross-check and recall on unseen names")
    checked = run_streaming(
        [
            sys.executable,
            "-m",
            "spacy_hybridner",
            "crosscheck",
            str(model_dir),
            str(s.test),
            "--train-data",
            str(s.train),
            "--output",
            str(check_path),
            "--gpu-id",
            str(s.gpu_id),
        ],
        name,
        echo,
    )
    if checked["returncode"] not in (0, 1) or not check_path.exists():  # 1: the scorers disagree, recorded
        raise RuntimeError(f"{name}: the crosscheck command failed; see the output above.")
    analysis = json.loads(check_path.read_text())
    check, breakdown = analysis["crosscheck"], analysis["breakdown"]
    return {
        "seqeval_f": check["seqeval"]["ents_f"],
        "scorers_agree": check["agree"],
        "recall_per_type": {k: v["recall"] for k, v in breakdown["per_type"].items()},
        "recall_unseen": breakdown["unseen"]["recall"],
        "recall_seen": breakdown["seen"]["recall"],
        "n_unseen": breakdown["unseen"]["gold"],
        "n_seen": breakdown["seen"]["gold"],
        "test_ece": (analysis.get("calibration") or {}).get("ece"),
        "n_confident_entities": (analysis.get("calibration") or {}).get("n_entities"),
    }


def _training_figures(trained: Dict, records: List[Dict]) -> Dict:
    """The row's figures from the training process and its log."""
    best = max(records, key=lambda r: r["score"]) if records else None
    return {
        "best_dev_f": best["score"] if best else None,
        "seconds_to_best": best.get("seconds") if best else None,
        "steps_to_best": best["step"] if best else None,
        "train_seconds": trained["seconds"],
        "stopped_by_budget": trained["stopped"],
        "peak_rss_mb": trained["peak_rss_mb"],
        # From the training logger, on a GPU only: torch.cuda.max_memory_allocated.
        "peak_gpu_mb": max((r["gpu_peak_mb"] for r in records if "gpu_peak_mb" in r), default=None),
    }


def benchmark_config(config: Path, settings: BenchmarkSettings, echo: Echo, seed: Optional[int] = None) -> Dict:
    """Train one config (with ``--system.seed seed`` unless ``seed`` is None, the config's
    own seed), evaluate model-best on the test split, measure its speed, with ``calibrate``
    fit the temperature of ``ent._.confidence`` on the dev split (``python -m
    spacy_hybridner calibrate``, pipelines with a ``hybrid_ner`` only: entities unchanged)
    and, with ``crosscheck``, cross-check the scores of the calibrated model (``python -m
    spacy_hybridner crosscheck``, with the training data for the unseen-name breakdown; its
    ECE is the row's ``test_ece``). The model goes to ``settings.output_dir / name``, or
    ``settings.output_dir / name / seed{seed}``. RETURNS (Dict): The run's row, with the
    training ``curve`` (dev F at each evaluation)."""
    from thinc.api import Config

    name, s = config.stem, settings
    out = s.output_dir / name if seed is None else s.output_dir / name / f"seed{seed}"
    best_dir = out / "model-best"
    train_cmd, trained = _train(config, out, s, seed, echo)
    log = out / "log.jsonl"
    records = list(srsly.read_jsonl(log)) if log.exists() else []
    scores = _evaluate(best_dir, out, s, name, echo)
    speeds = _speeds(best_dir, s, name, echo)
    # The seed the training used, from the saved config (training.seed follows system.seed).
    trained_config = Config().from_disk(best_dir / "config.cfg")
    calibrated = s.calibrate and has_hybrid_ner(trained_config)
    analysed_dir = _calibrate(best_dir, out, s, name, echo) if calibrated else best_dir
    analysis = _crosscheck_run(analysed_dir, out / "crosscheck.json", s, name, echo) if s.crosscheck else {}
    return {
        "name": name,
        "seed": trained_config["training"]["seed"],
        "run_dir": str(out),
        "config": str(config),
        "train_command": with_config_overrides("python " + " ".join(train_cmd[1:])),
        "p": scores["ents_p"],
        "r": scores["ents_r"],
        "f": scores["ents_f"],
        "per_type_f": {k: v["f"] for k, v in sorted((scores.get("ents_per_type") or {}).items())},
        "words_per_second": median(speeds),
        "speed_runs": speeds,
        **_training_figures(trained, records),
        "model_mb": dir_size_mb(best_dir),
        "calibrated": calibrated,
        "last_step": records[-1]["step"] if records else None,
        "last_epoch": records[-1]["epoch"] if records else None,
        "curve": training_curve(records),
        **analysis,
    }
