"""A benchmark of several configs on one corpus: check the inputs before any training,
run every (config, seed) one after the other, keep the rows as they come, and write the
section of the benchmark document."""

import dataclasses
import datetime
import json
from pathlib import Path
from typing import Any, Dict, List, Optional

from .render import benchmark_markdown, update_benchmark_doc
from .runner import machine_description
from .runs import BenchmarkSettings, Echo, benchmark_config
from .stats import summarize_runs


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


def merge_rows(earlier: List[Dict], new: List[Dict]) -> List[Dict]:
    """``earlier`` rows with the ``new`` ones added, a new row replacing an earlier one of
    the same config name and seed; ordered by config (first appearance) then seed."""
    key = lambda r: (r["name"], r.get("seed"))  # noqa: E731
    replaced = {key(r) for r in new}
    rows = [r for r in earlier if key(r) not in replaced] + list(new)
    order = {name: i for i, name in reversed(list(enumerate(r["name"] for r in rows)))}
    return sorted(rows, key=lambda r: (order[r["name"]], -1 if r.get("seed") is None else r["seed"]))


def _check_inputs(settings: BenchmarkSettings, configs: List[Path], seeds: int) -> None:
    """Fail before the first training: missing files, no seeds, seqeval missing for the cross-check."""
    missing = [str(p) for p in [settings.train, settings.dev, settings.test, *configs] if not Path(p).exists()]
    if missing:
        raise FileNotFoundError(f"not found: {', '.join(missing)}")
    if seeds < 1:
        raise ValueError(f"seeds must be at least 1, not {seeds}")
    if settings.crosscheck:
        from ..scoring import require_seqeval

        try:
            require_seqeval()  # fail before the trainings, not after the first
        except ImportError as err:
            raise ImportError(f"{err} Or leave the cross-check out: --no-crosscheck.") from None


def _run_seeds(configs: List[Path], seeds: int, seed_start: Optional[int]) -> List[Optional[int]]:
    """The seeds of each config's runs: [None] (the config's own) for one run without
    ``seed_start``; else ``seed_start`` (default 0) on, which every config must follow."""
    if seeds == 1 and seed_start is None:
        return [None]
    for config in configs:
        check_seed_follows_system(config)
    return list(range(seed_start or 0, (seed_start or 0) + seeds))


def _benchmark_run(config: Path, settings: BenchmarkSettings, seed: Optional[int], command: str, echo: Echo) -> Dict:
    """One run's row, with the benchmark's command and budget, the machine and the time it finished."""
    row = benchmark_config(config, settings, echo, seed=seed)
    row["benchmark_command"] = command
    row["budget_minutes"] = settings.budget_s / 60
    row["machine"] = machine_description(settings.gpu_id)
    row["finished"] = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    echo(f"== {row['name']} (seed {row['seed']}): test F {100 * row['f']:.2f}, {row['words_per_second']:,.0f} words/s")
    return row


def run_benchmark(
    train: Path,
    dev: Path,
    test: Path,
    configs: List[Path],
    *,
    corpus: str,
    budget_s: float,
    output_dir: Path,
    doc_path: Optional[Path],
    baseline: str,
    command: str,
    echo: Echo,
    speed_batches: int = 30,
    speed_repeats: int = 3,
    speed_batch_size: Optional[int] = None,
    gpu_id: int = -1,
    seeds: int = 1,
    seed_start: Optional[int] = None,
    crosscheck: bool = True,
    calibrate: bool = True,
    append: bool = False,
) -> Dict:
    """Train each config on the same data with the same wall-time budget, one after the
    other, evaluate on the test split, measure speed with ``spacy benchmark speed``, and
    write the comparison as the ``## corpus`` section of the benchmark document.

    train, dev, test, budget_s, gpu_id, speed_batches, speed_repeats, speed_batch_size,
        crosscheck, calibrate: The ``BenchmarkSettings`` of every run.
    configs (List[Path]): Configs to compare, in order.
    corpus (str): Name of the corpus, the section title.
    output_dir (Path): Trained models go to ``output_dir / corpus / config name``, and
        the rows to ``output_dir / corpus / benchmark.json``.
    doc_path (Optional[Path]): The Markdown document whose section ``corpus`` is replaced
        by the result; None: write no document.
    baseline (str): Config name that speed ratios refer to.
    command (str): The command to record (``benchmark_command``).
    echo (Callable[[str], None]): Where progress goes.
    seeds (int): Runs per config. With 1 and no ``seed_start``, each config trains once
        with its own ``[system] seed`` into ``output_dir / corpus / name``; otherwise with
        ``--system.seed`` ``seed_start`` (default 0), ``seed_start + 1``, ... into
        ``output_dir / corpus / name / seed{S}``.
    seed_start (Optional[int]): The first seed.
    append (bool): Keep the runs of earlier benchmark commands in ``output_dir / corpus /
        benchmark.json`` (runs of record split over several sittings) and add these, a run of
        the same config and seed replacing the earlier one; the section covers them all.
    RETURNS (Dict): ``rows`` (one per run), ``summary`` (``summarize_runs``, one per
        config) and ``section`` (the markdown written).
    """
    # The first statement, so that locals() holds the arguments and nothing else.
    settings = _settings_of(locals())
    _check_inputs(settings, configs, seeds)
    rows = _run_suite(settings, configs, _run_seeds(configs, seeds, seed_start), command, echo, append)
    section = benchmark_markdown(
        rows, corpus=corpus, command=command, budget_s=budget_s, baseline=baseline, gpu_id=gpu_id
    )
    if doc_path is not None:
        update_benchmark_doc(doc_path, corpus, section)
    return {"rows": rows, "summary": summarize_runs(rows), "section": section}


def _settings_of(args: Dict[str, Any]) -> BenchmarkSettings:
    """The ``BenchmarkSettings`` of :func:`run_benchmark`'s arguments (its ``locals()``): the
    arguments of the fields' names, but ``output_dir``, which is ``output_dir / corpus``."""
    names = [f.name for f in dataclasses.fields(BenchmarkSettings) if f.name != "output_dir"]
    return BenchmarkSettings(**{name: args[name] for name in names}, output_dir=args["output_dir"] / args["corpus"])


def _run_suite(
    settings: BenchmarkSettings,
    configs: List[Path],
    run_seeds: List[Optional[int]],
    command: str,
    echo: Echo,
    append: bool,
) -> List[Dict]:
    """Run every config with every seed, one after the other; the rows of all runs, those of
    ``settings.output_dir / benchmark.json`` kept with ``append`` (:func:`merge_rows`)."""
    rows_path = settings.output_dir / "benchmark.json"
    earlier = json.loads(rows_path.read_text(encoding="utf8")) if append and rows_path.exists() else []
    rows: List[Dict] = []
    for config in configs:
        for seed in run_seeds:
            rows.append(_benchmark_run(config, settings, seed, command, echo))
            # Every run so far, so that an interrupted benchmark keeps what it measured.
            rows_path.parent.mkdir(parents=True, exist_ok=True)
            rows_path.write_text(json.dumps(merge_rows(earlier, rows), indent=2), encoding="utf8")
    return merge_rows(earlier, rows)


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
        rows,
        corpus=corpus,
        command=command,
        budget_s=60 * max(budgets) if budgets else 0.0,
        baseline=baseline,
        gpu_id=gpu_id,
    )
    return {"rows": rows, "command": command, "section": section}
