"""``optimize``: a pipeline whose transformer runs at int8 and/or in ONNX Runtime on a
CPU (:func:`~spacy_hybridner.inference.optimize`)."""

from pathlib import Path
from typing import Optional

import typer

from ..inference import optimize
from ._util import app, bad_parameter, defaults_of

DEFAULTS = defaults_of(optimize)


@app.command("optimize")
def optimize_cli(
    model: str = typer.Argument(..., help="Trained pipeline (a path) with a spacy-transformers component"),
    output: Path = typer.Argument(..., help="Where to save the optimized pipeline"),
    precision: str = typer.Option(DEFAULTS["precision"], help="fp32 or int8 (the transformer's weights)"),
    runtime: str = typer.Option(
        DEFAULTS["runtime"], help="torch, or onnxruntime (exports the transformer as an ONNX graph; the onnx extra)"
    ),
    by_length: bool = typer.Option(
        DEFAULTS["by_length"], "--by-length/--no-by-length", help="Encode windows in groups of similar length"
    ),
    window: Optional[int] = typer.Option(None, help="Tokens per transformer window (default: as trained)"),
    stride: Optional[int] = typer.Option(None, help="Tokens between window starts (default: as trained)"),
) -> None:
    """Save MODEL to OUTPUT with inference settings for a CPU: its transformer at int8
    (PyTorch's dynamic quantization, applied at load time from the float32 weights) or as
    an ONNX Runtime graph, windows grouped by length. spacy.load(OUTPUT) runs it that way
    with no extra code. Calibrate OUTPUT again afterwards (spacy-hybridner calibrate
    OUTPUT dev.spacy OUTPUT), so that ent._.confidence fits the precision it runs at."""
    with bad_parameter(ValueError, ImportError):
        lines = optimize(
            model, output, precision=precision, runtime=runtime, by_length=by_length, window=window, stride=stride
        )
    for line in lines:
        typer.echo(line)
    typer.echo(
        f"Saved to {output}; calibrate it again at this precision: spacy-hybridner calibrate {output} DEV {output}"
    )
