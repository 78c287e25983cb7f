"""Command line: ``python -m spacy_hybridner COMMAND`` (also the ``spacy-hybridner`` script)."""
from enum import Enum
from pathlib import Path
from typing import Dict, List, Optional

import typer

app = typer.Typer(
    name="spacy-hybridner",
    help="Corpora, showcases and reports for spacy-hybridner pipelines.",
    no_args_is_help=True,
    add_completion=False,
)


class CorpusName(str, Enum):
    gmb = "gmb"
    conll03 = "conll03"
    wnut17 = "wnut17"


@app.command("convert")
def convert(
    corpus: CorpusName = typer.Argument(..., help="Which corpus INPUT holds"),
    input_path: Path = typer.Argument(..., help="gmb: ner_dataset.csv(.zip); conll03: the folder with eng.train, eng.testa, eng.testb; wnut17: the folder with wnut17train.conll, emerging.dev.conll"),
    output_dir: Path = typer.Argument(..., help="Where train.spacy, dev.spacy and test.spacy are written"),
    limit: int = typer.Option(0, help="gmb: read only the first N sentences (0: all); conll03/wnut17: keep the first N docs of each split"),
    dev: float = typer.Option(0.1, help="gmb: fraction of sentences for dev"),
    test: float = typer.Option(0.1, help="gmb: fraction of sentences for test"),
    seed: int = typer.Option(0, help="gmb: seed of the sentence shuffle before splitting"),
) -> None:
    """Convert a corpus to spaCy's binary format, one file per split.

    gmb is split by sentence into train/dev/test (shuffled with --seed; 80/10/10 by
    default). conll03 keeps its documents whole (train, dev = testa, test = testb).
    wnut17 has train and dev; dev is also written as test, the split to evaluate on.
    """
    import spacy
    from spacy.tokens import DocBin

    from .corpora import (
        entity_counts, read_conll03, read_gmb, read_token_tag_file, sentences_to_docs, split_items,
    )

    vocab = spacy.blank("xx").vocab
    if corpus == CorpusName.gmb:
        sentences = read_gmb(input_path, limit=limit)
        parts = {k: sentences_to_docs(v, vocab) for k, v in split_items(sentences, dev, test, seed).items()}
    elif corpus == CorpusName.conll03:
        files = {"train": "eng.train", "dev": "eng.testa", "test": "eng.testb"}
        parts = {k: read_conll03(_input_file(input_path, f)) for k, f in files.items()}
    else:
        files = {"train": "wnut17train.conll", "dev": "emerging.dev.conll"}
        parts = {k: sentences_to_docs(read_token_tag_file(_input_file(input_path, f)), vocab) for k, f in files.items()}
        parts["test"] = parts["dev"]
    if limit and corpus != CorpusName.gmb:
        parts = {k: v[:limit] for k, v in parts.items()}
    output_dir.mkdir(parents=True, exist_ok=True)
    for name in ("train", "dev", "test"):
        docs = parts[name]
        DocBin(docs=docs, store_user_data=False).to_disk(output_dir / f"{name}.spacy")
        n_words = sum(len(doc) for doc in docs)
        typer.echo(f"{name}: {len(docs)} docs, {n_words} tokens, entities {entity_counts(docs)} -> {output_dir / f'{name}.spacy'}")


def _input_file(folder: Path, name: str) -> Path:
    path = folder / name
    if not path.exists():
        raise typer.BadParameter(f"{path} does not exist: expected the folder that holds {name}.")
    return path


@app.command("showcase")
def showcase(
    model: str = typer.Argument(..., help="Pipeline name or path"),
    data_path: Path = typer.Argument(..., help="Held-out .spacy file"),
    output_path: Path = typer.Argument(..., help="displaCy HTML file to write"),
    n_docs: int = typer.Option(20, "--n-docs", help="How many documents to show"),
    gpu_id: int = typer.Option(-1, help="GPU id, -1 for CPU"),
) -> None:
    """Annotate held-out documents, print their entities and write displaCy HTML."""
    import spacy
    from spacy import displacy
    from spacy.tokens import DocBin

    if gpu_id >= 0:
        spacy.require_gpu(gpu_id)
    nlp = spacy.load(model)
    gold = list(DocBin().from_disk(data_path).get_docs(nlp.vocab))[:n_docs]
    docs = list(nlp.pipe(doc.text for doc in gold))
    for doc in docs:
        typer.echo(doc.text)
        for ent in doc.ents:
            confidence = "" if ent._.confidence is None else f" ({ent._.confidence:.2f})"
            typer.echo(f"    {ent.label_:<12} {ent.text}{confidence}")
    output_path.parent.mkdir(parents=True, exist_ok=True)
    output_path.write_text(displacy.render(docs, style="ent", page=True), encoding="utf8")
    typer.echo(f"displaCy HTML of {len(docs)} documents: {output_path}")


def main() -> None:
    app()
