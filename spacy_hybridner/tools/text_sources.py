"""Unlabeled text from where users have it, for :func:`~.corpora.write_texts`: the
documents of Reuters-21578's SGML files, of plain text and JSON Lines files and of
``.spacy`` corpora, each with a stable id and, where a rule drops it, that rule's name.

A source is a file or a folder (its ``.sgm``, ``.txt``, ``.jsonl``, ``.ndjson`` and
``.spacy`` files, sorted by name). What each kind of file gives:

- ``.sgm`` (Reuters-21578, latin-1, one ``<REUTERS ... NEWID="n">`` element per article):
  id ``reuters:NEWID``; the text is the TITLE on the first line, then the BODY, one
  paragraph a line (a paragraph starts with an indented line; its hard-wrapped lines are
  joined with single spaces). Character references are resolved (``&lt;`` is ``<``),
  control characters but the newline are removed, and the trailing ``Reuter`` signature
  is dropped. Rules: ``no_body``, ``empty``, ``table``, ``capitals`` (see
  :func:`reuters_rule`).
- ``.txt``: one document a line, as ``annotate`` reads a .txt (UTF-8, blank lines are not
  documents, a byte order mark at the start is dropped); id ``FOLDER/FILE:LINE``.
- ``.jsonl`` / ``.ndjson``: one JSON object a line with a string ``text``; id
  ``FOLDER/FILE:LINE`` (a record's own id is not kept: those of two files may collide).
- ``.spacy``: each Doc's text, id ``FOLDER/NAME:INDEX`` (NAME without ``.spacy``).

Plain text, JSON Lines and ``.spacy`` documents are written as they are; a document whose
text is blank is dropped as ``empty``. A document of an ``.sgm``, ``.txt`` or ``.jsonl``
file whose :func:`duplicate_key` an earlier document of any source had is dropped as
``duplicate``; a ``.spacy`` corpus's documents are never dropped as duplicates
(``SUFFIX_RULES``).
"""

import hashlib
import html
import json
import re
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from .corpora import CorpusFormatError

# (id, text, the rule that drops the document or None), one per document of a source.
Document = Tuple[str, str, Optional[str]]

SGML_SUFFIX = ".sgm"
TEXT_SUFFIX = ".txt"
JSONL_SUFFIXES = (".jsonl", ".ndjson")
SPACY_SUFFIX = ".spacy"
SOURCE_SUFFIXES = (SGML_SUFFIX, TEXT_SUFFIX, *JSONL_SUFFIXES, SPACY_SUFFIX)

#: Each rule that drops a document, with the words the ``texts`` command prints for it.
RULES: Dict[str, str] = {
    "no_body": "without a body",
    "empty": "empty",
    "table": "tables",
    "capitals": "all-capitals",
    "duplicate": "duplicates",
}
#: The rules that apply to the documents of each kind of file. A ``.spacy`` corpus's
#: documents are all written (its own repeats stay, as in its gold data, and the output
#: of the default workflow stays as it was); their texts still make later copies duplicates.
SUFFIX_RULES: Dict[str, Tuple[str, ...]] = {
    SGML_SUFFIX: tuple(RULES),
    TEXT_SUFFIX: ("empty", "duplicate"),
    **dict.fromkeys(JSONL_SUFFIXES, ("empty", "duplicate")),
    SPACY_SUFFIX: ("empty",),
}

#: A body line with fewer letters than this, or with aligned columns (two or more spaces
#: between two non-space characters), is a table row ...
TABLE_ROW_MIN_LETTERS = 20
#: ... and a body more than this share of whose non-blank lines are table rows is a table.
TABLE_ROW_SHARE = 0.5
#: A body at least this share of whose letters are upper-case is an all-capitals bulletin.
CAPITALS_SHARE = 0.8

_ARTICLE = re.compile(r"<REUTERS\b([^>]*)>(.*?)</REUTERS>", re.S)
_NEWID = re.compile(r'\bNEWID="(\d+)"')
_TITLE = re.compile(r"<TITLE>(.*?)</TITLE>", re.S)
_BODY = re.compile(r"<BODY>(.*?)</BODY>", re.S)
# SGML character references with their semicolon: named (&lt;, &amp;) and numeric (&#3;).
_REFERENCE = re.compile(r"&(?:#[0-9]+|#[xX][0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]*);")
# C0 control characters but the newline, and DEL (&#3; ends each body, &#127; occurs).
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")
# The signature: Reuter, REUTER (a few: reuter, REUTERS, REUTER..., REUTER^M) at the end.
_SIGNATURE = re.compile(r"(?:^|\s)reuters?(?:\.\.\.|\^m)*\s*$", re.I)
_COLUMNS = re.compile(r"\S {2,}\S")


