"""Entities for people to read: one line per entity, displaCy HTML, and the showcase
of a model on held-out documents. Used by the ``showcase`` and ``visualize`` commands."""

from pathlib import Path
from typing import Iterable, List

from spacy import displacy
from spacy.language import Language
from spacy.tokens import Doc, DocBin, Span


def entity_lines(doc: Doc, indent: str = "") -> List[str]:
    """doc (Doc): An annotated document. indent (str): Put before each line.
    RETURNS (List[str]): One line per entity: label, text and, where the entity has
    one, ``ent._.confidence`` to two decimals."""
    lines = []
    for ent in doc.ents:
        confidence = ent._.confidence if Span.has_extension("confidence") else None
        shown = "" if confidence is None else f" ({confidence:.2f})"
        lines.append(f"{indent}{ent.label_:<12} {ent.text}{shown}")
    return lines


def write_displacy(docs: Iterable[Doc], path: Path) -> Path:
    """Write the entities of ``docs`` as one displaCy HTML page.

    docs (Iterable[Doc]): Annotated documents. path (Path): The HTML file (its folder
    is made if missing). RETURNS (Path): ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(displacy.render(list(docs), style="ent", page=True), encoding="utf8")
    return path


def showcase(nlp: Language, data_path: Path, output_path: Path, n_docs: int = 20) -> List[Doc]:
    """Annotate the texts of the first ``n_docs`` documents of a .spacy file and write
    them as displaCy HTML.

    nlp (Language): The pipeline. data_path (Path): Held-out .spacy file.
    output_path (Path): The HTML file. n_docs (int): How many documents.
    RETURNS (List[Doc]): The annotated documents.
    """
    gold = list(DocBin().from_disk(data_path).get_docs(nlp.vocab))[:n_docs]
    docs = list(nlp.pipe(doc.text for doc in gold))
    write_displacy(docs, output_path)
    return docs
