"""``crosscheck``: spaCy's scorer against seqeval, and recall on unseen names
(:func:`~spacy_hybridner.tools.scoring.analyse`)."""

import json
from pathlib import Path
from typing import Optional

import typer

from ..tools.scoring import analyse, analysis_lines
from ._util import app, bad_parameter, defaults_of, gpu_option, load_pipeline

DEFAULTS = defaults_of(analyse)


@app.command("crosscheck")
def crosscheck_cli(
    model: str = typer.Argument(..., help="Pipeline name or path"),
    data_path: Path = typer.Argument(..., help="Gold .spacy file (e.g. the test split)"),
    train_data: Optional[Path] = typer.Option(
        DEFAULTS["train_path"],
        "--train-data",
        exists=True,
        dir_okay=False,
        help="Training .spacy file: adds recall per type and on names with unseen words",
    ),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the results to this JSON file"),
    gpu_id: int = gpu_option(),
) -> None:
    """Entity P/R/F of the pipeline on DATA by spaCy's scorer and by seqeval on IOB2 tags,
    side by side; exits with status 1 when they disagree. With --train-data, also recall
    per type and on entities with a word never seen in training."""
    with bad_parameter(FileNotFoundError):
        result = analyse(load_pipeline(model, gpu_id), data_path, train_data)
    for line in analysis_lines(result):
        typer.echo(line)
    if output is not None:
        output.write_text(json.dumps(result, indent=2), encoding="utf8")  # full precision (srsly rounds)
        typer.echo(f"Written to {output}")
    if not result["crosscheck"]["agree"]:
        raise typer.Exit(1)