# --- the sources -----------------------------------------------------------------------
def source_files(sources: Sequence[Path]) -> Dict[str, List[Path]]:
    """The files of each source (as given: a file, or a folder of the files it holds
    with a suffix of ``SOURCE_SUFFIXES``, sorted by name).

    RAISES: FileNotFoundError for sources that do not exist (all named at once) or a
        folder without such files; ValueError for a file of another kind, a file given
        twice, or two files that would give the same ids.
    """
    missing = [str(p) for p in sources if not Path(p).exists()]
    if missing:
        raise FileNotFoundError(
            f"not found: {', '.join(missing)} (give .spacy, .sgm, .txt or .jsonl files or folders of them, "
            "e.g. corpus/gmb/train.spacy)"
        )
    files: Dict[str, List[Path]] = {}
    for source in map(Path, sources):
        if source.is_dir():
            found = sorted((p for p in source.iterdir() if p.is_file() and p.suffix in SOURCE_SUFFIXES), key=str)
            if not found:
                raise FileNotFoundError(f"{source}: a folder without {', '.join(SOURCE_SUFFIXES)} files")
            files[str(source)] = found
        elif source.suffix in SOURCE_SUFFIXES:
            files[str(source)] = [source]
        else:
            raise ValueError(f"{source}: not a file that texts reads ({', '.join(SOURCE_SUFFIXES)}) or a folder")
    _check_distinct([p for paths in files.values() for p in paths])
    return files


def _check_distinct(paths: List[Path]) -> None:
    """Refuse a file given twice, and two files whose ids would start alike (Reuters ids
    are the articles' NEWIDs, unique in the distribution: only a file twice repeats them)."""
    by_file: Dict[Path, Path] = {}
    by_prefix: Dict[str, Path] = {}
    for path in paths:
        prefix = id_prefix(path)
        same = by_file.get(path.resolve()) or (by_prefix.get(prefix) if path.suffix != SGML_SUFFIX else None)
        if same is not None:
            raise ValueError(
                f"{same} and {path} would give the same document ids ({prefix}:...): give each file once, "
                "and no two files of the same folder and file name"
            )
        by_file[path.resolve()] = path
        if path.suffix != SGML_SUFFIX:
            by_prefix[prefix] = path


def id_prefix(path: Path) -> str:
    """What a file's document ids start with: ``FOLDER/NAME`` for a ``.spacy`` file (as
    ``texts`` always wrote), ``FOLDER/FILE`` for the others, ``reuters`` for ``.sgm``."""
    if path.suffix == SGML_SUFFIX:
        return "reuters"
    return f"{path.parent.name}/{path.stem if path.suffix == SPACY_SUFFIX else path.name}"


def rules_of(paths: Sequence[Path]) -> Tuple[str, ...]:
    """The rules that can drop documents of these files, in ``RULES``'s order."""
    rules = {rule for path in paths for rule in SUFFIX_RULES[path.suffix]}
    return tuple(r for r in RULES if r in rules)


def read_documents(path: Path, vocab=None) -> Iterator[Document]:
    """The documents of one file, by its suffix (``vocab``: for ``.spacy`` files)."""
    if path.suffix == SGML_SUFFIX:
        return read_reuters(path)
    if path.suffix == TEXT_SUFFIX:
        return read_text_lines(path)
    if path.suffix in JSONL_SUFFIXES:
        return read_jsonl(path)
    return read_docbin(path, vocab)


def duplicate_key(text: str) -> bytes:
    """What two documents with the same text share: a digest of the text with its
    whitespace runs made single spaces, stripped and case-folded."""
    return hashlib.blake2b(" ".join(text.split()).casefold().encode("utf8", "surrogatepass"), digest_size=16).digest()


# --- Reuters-21578 ---------------------------------------------------------------------
def read_reuters(path: Path) -> Iterator[Document]:
    """The articles of a Reuters-21578 SGML file (``reut2-NNN.sgm``), in file order:
    id ``reuters:NEWID``, text (TITLE line, BODY paragraphs) and the rule that drops it."""
    data = Path(path).read_bytes().decode("latin-1")
    n_articles = 0
    for match in _ARTICLE.finditer(data):
        n_articles += 1
        newid = _NEWID.search(match.group(1))
        if newid is None:
            line = data.count("\n", 0, match.start()) + 1
            raise CorpusFormatError(path, line, "a <REUTERS> element without NEWID", 'NEWID="n" in each <REUTERS>')
        yield (f"reuters:{newid.group(1)}", *reuters_article(match.group(2)))
    if not n_articles:
        raise CorpusFormatError(path, 1, "no <REUTERS> element", "a Reuters-21578 SGML file (reut2-NNN.sgm)")


