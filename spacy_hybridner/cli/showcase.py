"""``showcase``: held-out documents annotated, as displaCy HTML (:func:`~spacy_hybridner.tools.display.showcase`)."""

from pathlib import Path

import typer

from ..tools.display import showcase
from ._util import app, defaults_of, echo_entities, gpu_option, load_pipeline

DEFAULTS = defaults_of(showcase)


@app.command("showcase")
def showcase_cli(
    model: str = typer.Argument(..., help="Pipeline name or path"),
    data_path: Path = typer.Argument(..., help="Held-out .spacy file"),
    output_path: Path = typer.Argument(..., help="displaCy HTML file to write"),
    n_docs: int = typer.Option(DEFAULTS["n_docs"], "--n-docs", help="How many documents to show"),
    gpu_id: int = gpu_option(),
) -> None:
    """Annotate held-out documents, print their entities and write displaCy HTML."""
    docs = showcase(load_pipeline(model, gpu_id), data_path, output_path, n_docs=n_docs)
    echo_entities(docs, indent="    ", with_text=True)
    typer.echo(f"displaCy HTML of {len(docs)} documents: {output_path}")
