"""``report``: scores, confusions, calibration and the worst documents
(:func:`~spacy_hybridner.tools.report.write_report`)."""

from pathlib import Path
from typing import Optional

import typer

from ..tools.report import write_report
from ._util import app, defaults_of, gpu_option, load_pipeline

DEFAULTS = defaults_of(write_report)


@app.command("report")
def report_cli(
    model: str = typer.Argument(..., help="Pipeline name or path"),
    data_path: Path = typer.Argument(..., help="Gold .spacy file to analyse (e.g. the test split)"),
    output_dir: Path = typer.Argument(..., help="Folder for scores.md, report.json, PNGs and worst.html"),
    training_dir: Optional[Path] = typer.Option(
        DEFAULTS["training_dir"],
        "--training-dir",
        "-t",
        help="Training output folder holding log.jsonl, for training curves",
    ),
    n_worst: int = typer.Option(DEFAULTS["n_worst"], help="How many of the worst-scored documents to show in displaCy"),
    gpu_id: int = gpu_option(),
    train_data: Optional[Path] = typer.Option(
        DEFAULTS["train_path"],
        "--train-data",
        exists=True,
        dir_okay=False,
        help="Training .spacy file: adds recall per type and on names with unseen words",
    ),
) -> None:
    """Per-type P/R/F (markdown and JSON) cross-checked with seqeval, confusion matrix
    with missed and spurious entities, reliability diagram of ent._.confidence with its
    ECE, displaCy HTML of the worst documents, given --training-dir training curves and,
    given --train-data, recall on entities with words never seen in training."""
    result = write_report(
        load_pipeline(model, gpu_id), data_path, output_dir, training_dir, n_worst=n_worst, train_path=train_data
    )
    typer.echo((output_dir / "scores.md").read_text(encoding="utf8"))
    typer.echo(f"Report written to {output_dir} ({len(result['worst_documents'])} worst documents in worst.html)")