def reuters_article(content: str) -> Tuple[str, Optional[str]]:
    """(text, the rule that drops it or None) of the content of a ``<REUTERS>`` element."""
    body = _BODY.search(content)
    if body is None:
        return "", "no_body"
    lines = _plain(body.group(1)).rstrip().split("\n")
    signature = _SIGNATURE.search(lines[-1])
    if signature:
        lines[-1] = lines[-1][: signature.start()]
    paragraphs = body_paragraphs(lines)
    title = _TITLE.search(content)
    title_text = " ".join(_plain(title.group(1)).split()) if title else ""
    text = "\n".join([title_text, *paragraphs] if title_text else paragraphs)
    return text, reuters_rule(lines) if paragraphs else "empty"


def _plain(sgml: str) -> str:
    """SGML text with its character references resolved and control characters removed."""
    return _CONTROL.sub("", _REFERENCE.sub(lambda m: html.unescape(m.group(0)), sgml))


def body_paragraphs(lines: Sequence[str]) -> List[str]:
    """The paragraphs of a body's lines, each one line with single spaces: a paragraph
    starts at an indented line or after a blank line, and runs to the next one."""
    paragraphs: List[List[str]] = []
    new = True
    for line in lines:
        if not line.strip():
            new = True
            continue
        if new or line[:1].isspace():
            paragraphs.append([])
        paragraphs[-1].extend(line.split())
        new = False
    return [" ".join(words) for words in paragraphs]


def reuters_rule(lines: Sequence[str]) -> Optional[str]:
    """``table`` or ``capitals`` when a body's lines (its signature dropped) are one, else None.

    table: more than ``TABLE_ROW_SHARE`` of the non-blank lines have fewer than
        ``TABLE_ROW_MIN_LETTERS`` letters or aligned columns (2+ spaces between two
        non-space characters): price tables, earnings figures (``Shr 23 cts vs 32 cts``).
    capitals: at least ``CAPITALS_SHARE`` of the letters are upper-case (bulletins such
        as rainfall reports). The title is not counted: Reuters titles are capitals.
    """
    rows = [line for line in lines if line.strip()]
    n_table_rows = sum(
        1 for line in rows if sum(c.isalpha() for c in line) < TABLE_ROW_MIN_LETTERS or _COLUMNS.search(line)
    )
    if n_table_rows > TABLE_ROW_SHARE * len(rows):
        return "table"
    letters = [c for line in rows for c in line if c.isalpha()]
    if sum(c.isupper() for c in letters) >= CAPITALS_SHARE * len(letters):
        return "capitals"
    return None


# --- plain text, JSON Lines, .spacy ----------------------------------------------------
def _lines(path: Path) -> Iterator[Tuple[int, str]]:
    """(line number from 1, text) of each line of a UTF-8 file, its line end removed."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                text = raw.rstrip(b"\n").rstrip(b"\r").decode("utf8")
            except UnicodeDecodeError as err:
                raise CorpusFormatError(
                    path, number, f"bytes that are not valid UTF-8 ({err.reason} at byte {err.start})", "UTF-8 text"
                ) from None
            yield number, text[1:] if number == 1 and text.startswith("\ufeff") else text


def read_text_lines(path: Path) -> Iterator[Document]:
    """The non-blank lines of a plain text file, one document each: id ``FOLDER/FILE:LINE``."""
    prefix = id_prefix(path)
    for number, text in _lines(path):
        if text.strip():
            yield f"{prefix}:{number}", text, None


def read_jsonl(path: Path) -> Iterator[Document]:
    """The ``text`` of each JSON object of a JSON Lines file: id ``FOLDER/FILE:LINE``."""
    prefix = id_prefix(path)
    expected = 'a JSON object with a string "text" on each line'
    for number, line in _lines(path):
        if not line.strip(" \t\r\n"):
            continue
        try:
            record = json.loads(line)
        except ValueError as err:
            raise CorpusFormatError(path, number, f"invalid JSON ({err})", expected) from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise CorpusFormatError(path, number, 'no string "text" field', expected)
        text = record["text"]
        yield f"{prefix}:{number}", text, None if text.strip() else "empty"


def read_docbin(path: Path, vocab) -> Iterator[Document]:
    """The text of each Doc of a ``.spacy`` file: id ``FOLDER/NAME:INDEX``."""
    from spacy.tokens import DocBin

    prefix = id_prefix(path)
    for i, doc in enumerate(DocBin().from_disk(path).get_docs(vocab)):
        yield f"{prefix}:{i}", doc.text, None if doc.text.strip() else "empty"
