"""Readers for the NER corpora the project trains on, producing spaCy ``Doc`` objects.

spaCy's own converters are used where they are right (CoNLL-2003 goes through
``conll_ner_to_docs``; IOB tags become spans through ``iob_to_biluo`` and
``biluo_tags_to_spans``). The readers here handle what those do not: the GMB CSV
(cp1252, forward-filled sentence ids, quoted fields, a sentence cut off by a
spreadsheet's row limit), WNUT-17's tab-only separator lines, and the CoNLL-2003 test
file's different ``-DOCSTART-`` line. Every malformed line is reported with its file,
line number and what was expected.
"""

import csv
import random
import re
import zipfile
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Sequence, Tuple

from spacy.tokens import Doc
from spacy.training import biluo_tags_to_spans, iob_to_biluo
from spacy.training.converters import conll_ner_to_docs
from spacy.vocab import Vocab

Sentence = Tuple[List[str], List[str]]  # words, IOB tags

IOB_TAG = re.compile(r"^(O|[BI]-[^\s]+)$")
# A CSV saved by a spreadsheet stops at its row limit, header included.
SPREADSHEET_ROW_LIMIT = 1_048_576


class CorpusFormatError(ValueError):
    """A line of a corpus file is not in the expected format."""

    def __init__(self, path, line: int, problem: str, expected: str):
        super().__init__(f"{path}, line {line}: {problem}. Expected {expected}.")
        self.path, self.line = path, line


def _check_tag(tag: str, path, line: int) -> None:
    if not IOB_TAG.match(tag):
        raise CorpusFormatError(path, line, f"bad NER tag {tag!r}", "'O' or B-/I- followed by a label")


def _decoded_lines(data: bytes, path, encoding: str) -> Iterator[Tuple[int, str]]:
    """(line number, text) for each line, decoded strictly, line ends removed."""
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError as err:
            raise CorpusFormatError(
                path,
                number,
                f"bytes that are not valid {encoding} ({err.reason} at column {err.start + 1})",
                f"a {encoding}-encoded file",
            ) from None
        yield number, text.rstrip("\r")


def _read_bytes(path: Path) -> bytes:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Corpus file not found: {path}")
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if not n.endswith("/")]
            if len(names) != 1:
                raise ValueError(f"{path}: expected a zip archive holding one file, found {names}.")
            return archive.read(names[0])
    return path.read_bytes()


# --- GMB ----------------------------------------------------------------------------
GMB_HEADER = ["Sentence #", "Word", "POS", "Tag"]


def read_gmb(path, limit: int = 0) -> List[Sentence]:
    """Sentences of the GMB-derived "Annotated Corpus for NER" (Kaggle CSV).

    path: ``ner_dataset.csv`` or a zip holding it. cp1252, CRLF, header
        ``Sentence #,Word,POS,Tag``; the sentence id is filled on a sentence's first row.
    limit (int): Stop after this many sentences (0: all).
    RETURNS (List[Sentence]): (words, IOB2 tags) per sentence. When the file has exactly
        a spreadsheet's row limit of rows it was cut off there, and its last, incomplete
        sentence is dropped.
    """
    data = _read_bytes(path)
    lines = _decoded_lines(data, path, "cp1252")
    sentences: List[Sentence] = []
    words: List[str] = []
    tags: List[str] = []
    n_rows = 0
    for number, row in _csv_rows(lines, path):
        n_rows += 1
        if number == 1:
            if row != GMB_HEADER:
                raise CorpusFormatError(path, 1, f"header {row}", f"the header {GMB_HEADER}")
            continue
        if len(row) != 4:
            raise CorpusFormatError(path, number, f"{len(row)} columns", "4 columns: Sentence #,Word,POS,Tag")
        sentence_id, word, _, tag = row
        _check_tag(tag, path, number)
        if sentence_id:
            if words:
                sentences.append((words, tags))
                if limit and len(sentences) >= limit:
                    return sentences
            words, tags = [], []
        elif not words:
            raise CorpusFormatError(
                path,
                number,
                "a word before any sentence id",
                "'Sentence: N' in the first column of a sentence's first row",
            )
        words.append(word)
        tags.append(tag)
    if words and n_rows < SPREADSHEET_ROW_LIMIT:
        sentences.append((words, tags))
    return sentences


