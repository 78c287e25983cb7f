"""``benchmark`` and ``benchmark-section``: configs trained and compared on one corpus
(:func:`~spacy_hybridner.tools.benchmark.suite.run_benchmark`), and the section of stored
runs (:func:`~spacy_hybridner.tools.benchmark.suite.section_from_rows`)."""

from pathlib import Path
from typing import List, Optional

import typer

from ..tools.benchmark import run_benchmark, section_from_rows, update_benchmark_doc, write_results
from ._util import app, bad_parameter, defaults_of, gpu_option, recorded_command

DEFAULTS = defaults_of(run_benchmark)
BASELINE = "spacy_ner"  # the config that speed ratios refer to by default (configs/spacy_ner.cfg)


# Over 60 lines: typer declares a command's 3 arguments and 16 options as its parameters.
@app.command("benchmark")
def benchmark_cli(
    train: Path = typer.Argument(..., help="Training .spacy file"),
    dev: Path = typer.Argument(..., help="Dev .spacy file (model selection)"),
    test: Path = typer.Argument(..., help="Test .spacy file (scores and speed)"),
    configs: List[Path] = typer.Option(
        [Path("configs/spacy_ner.cfg"), Path("configs/hybrid_cpu.cfg")],
        "--config",
        "-c",
        help="Configs to compare, in order; repeat the option for several",
    ),
    corpus: str = typer.Option(..., help="Name of the corpus, the section title in the document"),
    budget_minutes: float = typer.Option(15.0, help="Wall-time budget of each training"),
    output_dir: Path = typer.Option(Path("training/benchmark"), help="Where the trained models go"),
    doc_path: Optional[Path] = typer.Option(
        None,
        help="Markdown document to write the section into (its section of that title is replaced); default: print only",
    ),
    results_path: Optional[Path] = typer.Option(
        None, help="Also write every run's row as JSON to this file (e.g. docs/results/<section>.json)"
    ),
    baseline: str = typer.Option(BASELINE, help="Config name that speed ratios refer to"),
    speed_batches: int = typer.Option(
        DEFAULTS["speed_batches"],
        min=30,
        help=("--batches for spacy benchmark speed (spaCy needs at least 30; use --speed-batch-size for shorter runs)"),
    ),
    speed_repeats: int = typer.Option(
        DEFAULTS["speed_repeats"], min=1, help="Runs of spacy benchmark speed per model (median reported)"
    ),
    speed_batch_size: Optional[int] = typer.Option(
        DEFAULTS["speed_batch_size"], help="--batch-size for spacy benchmark speed (default: the pipeline's)"
    ),
    gpu_id: int = gpu_option(),
    seeds: int = typer.Option(
        DEFAULTS["seeds"],
        min=1,
        help=(
            "Train every config this many times, with [system] seed = seed-start, seed-start + 1, ...; "
            "the table reports mean and standard deviation with each run beneath"
        ),
    ),
    seed_start: Optional[int] = typer.Option(
        DEFAULTS["seed_start"], help="First seed (default 0); without it and with --seeds 1, the config's own seed"
    ),
    crosscheck: bool = typer.Option(
        DEFAULTS["crosscheck"],
        help=(
            "Cross-check every run's test F with seqeval and break recall down by type and unseen names (needs seqeval)"
        ),
    ),
    calibrate: bool = typer.Option(
        DEFAULTS["calibrate"],
        help=("Calibrate each hybrid_ner pipeline on the dev split before the cross-check, which gives its test ECE"),
    ),
    append: bool = typer.Option(
        DEFAULTS["append"],
        "--append",
        help=(
            "Keep the runs of earlier benchmark commands in OUTPUT_DIR/CORPUS/benchmark.json (runs split over "
            "several sittings) and add these; a run of the same config and seed replaces the earlier one"
        ),
    ),
) -> None:
    """Train each config on the same data with the same wall-time budget, one after the
    other (--seeds N: N times each), evaluate on the test split, measure speed with
    `spacy benchmark speed`, cross-check the scores with seqeval, break recall down by type
    and unseen names, and write the comparison to the benchmark document."""
    command = recorded_command("benchmark")
    with bad_parameter(FileNotFoundError, ValueError):
        result = run_benchmark(
            train,
            dev,
            test,
            configs,
            corpus=corpus,
            budget_s=budget_minutes * 60,
            output_dir=output_dir,
            doc_path=doc_path,
            baseline=baseline,
            command=command,
            echo=typer.echo,
            speed_batches=speed_batches,
            speed_repeats=speed_repeats,
            speed_batch_size=speed_batch_size,
            gpu_id=gpu_id,
            seeds=seeds,
            seed_start=seed_start,
            crosscheck=crosscheck,
            calibrate=calibrate,
            append=append,
        )
    typer.echo(result["section"])
    if doc_path is not None:
        typer.echo(f"Written to {doc_path}")
    if results_path is not None:
        write_results(results_path, corpus, command, result["rows"])
        typer.echo(f"Rows written to {results_path}")


@app.command("benchmark-section")
def benchmark_section_cli(
    rows_path: Path = typer.Argument(..., help="The benchmark.json of a benchmark's OUTPUT_DIR/CORPUS"),
    corpus: str = typer.Option(..., help="Section title in the document"),
    baseline: str = typer.Option(BASELINE, help="Config name that speed ratios refer to"),
    doc_path: Optional[Path] = typer.Option(None, help="Markdown document to write the section into"),
    results_path: Optional[Path] = typer.Option(None, help="Also write the rows as JSON to this file"),
) -> None:
    """Write the benchmark section of the runs stored in a benchmark.json, without
    training: for runs of record made over several sittings (benchmark --append)."""
    with bad_parameter(FileNotFoundError, ValueError):
        result = section_from_rows(rows_path, corpus=corpus, baseline=baseline)
    typer.echo(result["section"])
    if doc_path is not None:
        update_benchmark_doc(doc_path, corpus, result["section"])
        typer.echo(f"Written to {doc_path}")
    if results_path is not None:
        write_results(results_path, corpus, result["command"], result["rows"])
        typer.echo(f"Rows written to {results_path}")
