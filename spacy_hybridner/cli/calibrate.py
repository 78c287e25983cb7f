"""``calibrate``: the temperature of ``ent._.confidence`` fitted on held-out data
(:func:`~spacy_hybridner.calibration.calibrate_and_save`)."""

from pathlib import Path

import typer

from ..calibration import calibrate_and_save, describe_calibration
from ._util import app, gpu_option, load_pipeline


@app.command("calibrate")
def calibrate_cli(
    model: str = typer.Argument(..., help="Pipeline name or path"),
    data_path: Path = typer.Argument(..., help="Held-out gold .spacy file (the dev split, not the test split)"),
    output_dir: Path = typer.Argument(..., help="Where to save the calibrated pipeline"),
    gpu_id: int = gpu_option(),
) -> None:
    """Fit the temperature of ent._.confidence of each hybrid_ner component on held-out
    data, and save the pipeline. Entities do not change, only their confidences. A
    pipeline without hybrid_ner is saved unchanged."""
    results = calibrate_and_save(load_pipeline(model, gpu_id), data_path, output_dir)
    for name, result in results.items():
        typer.echo(describe_calibration(name, result, str(data_path)))
    if not results:
        typer.echo("No hybrid_ner component: nothing to calibrate; saving the pipeline unchanged.")
    typer.echo(f"Saved to {output_dir}")
