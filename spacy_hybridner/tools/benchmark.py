"""Train several configs on one corpus with the same wall-time budget, one after the
other, and compare them on the test split: P/R/F per type, words per second from
``spacy benchmark speed``, time to best dev F, peak memory and model size.

Everything runs through spaCy's own command line (``train``, ``evaluate``,
``benchmark speed``) in child processes, so each model is measured the same way.
"""
import datetime
import json
import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from statistics import mean, median, stdev
from typing import Callable, Dict, List, Optional, Tuple

import srsly

SPEED_LINE = re.compile(r"Mean:\s*([\d.]+)\s*words/s")


def _peak_rss_mb(pid: int) -> Optional[float]:
    """Peak resident memory of a running process (Linux), in MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


STOP_GRACE_S = 120.0  # time a stopped training gets to finish its step and save


def run_streaming(cmd: List[str], prefix: str, echo: Callable[[str], None], budget_s: Optional[float] = None) -> Dict:
    """Run a command, echo its output lines with a prefix, stop it (SIGINT) when the
    budget runs out. RETURNS (Dict): returncode, seconds, peak_rss_mb, stopped, output."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    start = time.time()
    # A shell's background job inherits SIGINT as ignored (nohup ... &); restore the
    # default so that the budget's SIGINT reaches spaCy as a KeyboardInterrupt.
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    lines: List[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            echo(f"[{prefix}] {line.rstrip()}")

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    peak, stopped, stopped_at = None, False, 0.0
    while proc.poll() is None:
        rss = _peak_rss_mb(proc.pid)
        if rss is not None:
            peak = max(peak or 0.0, rss)
        if budget_s is not None and not stopped and time.time() - start > budget_s:
            echo(f"[{prefix}] wall-time budget of {budget_s / 60:.1f} min reached: stopping")
            proc.send_signal(signal.SIGINT)
            stopped, stopped_at = True, time.time()
        elif stopped and time.time() - stopped_at > STOP_GRACE_S:
            echo(f"[{prefix}] still running {STOP_GRACE_S:.0f} s after SIGINT: terminating")
            proc.terminate()
            stopped_at = float("inf")
        time.sleep(0.5)
    reader.join(timeout=10)
    return {
        "returncode": proc.returncode, "seconds": time.time() - start, "peak_rss_mb": peak,
        "stopped": stopped, "output": "".join(lines),
    }


def _dir_size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def check_seed_follows_system(config: Path) -> None:
    """Raise ValueError unless the config's ``[training] seed`` is ``${system.seed}``, so
    that ``--system.seed`` decides the seed of the training run."""
    from thinc.api import Config

    value = Config().from_disk(config, interpolate=False).get("training", {}).get("seed")
    if value != "${system.seed}":
        raise ValueError(
            f"{config}: [training] seed is {value!r}, so --system.seed would not change the training seed; "
            "set `seed = ${system.seed}` in its [training] section."
        )


def benchmark_config(
    config: Path, train: Path, dev: Path, test: Path, output_dir: Path, budget_s: float,
    gpu_id: int, speed_batches: int, speed_repeats: int, echo: Callable[[str], None],
    speed_batch_size: Optional[int] = None, seed: Optional[int] = None, crosscheck: bool = True,
    calibrate: bool = True,
) -> Dict:
    """Train one config (with ``--system.seed seed`` unless ``seed`` is None, the config's
    own seed), evaluate model-best on the test split, measure its speed, with ``calibrate``
    fit the temperature of ``ent._.confidence`` on the dev split (``python -m
    spacy_hybridner calibrate``, pipelines with a ``hybrid_ner`` only: entities unchanged)
    and, with ``crosscheck``, cross-check the scores of the calibrated model (``python -m
    spacy_hybridner crosscheck``, with the training data for the unseen-name breakdown; its
    ECE is the row's ``test_ece``). The model goes to ``output_dir / name``, or ``output_dir /
    name / seed{seed}``. RETURNS (Dict): The run's row, with the training ``curve`` (dev F at
    each evaluation)."""
    from thinc.api import Config

    name = config.stem
    out = output_dir / name if seed is None else output_dir / name / f"seed{seed}"
    log = out / "log.jsonl"
    python = sys.executable
    train_cmd = [
        python, "-m", "spacy", "train", str(config), "--output", str(out), "--paths.train", str(train),
        "--paths.dev", str(dev), "--paths.log", str(log), "--gpu-id", str(gpu_id),
        *(["--system.seed", str(seed)] if seed is not None else []),
    ]
    echo(f"== {name}: training (budget {budget_s / 60:.1f} min{'' if seed is None else f', seed {seed}'})")
    trained = run_streaming(train_cmd, name, echo, budget_s)
    best_dir = out / "model-best"
    if not best_dir.exists():
        raise RuntimeError(
            f"{name}: training produced no model-best (exit code {trained['returncode']}); see the output above."
        )
    records = list(srsly.read_jsonl(log)) if log.exists() else []
    best = max(records, key=lambda r: r["score"]) if records else None
    echo(f"== {name}: evaluating on {test}")
    metrics_path = out / "test_scores.json"
    evaluated = run_streaming(
        [python, "-m", "spacy", "evaluate", str(best_dir), str(test), "--output", str(metrics_path),
         "--gpu-id", str(gpu_id)],
        name, echo,
    )
    if evaluated["returncode"] != 0:
        raise RuntimeError(f"{name}: spacy evaluate failed; see the output above.")
    scores = json.loads(metrics_path.read_text())
    speeds = []
    for i in range(speed_repeats):
        echo(f"== {name}: spacy benchmark speed ({i + 1}/{speed_repeats})")
        result = run_streaming(
            [python, "-m", "spacy", "benchmark", "speed", str(best_dir), str(test), "--gpu-id", str(gpu_id),
             "--batches", str(speed_batches), "--warmup", "1",
             *(["--batch-size", str(speed_batch_size)] if speed_batch_size else [])],
            name, echo,
        )
        match = SPEED_LINE.search(result["output"])
        if result["returncode"] != 0 or not match:
            raise RuntimeError(f"{name}: spacy benchmark speed failed; see the output above.")
        speeds.append(float(match.group(1)))
    # The seed the training used, from the saved config (training.seed follows system.seed).
    trained_config = Config().from_disk(best_dir / "config.cfg")
    calibrated = calibrate and has_hybrid_ner(trained_config)
    analysed_dir = best_dir
    if calibrated:
        analysed_dir = out / "model-calibrated"
        echo(f"== {name}: calibrating ent._.confidence on {dev}")
        result = run_streaming(
            [python, "-m", "spacy_hybridner", "calibrate", str(best_dir), str(dev), str(analysed_dir),
             "--gpu-id", str(gpu_id)],
            name, echo,
        )
        if result["returncode"] != 0:
            raise RuntimeError(f"{name}: the calibrate command failed; see the output above.")
    analysis = (
        _crosscheck_run(analysed_dir, test, train, out / "crosscheck.json", gpu_id, name, echo) if crosscheck else {}
    )
    return {
        "name": name,
        "seed": trained_config["training"]["seed"],
        "run_dir": str(out),
        "config": str(config),
        "train_command": with_config_overrides("python " + " ".join(train_cmd[1:])),
        "p": scores["ents_p"], "r": scores["ents_r"], "f": scores["ents_f"],
        "per_type_f": {k: v["f"] for k, v in sorted((scores.get("ents_per_type") or {}).items())},
        "words_per_second": median(speeds),
        "speed_runs": speeds,
        "best_dev_f": best["score"] if best else None,
        "seconds_to_best": best.get("seconds") if best else None,
        "steps_to_best": best["step"] if best else None,
        "train_seconds": trained["seconds"],
        "stopped_by_budget": trained["stopped"],
        "peak_rss_mb": trained["peak_rss_mb"],
        # From the training logger, on a GPU only: torch.cuda.max_memory_allocated.
        "peak_gpu_mb": max((r["gpu_peak_mb"] for r in records if "gpu_peak_mb" in r), default=None),
        "model_mb": _dir_size_mb(best_dir),
        "calibrated": calibrated,
        "last_step": records[-1]["step"] if records else None,
        "last_epoch": records[-1]["epoch"] if records else None,
        "curve": training_curve(records),
        **analysis,
    }


def has_hybrid_ner(config) -> bool:
    """Whether a pipeline's config has a ``hybrid_ner`` component (what ``calibrate`` fits)."""
    return any(c.get("factory") == "hybrid_ner" for c in config.get("components", {}).values())


def training_curve(records: List[Dict]) -> List[Dict]:
    """The training log's evaluations: ``minutes`` since the start, ``step``, ``epoch`` and
    ``dev_f`` (the score) of each."""
    return [
        {"minutes": r["seconds"] / 60, "step": r["step"], "epoch": r["epoch"], "dev_f": r["score"]}
        for r in records if r.get("seconds") is not None
    ]


def _crosscheck_run(
    best_dir: Path, test: Path, train: Path, check_path: Path, gpu_id: int, name: str, echo: Callable[[str], None],
) -> Dict:
    """Run ``python -m spacy_hybridner crosscheck`` on a trained model. RETURNS (Dict): The
    row's ``seqeval_f``, ``scorers_agree``, ``recall_per_type``, ``recall_unseen``,
    ``recall_seen``, ``n_unseen``, ``n_seen``, and ``test_ece`` (expected calibration error
    of ``ent._.confidence``; None for a pipeline without confidences) with
    ``n_confident_entities``."""
    echo(f"== {name}: seqeval cross-check and recall on unseen names")
    checked = run_streaming(
        [sys.executable, "-m", "spacy_hybridner", "crosscheck", str(best_dir), str(test), "--train-data", str(train),
         "--output", str(check_path), "--gpu-id", str(gpu_id)],
        name, echo,
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


def machine_description(gpu_id: int = -1) -> str:
    """CPU model and cores, Python, spaCy and torch versions; with ``gpu_id`` >= 0 also the
    GPU's name and memory and the CUDA version torch was built with."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import spacy
    import torch

    gpu = ""
    if gpu_id >= 0 and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(gpu_id)
        gpu = f"; GPU {props.name} ({props.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}"
    return (
        f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, spaCy {spacy.__version__}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads){gpu}"
    )


def _pct(value: Optional[float]) -> str:
    return f"{100 * value:.2f}" if value is not None else "-"


def _mean_sd(values: List[Optional[float]]) -> Dict[str, Optional[float]]:
    """Mean and sample standard deviation (n - 1) of the values that are not None; sd is
    None for fewer than two values."""
    known = [v for v in values if v is not None]
    return {
        "mean": mean(known) if known else None,
        "sd": stdev(known) if len(known) > 1 else None,
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
    summaries = []
    for name, runs in groups.items():
        def avg(key: str, runs=runs) -> Optional[float]:
            return _mean_sd([r.get(key) for r in runs])["mean"]

        def avg_dict(key: str, runs=runs) -> Dict[str, float]:
            labels = sorted({label for r in runs for label in (r.get(key) or {})})
            return {label: _mean_sd([(r.get(key) or {}).get(label) for r in runs])["mean"] for label in labels}

        summaries.append({
            "name": name, "runs": runs, "seeds": [r.get("seed") for r in runs],
            **{key: _mean_sd([r.get(key) for r in runs]) for key in ("f", "best_dev_f", "words_per_second")},
            **{key: avg(key) for key in (
                "p", "r", "seconds_to_best", "steps_to_best", "model_mb", "seqeval_f", "recall_unseen", "recall_seen",
                "n_unseen", "n_seen",
            )},
            "per_type_f": avg_dict("per_type_f"), "recall_per_type": avg_dict("recall_per_type"),
            "peak_rss_mb": max((r["peak_rss_mb"] for r in runs if r.get("peak_rss_mb")), default=None),
            "peak_gpu_mb": max((r["peak_gpu_mb"] for r in runs if r.get("peak_gpu_mb") is not None), default=None),
            "scorers_agree": sum(1 for r in runs if r.get("scorers_agree")),
        })
    return summaries


def _results_table(
    items: List[Dict], first_columns: List[str], baseline: str, cells_of: Callable[[Dict, List[str]], List[str]],
) -> List[str]:
    """A Markdown table with one row per config: ``first_columns`` then F per entity type,
    words/s and the ratio to the baseline, dev F and time to it, memory and model size (and
    peak GPU memory when a run has one). ``cells_of(item, labels)`` gives a row's cells but
    the GPU one."""
    labels = sorted({label for item in items for label in item["per_type_f"]})
    gpu_memory = any(item.get("peak_gpu_mb") is not None for item in items)
    head = first_columns + [f"F {label}" for label in labels] + [
        "words/s", f"× {baseline}", "best dev F", "min to best dev F", "steps to best", "peak RSS (MB)", "model (MB)",
    ] + (["peak GPU memory (MiB)"] if gpu_memory else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for item in items:
        cells = cells_of(item, labels)
        if gpu_memory:
            cells.append(f"{item['peak_gpu_mb']:,.0f}" if item.get("peak_gpu_mb") is not None else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _single_run_table(rows: List[Dict], baseline: str) -> List[str]:
    """The table of one run per config (the layout of every run of record before seeds)."""
    base = next((r for r in rows if r["name"] == baseline), None)

    def cells(r: Dict, labels: List[str]) -> List[str]:
        return [
            r["name"], f"{100 * r['p']:.2f}", f"{100 * r['r']:.2f}", f"**{100 * r['f']:.2f}**",
            *[f"{100 * r['per_type_f'][label]:.2f}" if label in r["per_type_f"] else "-" for label in labels],
            f"{r['words_per_second']:,.0f}",
            f"{r['words_per_second'] / base['words_per_second']:.2f}" if base else "-",
            f"{100 * r['best_dev_f']:.2f}" if r["best_dev_f"] is not None else "-",
            f"{r['seconds_to_best'] / 60:.1f}" if r["seconds_to_best"] is not None else "-",
            str(r["steps_to_best"]) if r["steps_to_best"] is not None else "-",
            f"{r['peak_rss_mb']:,.0f}" if r["peak_rss_mb"] else "-",
            f"{r['model_mb']:.1f}",
        ]

    return _results_table(rows, ["model", "test P", "test R", "test F"], baseline, cells)


def _with_sd(stat: Dict[str, Optional[float]], scale: float = 100.0, digits: int = 2, comma: bool = False) -> str:
    if stat["mean"] is None:
        return "-"
    fmt = f"{{:,.{digits}f}}" if comma else f"{{:.{digits}f}}"
    text = fmt.format(scale * stat["mean"])
    return text + (f" ± {fmt.format(scale * stat['sd'])}" if stat["sd"] is not None else "")


def _multi_seed_tables(summaries: List[Dict], baseline: str) -> List[str]:
    """Mean ± sd per config, then every run beneath."""
    base = next((s for s in summaries if s["name"] == baseline), None)

    def cells(s: Dict, labels: List[str]) -> List[str]:
        wps = s["words_per_second"]
        return [
            s["name"], str(len(s["runs"])), f"**{_with_sd(s['f'])}**", _pct(s["p"]), _pct(s["r"]),
            *[_pct(s["per_type_f"].get(label)) for label in labels],
            _with_sd(wps, scale=1.0, digits=0, comma=True),
            f"{wps['mean'] / base['words_per_second']['mean']:.2f}" if base else "-",
            _with_sd(s["best_dev_f"]),
            f"{s['seconds_to_best'] / 60:.1f}" if s["seconds_to_best"] is not None else "-",
            f"{s['steps_to_best']:.0f}" if s["steps_to_best"] is not None else "-",
            f"{s['peak_rss_mb']:,.0f}" if s["peak_rss_mb"] else "-",
            f"{s['model_mb']:.1f}",
        ]

    lines = _results_table(summaries, ["model", "runs", "test F", "test P", "test R"], baseline, cells)
    lines += [
        "",
        "Each run:",
        "",
        "| model | seed | test F | best dev F | words/s | steps to best | min to best dev F "
        "| last evaluation (step, epoch) | finished |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        for r in s["runs"]:
            last = f"{r['last_step']}, {r['last_epoch']}" if r.get("last_step") is not None else "-"
            lines.append(
                f"| {r['name']} | {r.get('seed', '-')} | {_pct(r['f'])} | {_pct(r['best_dev_f'])} | "
                f"{r['words_per_second']:,.0f} | {r['steps_to_best'] if r['steps_to_best'] is not None else '-'} | "
                + (f"{r['seconds_to_best'] / 60:.1f} | " if r["seconds_to_best"] is not None else "- | ")
                + f"{last} | {r.get('finished', '-')} |"
            )
    return lines


def _breakdown_table(summaries: List[Dict]) -> List[str]:
    """Recall per type and on names with unseen words, and the seqeval cross-check."""
    if not any(s.get("recall_unseen") is not None or s.get("recall_seen") is not None for s in summaries):
        return []
    labels = sorted({label for s in summaries for label in s["recall_per_type"]})
    counts = summaries[0]
    head = ["model", "recall: a word unseen in training", "recall: all words seen"] + [
        f"recall {label}" for label in labels
    ] + ["seqeval F", "scorers agree", "test ECE"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summaries:
        ece = _mean_sd([r.get("test_ece") for r in s["runs"]])
        calibrated = any(r.get("calibrated") for r in s["runs"])
        cells = [
            s["name"],
            *[_with_sd(_mean_sd([r.get(key) for r in s["runs"]])) for key in ("recall_unseen", "recall_seen")],
            *[_pct(s["recall_per_type"].get(label)) for label in labels],
            _pct(s["seqeval_f"]), f"{s['scorers_agree']} of {len(s['runs'])}",
            "-" if ece["mean"] is None
            else _with_sd(ece, scale=1.0, digits=4) + ("" if calibrated else " (not calibrated)"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    multi = any(len(s["runs"]) > 1 for s in summaries)
    return [
        "Recall on the test split by type and by whether an entity has a word never seen in training "
        f"({counts['n_unseen']:.0f} entities with such a word, {counts['n_seen']:.0f} with all words seen; words "
        "compared by token text, case-sensitively, against every token of the training split; a gold entity is "
        "found when a predicted one has its exact characters and type), and the test F recomputed with seqeval "
        "(IOB2 tags, conlleval's rules) from the same predictions"
        + (" (mean ± sd, or the mean, over the runs)" if multi else "")
        + ". Scorers agree: runs in which every P, R and F (overall and per type) of spaCy's scorer and of "
        "seqeval differ by at most 1e-9. Test ECE: expected calibration error of `ent._.confidence` on the test "
        "split (10 equal bins), after `calibrate` on the dev split; \"-\" for a pipeline without confidences.",
        "",
        *lines,
    ]


def curve_table(summaries: List[Dict], step_minutes: float = 5.0) -> List[str]:
    """Best dev F so far at every ``step_minutes`` of training, per config (mean over its
    runs; a run that had stopped counts with its best): the training curves as a table.
    Empty when no run has a curve; a run whose evaluations all came within its first
    second (spaCy logs whole seconds) has one, in the first column."""
    curves = {s["name"]: [r.get("curve") or [] for r in s["runs"]] for s in summaries}
    if not any(c for runs in curves.values() for c in runs):
        return []
    longest = max(p["minutes"] for runs in curves.values() for c in runs for p in c)
    marks = [step_minutes * (i + 1) for i in range(int(longest // step_minutes) + 1)]
    head = ["model"] + [f"{m:g} min" for m in marks]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, runs in curves.items():
        cells = [name]
        for m in marks:
            best = [max((p["dev_f"] for p in c if p["minutes"] <= m), default=None) for c in runs if c]
            cells.append(_pct(_mean_sd(best)["mean"]))
        lines.append("| " + " | ".join(cells) + " |")
    return [
        "Training curves: the best dev F reached by each minute mark (mean over the runs; evaluations "
        "every config's `eval_frequency` steps; every point is in the rows' `curve`).",
        "",
        *lines,
    ]


def benchmark_markdown(
    rows: List[Dict], *, corpus: str, command: str, budget_s: float, baseline: str, gpu_id: int,
) -> str:
    """The ``## corpus`` section of the benchmark document: with one run per config, one
    row per config; with several (seeds), mean ± sample standard deviation per config and
    every run beneath; then recall by type and on unseen names, and the seqeval check.

    rows (List[Dict]): One row per run. RETURNS (str): Markdown.
    """
    summaries = summarize_runs(rows)
    multi = any(len(s["runs"]) > 1 for s in summaries)
    lines = _multi_seed_tables(summaries, baseline) if multi else _single_run_table(rows, baseline)
    gpu_memory = any(r.get("peak_gpu_mb") is not None for r in rows)
    seeds = sorted({str(r["seed"]) for r in rows if r.get("seed") is not None})
    seeds_note = (
        f" Each config was trained {max(len(s['runs']) for s in summaries)} times, with `[system] seed` "
        f"{', '.join(seeds)} (`--system.seed`; `[training] seed` follows it); the table gives the mean ± the "
        f"sample standard deviation (n − 1) over the runs, other columns the mean (peak RSS: the largest), "
        f"and the ratio of words/s is that of the means." if multi else ""
    )
    finished = sorted(r["finished"] for r in rows if r.get("finished"))
    machines = list(dict.fromkeys(r["machine"] for r in rows if r.get("machine"))) or [machine_description(gpu_id)]
    when = (f"Runs finished {finished[0]}" + (f" to {finished[-1]}" if finished[-1] != finished[0] else "")
            if finished else f"Run on {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}")
    notes = [
        f"## {corpus}",
        "",
        f"{when} on {' / '.join(machines)}, {'GPU ' + str(gpu_id) if gpu_id >= 0 else 'CPU'}.",
        f"Each model trained for at most {budget_s / 60:.1f} minutes of wall time (or until its "
        f"config's patience / max_steps / max_epochs), one after the other, then evaluated on the test split "
        f"(`spacy evaluate`, model-best by dev F). Words/s: median of repeated "
        f"`spacy benchmark speed` runs on the test split."
        + (" Peak GPU memory: the most that PyTorch's allocator had handed out during training "
           "(`torch.cuda.max_memory_allocated`, read at each evaluation)." if gpu_memory else "")
        + seeds_note,
        "",
        *command_block("\n".join(dict.fromkeys(r.get("benchmark_command") or command for r in rows))),
        *lines,
        "",
    ]
    breakdown = _breakdown_table(summaries)
    if breakdown:
        notes += [*breakdown, ""]
    curves = curve_table(summaries)
    if curves:
        notes += [*curves, ""]
    notes += [
        "Training commands:",
        "",
        *[f"- `{r['name']}`: `{r['train_command']}`" for r in rows],
        "",
    ]
    return "\n".join(notes)


def command_block(command: str) -> List[str]:
    """Markdown lines that show the command a benchmark section was measured with."""
    return ["Command:", "", "```bash", command, "```", ""]


def update_benchmark_doc(path: Path, corpus: str, section: str) -> None:
    """Replace the ``## corpus`` section of the benchmark document (or add it)."""
    header = "# Benchmarks\n\nProduced by `python -m spacy_hybridner benchmark`; each section names its command.\n\n"
    text = path.read_text(encoding="utf8") if path.exists() else header
    pattern = re.compile(rf"^## {re.escape(corpus)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text)
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf8")


def benchmark_command(argv: List[str]) -> str:
    """The exact command of a benchmark run, for the document: ``python -m
    spacy_hybridner benchmark`` with the arguments, after ``SPACY_CONFIG_OVERRIDES``
    when set (spaCy applies those to every training run).

    argv (List[str]): The arguments after ``benchmark``. RETURNS (str): A shell line.
    """
    import shlex

    return with_config_overrides("python -m spacy_hybridner benchmark " + " ".join(shlex.quote(a) for a in argv))


def with_config_overrides(command: str) -> str:
    """``command`` after ``SPACY_CONFIG_OVERRIDES=...`` when that variable is set: spaCy
    reads it in every ``spacy train`` that the command starts, so a recorded command
    without it would not repeat the run."""
    import shlex

    overrides = os.environ.get("SPACY_CONFIG_OVERRIDES")
    return f"SPACY_CONFIG_OVERRIDES={shlex.quote(overrides)} {command}" if overrides else command


def merge_rows(earlier: List[Dict], new: List[Dict]) -> List[Dict]:
    """``earlier`` rows with the ``new`` ones added, a new row replacing an earlier one of
    the same config name and seed; ordered by config (first appearance) then seed."""
    key = lambda r: (r["name"], r.get("seed"))  # noqa: E731
    replaced = {key(r) for r in new}
    rows = [r for r in earlier if key(r) not in replaced] + list(new)
    order = {name: i for i, name in reversed(list(enumerate(r["name"] for r in rows)))}
    return sorted(rows, key=lambda r: (order[r["name"]], -1 if r.get("seed") is None else r["seed"]))


def run_benchmark(
    train: Path, dev: Path, test: Path, configs: List[Path], *, corpus: str, budget_s: float,
    output_dir: Path, doc_path: Optional[Path], baseline: str, command: str, echo: Callable[[str], None],
    speed_batches: int = 30, speed_repeats: int = 3, speed_batch_size: Optional[int] = None, gpu_id: int = -1,
    seeds: int = 1, seed_start: Optional[int] = None, crosscheck: bool = True, calibrate: bool = True,
    append: bool = False,
) -> Dict:
    """Train each config on the same data with the same wall-time budget, one after the
    other, evaluate on the test split, measure speed with ``spacy benchmark speed``, and
    write the comparison as the ``## corpus`` section of the benchmark document.

    train, dev, test (Path): The .spacy files (dev selects model-best).
    configs (List[Path]): Configs to compare, in order.
    corpus (str): Name of the corpus, the section title.
    budget_s (float): Wall-time budget of each training.
    output_dir (Path): Trained models go to ``output_dir / corpus / config name``, and
        the rows to ``output_dir / corpus / benchmark.json``.
    doc_path (Optional[Path]): The Markdown document whose section ``corpus`` is replaced
        by the result; None: write no document.
    baseline (str): Config name that speed ratios refer to.
    command (str): The command to record (``benchmark_command``).
    echo (Callable[[str], None]): Where progress goes.
    speed_batches, speed_repeats, speed_batch_size: For ``spacy benchmark speed``.
    gpu_id (int): GPU id, -1 for CPU.
    seeds (int): Runs per config. With 1 and no ``seed_start``, each config trains once
        with its own ``[system] seed`` into ``output_dir / corpus / name``; otherwise with
        ``--system.seed`` ``seed_start`` (default 0), ``seed_start + 1``, ... into
        ``output_dir / corpus / name / seed{S}``.
    seed_start (Optional[int]): The first seed.
    crosscheck (bool): Cross-check every run's test scores with seqeval and break its recall
        down by type and unseen names (needs seqeval).
    calibrate (bool): Calibrate each ``hybrid_ner`` pipeline on the dev split before the
        cross-check, which then gives the calibrated test ECE.
    append (bool): Keep the runs of earlier benchmark commands in ``output_dir / corpus /
        benchmark.json`` (runs of record split over several sittings) and add these, a run of
        the same config and seed replacing the earlier one; the section covers them all.
    RETURNS (Dict): ``rows`` (one per run), ``summary`` (``summarize_runs``, one per
        config) and ``section`` (the markdown written).
    """
    missing = [str(p) for p in [train, dev, test, *configs] if not Path(p).exists()]
    if missing:
        raise FileNotFoundError(f"not found: {', '.join(missing)}")
    if seeds < 1:
        raise ValueError(f"seeds must be at least 1, not {seeds}")
    if crosscheck:
        from .scoring import require_seqeval

        try:
            require_seqeval()  # fail before the trainings, not after the first
        except ImportError as err:
            raise ImportError(f"{err} Or leave the cross-check out: --no-crosscheck.") from None
    run_seeds: List[Optional[int]] = [None]
    if seeds > 1 or seed_start is not None:
        run_seeds = list(range(seed_start or 0, (seed_start or 0) + seeds))
        for config in configs:
            check_seed_follows_system(config)
    rows_path = output_dir / corpus / "benchmark.json"
    earlier = json.loads(rows_path.read_text(encoding="utf8")) if append and rows_path.exists() else []
    rows: List[Dict] = []
    for config in configs:
        for seed in run_seeds:
            rows.append(benchmark_config(
                config, train, dev, test, output_dir / corpus, budget_s, gpu_id,
                speed_batches, speed_repeats, echo, speed_batch_size, seed=seed, crosscheck=crosscheck,
                calibrate=calibrate,
            ))
            rows[-1]["benchmark_command"] = command
            rows[-1]["budget_minutes"] = budget_s / 60
            rows[-1]["machine"] = machine_description(gpu_id)
            rows[-1]["finished"] = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
            echo(
                f"== {rows[-1]['name']} (seed {rows[-1]['seed']}): test F {100 * rows[-1]['f']:.2f}, "
                f"{rows[-1]['words_per_second']:,.0f} words/s"
            )
            # Every run so far, so that an interrupted benchmark keeps what it measured.
            rows_path.parent.mkdir(parents=True, exist_ok=True)
            rows_path.write_text(json.dumps(merge_rows(earlier, rows), indent=2), encoding="utf8")
    rows = merge_rows(earlier, rows)
    section = benchmark_markdown(
        rows, corpus=corpus, command=command, budget_s=budget_s, baseline=baseline, gpu_id=gpu_id,
    )
    if doc_path is not None:
        update_benchmark_doc(doc_path, corpus, section)
    return {"rows": rows, "summary": summarize_runs(rows), "section": section}


def parse_named_models(items: List[str]) -> List[Tuple[str, Path]]:
    """``NAME=PATH`` items (or a bare PATH, named by its folder's parent: ``.../hybrid_cpu/
    seed0/model-best`` -> ``hybrid_cpu/seed0``) as (name, path) pairs; the paths must exist."""
    models = []
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            path = item
            name = "/".join(Path(item).parts[-3:-1]) or Path(item).name
        if not Path(path).exists():
            raise FileNotFoundError(f"pipeline not found: {path} (give NAME=PATH of a trained pipeline folder)")
        models.append((name, Path(path)))
    names = [n for n, _ in models]
    if len(set(names)) != len(names):
        raise ValueError(f"two pipelines have the same name in {names}: name them NAME=PATH")
    return models


def compare_speed(
    models: List[Tuple[str, Path]], data: Path, *, echo: Callable[[str], None], batch_size: Optional[int] = None,
    batches: int = 30, rounds: int = 3, gpu_id: int = -1,
) -> List[Dict]:
    """Words per second of trained pipelines side by side: ``rounds`` rounds, each running
    ``spacy benchmark speed`` once per pipeline in turn (so that a change of the machine's
    load falls on all of them), in child processes like the benchmark's.

    RETURNS (List[Dict]): Per pipeline: ``name``, ``model``, ``runs`` (words/s of each round)
        and their ``median``, ``min`` and ``max``.
    """
    if not Path(data).exists():
        raise FileNotFoundError(f"not found: {data}")
    runs: Dict[str, List[float]] = {name: [] for name, _ in models}
    for i in range(rounds):
        for name, path in models:
            echo(f"== {name}: spacy benchmark speed (round {i + 1}/{rounds})")
            result = run_streaming(
                [sys.executable, "-m", "spacy", "benchmark", "speed", str(path), str(data), "--gpu-id", str(gpu_id),
                 "--batches", str(batches), "--warmup", "1",
                 *(["--batch-size", str(batch_size)] if batch_size else [])],
                name, echo,
            )
            match = SPEED_LINE.search(result["output"])
            if result["returncode"] != 0 or not match:
                raise RuntimeError(f"{name}: spacy benchmark speed failed; see the output above.")
            runs[name].append(float(match.group(1)))
    return [
        {"name": name, "model": str(path), "runs": runs[name], "median": median(runs[name]),
         "min": min(runs[name]), "max": max(runs[name])}
        for name, path in models
    ]


def speed_markdown(rows: List[Dict], *, title: str, command: str, baseline: str, gpu_id: int = -1) -> str:
    """The section of a side-by-side speed comparison (``compare_speed``)."""
    base = next((r for r in rows if r["name"] == baseline), None)
    date = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    lines = [
        f"## {title}",
        "",
        f"Run on {date} on {machine_description(gpu_id)}, {'GPU ' + str(gpu_id) if gpu_id >= 0 else 'CPU'}. "
        f"Words/s of `spacy benchmark speed`, every pipeline once per round in turn; the median of the rounds, "
        f"their range, and the ratio of medians to `{baseline}`.",
        "",
        *command_block(command),
        f"| pipeline | words/s (median) | range | × {baseline} | folder |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = f"{r['median'] / base['median']:.2f}" if base else "-"
        lines.append(
            f"| {r['name']} | {r['median']:,.0f} | {r['min']:,.0f}–{r['max']:,.0f} | {ratio} | `{r['model']}` |"
        )
    return "\n".join(lines) + "\n"


def section_from_rows(rows_path: Path, *, corpus: str, baseline: str, gpu_id: int = -1) -> Dict:
    """The benchmark section of the runs stored in a ``benchmark.json`` (``run_benchmark``
    keeps every run there): for runs of record split over several sittings, or rows
    completed afterwards. The budget is the largest of the rows' ``budget_minutes``.

    RETURNS (Dict): ``rows``, ``command`` (the rows' distinct benchmark commands, one per
        line) and ``section`` (the Markdown)."""
    rows_path = Path(rows_path)
    if not rows_path.exists():
        raise FileNotFoundError(f"not found: {rows_path} (the benchmark.json of a benchmark's --output-dir/CORPUS)")
    rows = json.loads(rows_path.read_text(encoding="utf8"))
    if not rows:
        raise ValueError(f"{rows_path} holds no runs")
    budgets = [r["budget_minutes"] for r in rows if r.get("budget_minutes") is not None]
    command = "\n".join(dict.fromkeys(r.get("benchmark_command") or "(not recorded)" for r in rows))
    section = benchmark_markdown(
        rows, corpus=corpus, command=command,
        budget_s=60 * max(budgets) if budgets else 0.0, baseline=baseline, gpu_id=gpu_id,
    )
    return {"rows": rows, "command": command, "section": section}
