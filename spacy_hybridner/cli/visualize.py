"""``visualize``: a pipeline's entities in displaCy, served or written
(:func:`~spacy_hybridner.tools.display.write_displacy`, ``displacy.serve``)."""

import sys
from pathlib import Path
from typing import Optional

import typer

from ..tools.display import write_displacy
from ._util import app, echo_entities, load_pipeline


@app.command("visualize")
def visualize_cli(
    model: str = typer.Argument(..., help="Pipeline name or path"),
    text: Optional[str] = typer.Argument(None, help="Text to annotate (default: read from standard input)"),
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", help="Write displaCy HTML here instead of serving it"
    ),
    port: int = typer.Option(5000, help="Port of the displaCy server"),
    host: str = typer.Option("127.0.0.1", help="Host of the displaCy server"),
) -> None:
    """Show the model's entities with displaCy: a local server, or an HTML file."""
    from spacy import displacy

    nlp = load_pipeline(model)
    texts = [text] if text is not None else [line for line in sys.stdin.read().splitlines() if line.strip()]
    if not texts:
        raise typer.BadParameter("no text given: pass TEXT or pipe lines to standard input.")
    docs = list(nlp.pipe(texts))
    echo_entities(docs)
    if output is not None:
        typer.echo(f"displaCy HTML: {write_displacy(docs, output)}")
    else:
        displacy.serve(docs, style="ent", port=port, host=host)