def _csv_rows(lines: Iterable[Tuple[int, str]], path) -> Iterator[Tuple[int, List[str]]]:
    for number, text in lines:
        if not text:
            continue
        try:
            (row,) = csv.reader([text])
        except (csv.Error, ValueError) as err:
            raise CorpusFormatError(
                path, number, f"unreadable CSV ({err})", "comma-separated fields, quoted where they hold commas"
            ) from None
        yield number, row


# --- WNUT-17 and other token<TAB>tag files --------------------------------------------
def read_token_tag_file(path, encoding: str = "utf8") -> List[Sentence]:
    """Sentences of a two-column ``token<TAB>tag`` file such as WNUT-17. A line that is
    empty after stripping (WNUT-17 writes a single tab) ends a sentence."""
    data = _read_bytes(path)
    sentences: List[Sentence] = []
    words: List[str] = []
    tags: List[str] = []
    for number, text in _decoded_lines(data, path, encoding):
        if text.strip() == "":
            if words:
                sentences.append((words, tags))
                words, tags = [], []
            continue
        cols = text.split("\t")
        if len(cols) != 2 or not cols[0].strip():
            raise CorpusFormatError(
                path, number, f"{len(cols)} tab-separated columns in {text!r}", "2 columns: token<TAB>tag"
            )
        _check_tag(cols[1].strip(), path, number)
        words.append(cols[0].strip())
        tags.append(cols[1].strip())
    if words:
        sentences.append((words, tags))
    return sentences


# --- CoNLL-2003 -----------------------------------------------------------------------
CONLL_DOC_DELIMITER = "-DOCSTART- -X- O O"


def read_conll03(path) -> List[Doc]:
    """Documents of a CoNLL-2003 file (``token POS chunk NER``, IOB1, ``-DOCSTART-``
    lines between documents), one Doc per document, through spaCy's converter.

    Each line is checked first, since the converter silently drops what it cannot
    read; every ``-DOCSTART-`` line is written the way the converter recognises.
    """
    data = _read_bytes(path)
    lines = []
    n_columns = None
    for number, text in _decoded_lines(data, path, "utf8"):
        cols = text.split()
        if not cols:
            lines.append("")
            continue
        if cols[0] == "-DOCSTART-":
            lines.append(CONLL_DOC_DELIMITER)
            continue
        if n_columns is None:
            n_columns = len(cols)
        if len(cols) != n_columns or len(cols) < 2:
            raise CorpusFormatError(
                path,
                number,
                f"{len(cols)} columns in {text!r}",
                f"{n_columns or 4} space-separated columns: token POS chunk NER",
            )
        _check_tag(cols[-1], path, number)
        lines.append(text)
    return list(conll_ner_to_docs("\n".join(lines), n_sents=0, no_print=True))


# --- to Docs ---------------------------------------------------------------------------
def sentences_to_docs(sentences: Sequence[Sentence], vocab: Vocab) -> List[Doc]:
    """One Doc per sentence, entities from its IOB (IOB1 or IOB2) tags."""
    docs = []
    for words, tags in sentences:
        doc = Doc(vocab, words=words)
        doc.ents = biluo_tags_to_spans(doc, iob_to_biluo(tags))
        docs.append(doc)
    return docs


def split_items(items: Sequence, dev: float, test: float, seed: int) -> Dict[str, list]:
    """Shuffle with ``seed`` and cut into ``train``, ``dev`` and ``test`` parts of the
    given fractions (the rest is train)."""
    if dev < 0 or test < 0 or dev + test >= 1:
        raise ValueError(f"dev ({dev}) and test ({test}) must be fractions that leave some data for training.")
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_dev = round(len(items) * dev)
    n_test = round(len(items) * test)
    parts = {"dev": order[:n_dev], "test": order[n_dev : n_dev + n_test], "train": order[n_dev + n_test :]}
    return {name: [items[i] for i in sorted(idx)] for name, idx in parts.items()}


def entity_counts(docs: Iterable[Doc]) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for doc in docs:
        for ent in doc.ents:
            counts[ent.label_] = counts.get(ent.label_, 0) + 1
    return dict(sorted(counts.items()))


CORPUS_FILES = {
    "conll03": {"train": "eng.train", "dev": "eng.testa", "test": "eng.testb"},
    "wnut17": {"train": "wnut17train.conll", "dev": "emerging.dev.conll"},
}


def _input_file(folder: Path, name: str) -> Path:
    path = Path(folder) / name
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: expected the folder that holds {name}.")
    return path


