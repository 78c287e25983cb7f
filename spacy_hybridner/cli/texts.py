"""``texts``: the text of .spacy corpora as JSON Lines (:func:`~spacy_hybridner.tools.corpora.write_texts`)."""

from pathlib import Path
from typing import List

import typer

from ..tools.corpora import write_texts
from ._util import app, bad_parameter, defaults_of

DEFAULTS = defaults_of(write_texts)


@app.command("texts")
def texts_cli(
    corpora: List[Path] = typer.Argument(..., help="The .spacy files whose text to write (train splits)"),
    output: Path = typer.Option(..., "--output", "-o", help="JSON Lines file to write (id, text)"),
    allow_held_out: bool = typer.Option(
        DEFAULTS["allow_held_out"],
        "--allow-held-out",
        help="Accept a dev.spacy or test.spacy (e.g. another corpus's held-out splits)",
    ),
) -> None:
    """Write the documents' text of .spacy corpora as JSON Lines, without their
    annotations: unlabeled text for a teacher (`annotate TEACHER TEXT.jsonl SILVER
    --output-format docbin`). Refuses dev and test splits unless --allow-held-out."""
    with bad_parameter(FileNotFoundError, ValueError):
        counts = write_texts(corpora, output, allow_held_out=allow_held_out)
    typer.echo(f"{counts['docs']} documents, {counts['words']} words -> {output}")
