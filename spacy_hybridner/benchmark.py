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
from statistics import median
from typing import Callable, Dict, List, Optional

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


def benchmark_config(
    config: Path, train: Path, dev: Path, test: Path, output_dir: Path, budget_s: float,
    gpu_id: int, speed_batches: int, speed_repeats: int, echo: Callable[[str], None],
    speed_batch_size: Optional[int] = None,
) -> Dict:
    name = config.stem
    out = output_dir / name
    log = out / "log.jsonl"
    python = sys.executable
    train_cmd = [
        python, "-m", "spacy", "train", str(config), "--output", str(out), "--paths.train", str(train),
        "--paths.dev", str(dev), "--paths.log", str(log), "--gpu-id", str(gpu_id),
    ]
    echo(f"== {name}: training (budget {budget_s / 60:.1f} min)")
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
    return {
        "name": name,
        "config": str(config),
        "train_command": "python " + " ".join(train_cmd[1:]),
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


def benchmark_markdown(
    rows: List[Dict], *, corpus: str, command: str, budget_s: float, baseline: str, gpu_id: int,
) -> str:
    base = next((r for r in rows if r["name"] == baseline), None)
    labels = sorted({label for r in rows for label in r["per_type_f"]})
    head = ["model", "test P", "test R", "test F"] + [f"F {label}" for label in labels] + [
        "words/s", f"× {baseline}", "best dev F", "min to best dev F", "steps to best", "peak RSS (MB)", "model (MB)",
    ]
    gpu_memory = any(r.get("peak_gpu_mb") is not None for r in rows)
    if gpu_memory:
        head.append("peak GPU memory (MiB)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        ratio = f"{r['words_per_second'] / base['words_per_second']:.2f}" if base else "-"
        cells = [
            r["name"], f"{100 * r['p']:.2f}", f"{100 * r['r']:.2f}", f"**{100 * r['f']:.2f}**",
            *[f"{100 * r['per_type_f'][label]:.2f}" if label in r["per_type_f"] else "-" for label in labels],
            f"{r['words_per_second']:,.0f}", ratio,
            f"{100 * r['best_dev_f']:.2f}" if r["best_dev_f"] is not None else "-",
            f"{r['seconds_to_best'] / 60:.1f}" if r["seconds_to_best"] is not None else "-",
            str(r["steps_to_best"]) if r["steps_to_best"] is not None else "-",
            f"{r['peak_rss_mb']:,.0f}" if r["peak_rss_mb"] else "-",
            f"{r['model_mb']:.1f}",
        ]
        if gpu_memory:
            cells.append(f"{r['peak_gpu_mb']:,.0f}" if r.get("peak_gpu_mb") is not None else "-")
        lines.append("| " + " | ".join(cells) + " |")
    date = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    notes = [
        f"## {corpus}",
        "",
        f"Run on {date} on {machine_description(gpu_id)}, {'GPU ' + str(gpu_id) if gpu_id >= 0 else 'CPU'}.",
        f"Each model trained for at most {budget_s / 60:.1f} minutes of wall time (or until its "
        f"config's patience / max_steps), one after the other, then evaluated on the test split "
        f"(`spacy evaluate`, model-best by dev F). Words/s: median of repeated "
        f"`spacy benchmark speed` runs on the test split."
        + (" Peak GPU memory: the most that PyTorch's allocator had handed out during training "
           "(`torch.cuda.max_memory_allocated`, read at each evaluation)." if gpu_memory else ""),
        "",
        "Command:",
        "",
        "```bash",
        command,
        "```",
        "",
        *lines,
        "",
        "Training commands:",
        "",
        *[f"- `{r['name']}`: `{r['train_command']}`" for r in rows],
        "",
    ]
    return "\n".join(notes)


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

    command = "python -m spacy_hybridner benchmark " + " ".join(shlex.quote(a) for a in argv)
    overrides = os.environ.get("SPACY_CONFIG_OVERRIDES")
    if overrides:
        command = f"SPACY_CONFIG_OVERRIDES={shlex.quote(overrides)} {command}"
    return command


def run_benchmark(
    train: Path, dev: Path, test: Path, configs: List[Path], *, corpus: str, budget_s: float,
    output_dir: Path, doc_path: Path, baseline: str, command: str, echo: Callable[[str], None],
    speed_batches: int = 30, speed_repeats: int = 3, speed_batch_size: Optional[int] = None, gpu_id: int = -1,
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
    doc_path (Path): The benchmark document to update.
    baseline (str): Config name that speed ratios refer to.
    command (str): The command to record (``benchmark_command``).
    echo (Callable[[str], None]): Where progress goes.
    speed_batches, speed_repeats, speed_batch_size: For ``spacy benchmark speed``.
    gpu_id (int): GPU id, -1 for CPU.
    RETURNS (Dict): ``rows`` (one per config) and ``section`` (the markdown written).
    """
    missing = [str(p) for p in [train, dev, test, *configs] if not Path(p).exists()]
    if missing:
        raise FileNotFoundError(f"not found: {', '.join(missing)}")
    rows = []
    for config in configs:
        rows.append(benchmark_config(
            config, train, dev, test, output_dir / corpus, budget_s, gpu_id,
            speed_batches, speed_repeats, echo, speed_batch_size,
        ))
        echo(f"== {rows[-1]['name']}: test F {100 * rows[-1]['f']:.2f}, {rows[-1]['words_per_second']:,.0f} words/s")
    section = benchmark_markdown(
        rows, corpus=corpus, command=command, budget_s=budget_s, baseline=baseline, gpu_id=gpu_id,
    )
    update_benchmark_doc(doc_path, corpus, section)
    (output_dir / corpus / "benchmark.json").write_text(json.dumps(rows, indent=2), encoding="utf8")
    return {"rows": rows, "section": section}