def convert_corpus(
    corpus: str,
    input_path: Path,
    output_dir: Path,
    *,
    limit: int = 0,
    dev: float = 0.1,
    test: float = 0.1,
    seed: int = 0,
) -> Dict[str, Dict]:
    """Convert a corpus to spaCy's binary format: ``train.spacy``, ``dev.spacy`` and
    ``test.spacy`` in ``output_dir``. gmb is split by sentence (shuffled with ``seed``);
    conll03 keeps its documents whole (dev = testa, test = testb); wnut17's dev is also
    written as test, the split to evaluate on.

    corpus (str): ``gmb``, ``conll03`` or ``wnut17``.
    input_path (Path): gmb: ner_dataset.csv(.zip); conll03 and wnut17: the folder of
        their files (``CORPUS_FILES``).
    output_dir (Path): Where the three files are written (made if missing).
    limit (int): gmb: read only the first N sentences; others: keep the first N docs of
        each split; 0: all.
    dev (float): gmb: fraction of sentences for dev.
    test (float): gmb: fraction of sentences for test.
    seed (int): gmb: seed of the sentence shuffle.
    RETURNS (Dict[str, Dict]): By split: ``path``, ``docs``, ``tokens``, ``entities``
        (counts by label).
    """
    import spacy
    from spacy.tokens import DocBin

    vocab = spacy.blank("xx").vocab
    if corpus == "gmb":
        sentences = read_gmb(input_path, limit=limit)
        parts = {k: sentences_to_docs(v, vocab) for k, v in split_items(sentences, dev, test, seed).items()}
    elif corpus == "conll03":
        parts = {k: read_conll03(_input_file(input_path, f)) for k, f in CORPUS_FILES[corpus].items()}
    elif corpus == "wnut17":
        parts = {
            k: sentences_to_docs(read_token_tag_file(_input_file(input_path, f)), vocab)
            for k, f in CORPUS_FILES[corpus].items()
        }
        parts["test"] = parts["dev"]
    else:
        raise ValueError(f"Unknown corpus '{corpus}': use gmb, conll03 or wnut17.")
    if limit and corpus != "gmb":
        parts = {k: v[:limit] for k, v in parts.items()}
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    stats = {}
    for name in ("train", "dev", "test"):
        docs = parts[name]
        path = output_dir / f"{name}.spacy"
        DocBin(docs=docs, store_user_data=False).to_disk(path)
        stats[name] = {
            "path": path,
            "docs": len(docs),
            "tokens": sum(len(doc) for doc in docs),
            "entities": entity_counts(docs),
        }
    return stats


#: File names of the splits that unlabeled text must not come from (``write_texts``).
HELD_OUT_SPLITS = ("dev", "test")


def write_texts(corpora: Sequence[Path], output: Path, *, allow_held_out: bool = False) -> Dict[str, int]:
    """Write the text of every document of ``corpora`` (``.spacy`` files) as JSON Lines,
    ``{"id": "FOLDER/NAME:INDEX", "text": ...}``, without the annotations: unlabeled text
    for a teacher to annotate (``annotate``). A ``dev.spacy`` or ``test.spacy`` is refused
    unless ``allow_held_out``: a student that trains on the text its scores are measured
    on is measured wrongly.

    RETURNS (Dict[str, int]): ``docs`` and ``words`` written.
    """
    import spacy
    import srsly
    from spacy.tokens import DocBin

    paths = [Path(p) for p in corpora]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"not found: {', '.join(missing)} (give .spacy files, e.g. corpus/gmb/train.spacy)")
    held_out = [str(p) for p in paths if p.stem in HELD_OUT_SPLITS]
    if held_out and not allow_held_out:
        raise ValueError(
            f"{', '.join(held_out)}: the text of a dev or test split is not used as unlabeled text, since "
            "models are chosen and scored on it; give the train splits (or --allow-held-out for "
            "another corpus's held-out splits)."
        )
    vocab = spacy.blank("xx").vocab
    docs = words = 0

    def records() -> Iterator[Dict[str, str]]:
        nonlocal docs, words
        for path in paths:
            for i, doc in enumerate(DocBin().from_disk(path).get_docs(vocab)):
                if not doc.text.strip():
                    continue
                docs += 1
                words += len(doc)
                yield {"id": f"{path.parent.name}/{path.stem}:{i}", "text": doc.text}

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    srsly.write_jsonl(output, records())
    return {"docs": docs, "words": words}
