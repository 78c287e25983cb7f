"""``spacy benchmark speed``: one runner and its parsing, for the benchmark's rows and for
the side-by-side comparison of trained pipelines (``speed``), and that comparison's section."""

import datetime
import re
import sys
from pathlib import Path
from statistics import median
from typing import Callable, Dict, List, Optional, Tuple

from .render import command_block
from .runner import machine_description, run_streaming

SPEED_LINE = re.compile(r"Mean:\s*([\d.]+)\s*words/s")


def benchmark_speed(
    model: Path,
    data: Path,
    *,
    name: str,
    echo: Callable[[str], None],
    batches: int = 30,
    batch_size: Optional[int] = None,
    gpu_id: int = -1,
) -> float:
    """Words per second of one ``spacy benchmark speed`` run of a trained pipeline on a
    ``.spacy`` file, in a child process (its output echoed after ``[name]``), with one
    warm-up batch. RETURNS (float): The mean it reports. Raises RuntimeError when it fails."""
    result = run_streaming(
        [
            sys.executable,
            "-m",
            "spacy",
            "benchmark",
            "speed",
            str(model),
            str(data),
            "--gpu-id",
            str(gpu_id),
            "--batches",
            str(batches),
            "--warmup",
            "1",
            *(["--batch-size", str(batch_size)] if batch_size else []),
        ],
        name,
        echo,
    )
    match = SPEED_LINE.search(result["output"])
    if result["returncode"] != 0 or not match:
        raise RuntimeError(f"{name}: spacy benchmark speed failed; see the output above.")
    return float(match.group(1))


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


def speed_baseline(models: List[Tuple[str, Path]], baseline: Optional[str] = None) -> str:
    """The name that a speed comparison's ratios refer to: ``baseline``, which must be one of
    the ``models``' names, or the first model's. Raises ValueError for an unknown name."""
    names = [n for n, _ in models]
    if baseline is not None and baseline not in names:
        raise ValueError(f"--baseline {baseline} is none of the pipelines' names: {names}")
    return baseline if baseline is not None else names[0]


def compare_speed(
    models: List[Tuple[str, Path]],
    data: Path,
    *,
    echo: Callable[[str], None],
    batch_size: Optional[int] = None,
    batches: int = 30,
    rounds: int = 3,
    gpu_id: int = -1,
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
            runs[name].append(
                benchmark_speed(path, data, name=name, echo=echo, batches=batches, batch_size=batch_size, gpu_id=gpu_id)
            )
    return [
        {
            "name": name,
            "model": str(path),
            "runs": runs[name],
            "median": median(runs[name]),
            "min": min(runs[name]),
            "max": max(runs[name]),
        }
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
