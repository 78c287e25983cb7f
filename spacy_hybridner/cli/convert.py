"""``convert``: a corpus to spaCy's binary format (:func:`~spacy_hybridner.tools.corpora.convert_corpus`)."""

from enum import Enum
from pathlib import Path

import typer

from ..tools.corpora import convert_corpus
from ._util import app, bad_parameter, defaults_of

DEFAULTS = defaults_of(convert_corpus)


class CorpusName(str, Enum):
    gmb = "gmb"
    conll03 = "conll03"
    wnut17 = "wnut17"


@app.command("convert")
def convert_cli(
    corpus: CorpusName = typer.Argument(..., help="Which corpus INPUT holds"),
    input_path: Path = typer.Argument(
        ...,
        help=(
            "gmb: ner_dataset.csv(.zip); conll03: the folder with eng.train, eng.testa, eng.testb; "
            "wnut17: the folder with wnut17train.conll, emerging.dev.conll"
        ),
    ),
    output_dir: Path = typer.Argument(..., help="Where train.spacy, dev.spacy and test.spacy are written"),
    limit: int = typer.Option(
        DEFAULTS["limit"],
        help=("gmb: read only the first N sentences (0: all); conll03/wnut17: keep the first N docs of each split"),
    ),
    dev: float = typer.Option(DEFAULTS["dev"], help="gmb: fraction of sentences for dev"),
    test: float = typer.Option(DEFAULTS["test"], help="gmb: fraction of sentences for test"),
    seed: int = typer.Option(DEFAULTS["seed"], help="gmb: seed of the sentence shuffle before splitting"),
) -> None:
    """Convert a corpus to spaCy's binary format, one file per split.

    gmb is split by sentence into train/dev/test (shuffled with --seed; 80/10/10 by
    default). conll03 keeps its documents whole (train, dev = testa, test = testb).
    wnut17 has train and dev; dev is also written as test, the split to evaluate on.
    """
    with bad_parameter(FileNotFoundError):
        stats = convert_corpus(corpus.value, input_path, output_dir, limit=limit, dev=dev, test=test, seed=seed)
    for name, split in stats.items():
        typer.echo(
            f"{name}: {split['docs']} docs, {split['tokens']} tokens, entities {split['entities']} -> {split['path']}"
        )
