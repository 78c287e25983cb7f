"""``speed``: words/s of trained pipelines side by side
(:func:`~spacy_hybridner.tools.benchmark.speed.compare_speed`)."""

from pathlib import Path
from typing import List, Optional

import typer

from ..tools.benchmark import (
    compare_speed,
    parse_named_models,
    speed_baseline,
    speed_markdown,
    update_benchmark_doc,
    write_results,
)
from ._util import app, bad_parameter, defaults_of, gpu_option, named_models_argument, recorded_command

DEFAULTS = defaults_of(compare_speed)


@app.command("speed")
def speed_cli(
    models: List[str] = named_models_argument("spacy_ner=training/benchmark/conll03/spacy_ner/seed0/model-best"),
    data: Path = typer.Option(..., "--data", help="The .spacy file to annotate (e.g. the test split)"),
    batch_size: Optional[int] = typer.Option(
        DEFAULTS["batch_size"], help="--batch-size of spacy benchmark speed (default: the pipeline's)"
    ),
    batches: int = typer.Option(DEFAULTS["batches"], min=30, help="--batches of spacy benchmark speed"),
    rounds: int = typer.Option(DEFAULTS["rounds"], min=1, help="Rounds; each runs every pipeline once, in turn"),
    baseline: Optional[str] = typer.Option(None, help="The NAME that ratios refer to (default: the first)"),
    title: str = typer.Option("speed", help="Section title in the document"),
    doc_path: Optional[Path] = typer.Option(None, help="Markdown document to write the section into"),
    results_path: Optional[Path] = typer.Option(None, help="Also write the rows as JSON to this file"),
    gpu_id: int = gpu_option(),
) -> None:
    """Words/s of trained pipelines side by side in one run: `spacy benchmark speed` on
    each in turn, for several rounds, the median per pipeline and its ratio to a baseline."""
    with bad_parameter(FileNotFoundError, ValueError):
        named = parse_named_models(models)
        baseline = speed_baseline(named, baseline)
        rows = compare_speed(
            named, data, echo=typer.echo, batch_size=batch_size, batches=batches, rounds=rounds, gpu_id=gpu_id
        )
    command = recorded_command("speed")
    section = speed_markdown(rows, title=title, command=command, baseline=baseline, gpu_id=gpu_id)
    typer.echo(section)
    if doc_path is not None:
        update_benchmark_doc(doc_path, title, section)
        typer.echo(f"Written to {doc_path}")
    if results_path is not None:
        write_results(results_path, title, command, rows)
        typer.echo(f"Rows written to {results_path}")
