"""``annotate-benchmark``: nlp.pipe, the local engine and Ray Data side by side
(:func:`~spacy_hybridner.tools.annotate_benchmark.run_annotate_benchmark`)."""

from pathlib import Path
from typing import Optional

import typer

from ..tools.annotate_benchmark import TITLE, benchmark_markdown, run_annotate_benchmark, write_benchmark
from ..tools.benchmark import machine_description
from ._util import app, defaults_of, recorded_command

DEFAULTS = defaults_of(run_annotate_benchmark)


@app.command("annotate-benchmark")
def annotate_benchmark_cli(
    model: str = typer.Argument(..., help="Pipeline name or path"),
    data_path: Path = typer.Argument(..., help=".spacy file whose texts are annotated (e.g. the test split)"),
    repeat: int = typer.Option(DEFAULTS["repeat"], min=1, help="Runs of each configuration (medians reported)"),
    synthetic_factor: int = typer.Option(
        DEFAULTS["synthetic_factor"], min=0, help="Also a corpus of the texts repeated K times, shuffled (0: none)"
    ),
    limit: int = typer.Option(DEFAULTS["limit"], min=0, help="Use only the first N texts (0: all)"),
    batch_size: int = typer.Option(DEFAULTS["batch_size"], min=1, help="annotate --batch-size"),
    doc_path: Optional[Path] = typer.Option(
        None,
        help="Markdown document to write the section into (its section of that title is replaced); default: print only",
    ),
) -> None:
    """Docs/s and words/s of plain nlp.pipe, the local engine with 1 and 2 processes and
    Ray Data with 1 and 2 actors in the same run, Ray's start-up, 1 -> 2 actor scaling,
    and the cluster size a 100-million-document corpus needs for a one-day run."""
    if not data_path.exists():
        raise typer.BadParameter(f"{data_path} does not exist: give a .spacy file, e.g. corpus/gmb/test.spacy.")
    results = run_annotate_benchmark(
        model,
        data_path,
        repeat=repeat,
        synthetic_factor=synthetic_factor,
        limit=limit,
        batch_size=batch_size,
        echo=typer.echo,
    )
    command = recorded_command("annotate-benchmark")
    if doc_path is not None:
        section = write_benchmark(results, doc_path, command)
        typer.echo(section)
        typer.echo(f"Written to {doc_path}")
    else:
        typer.echo(benchmark_markdown(results, command=command, machine=machine_description(), title=TITLE))
