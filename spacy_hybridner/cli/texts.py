"""``texts``: unlabeled text as JSON Lines from .spacy corpora, Reuters-21578 SGML, plain
text and JSON Lines (:func:`~spacy_hybridner.tools.corpora.write_texts`)."""

from pathlib import Path
from typing import Any, Dict, List

import typer

from ..tools.corpora import write_texts
from ..tools.text_sources import RULES
from ._util import app, bad_parameter, defaults_of

DEFAULTS = defaults_of(write_texts)


def counts_line(source: str, counts: Dict[str, Any]) -> str:
    """What ``texts`` prints for a source: documents kept, words, documents dropped by rule."""
    dropped = ", ".join(f"{n} {RULES[rule]}" for rule, n in counts["dropped"].items())
    return f"{source}: {counts['docs']} documents kept, {counts['words']} words; dropped: {dropped}"


@app.command("texts")
def texts_cli(
    corpora: List[Path] = typer.Argument(
        ...,
        help="Sources: .spacy corpora (train splits), Reuters-21578 .sgm files, .txt (a document per line), "
        ".jsonl (a 'text' field), or folders of them",
    ),
    output: Path = typer.Option(..., "--output", "-o", help="JSON Lines file to write (id, text)"),
    allow_held_out: bool = typer.Option(
        DEFAULTS["allow_held_out"],
        "--allow-held-out",
        help="Accept a dev.spacy or test.spacy (e.g. another corpus's held-out splits)",
    ),
) -> None:
    """Write the documents' text of corpora as JSON Lines (id, text), without annotations:
    unlabeled text for a teacher (`annotate TEACHER TEXT.jsonl SILVER --output-format
    docbin`). A folder gives its .sgm, .txt, .jsonl, .ndjson and .spacy files, sorted by
    name. Prints one line per source: documents kept, words, documents dropped by each rule.

    Ids: .spacy FOLDER/NAME:INDEX; .txt and .jsonl FOLDER/FILE:LINE; Reuters reuters:NEWID.

    A Reuters-21578 article is its TITLE on the first line, then its BODY, one paragraph
    a line (the hard-wrapped lines joined with single spaces), references such as &lt;
    resolved, control characters removed, the trailing Reuter signature dropped. Dropped:
    articles without a BODY; tables (more than half of the body's lines have fewer than 20
    letters or 2+ spaces between columns); all-capitals bulletins (at least 80% of the
    body's letters upper-case). Other sources' text is written as it is.

    Blank documents are dropped. A document of a .sgm, .txt or .jsonl file whose text
    (whitespace runs made single spaces, case-folded) was already written, from any
    source, is dropped as a duplicate: the first one is kept; .spacy corpora are written
    whole. Refuses dev and test .spacy splits unless --allow-held-out."""
    with bad_parameter(FileNotFoundError, ValueError):
        counts = write_texts(corpora, output, allow_held_out=allow_held_out)
    for source, source_counts in counts["sources"].items():
        typer.echo(counts_line(source, source_counts))
    typer.echo(f"{counts['docs']} documents, {counts['words']} words -> {output}")
