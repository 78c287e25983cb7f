"""Annotate a corpus: ``python -m spacy_hybridner annotate MODEL INPUT OUTPUT``.

Two engines run the same engine-neutral code:

- ``local``: ``nlp.pipe`` in this process (``n_process`` workers), for small jobs;
- ``ray``: Ray Data, ``read_*`` -> ``map_batches`` with an actor pool (the pipeline loaded
  once per actor, torch on one thread) -> ``write_*``, locally or on a Ray cluster.

Both read records with :func:`parse_batch` (the same checks, the same ids, the same reject
reasons) and annotate them with :func:`annotate_rows` (``nlp.pipe`` of an
:class:`~spacy_hybridner.annotator.Annotator`), and turn each Doc into an output record with
:func:`output_record`; :func:`annotate_batch` chains the three for one batch of input
columns. So the records are the same whichever engine runs them.

Inputs: JSON Lines (one object per line, ``--id-field``/``--text-field``), plain text (one
document per line, the line number as id) or Parquet; a file, a folder or a glob.
Outputs: JSON Lines, Parquet (one record per document: ``id``, ``ents``, optionally
``text``) or spaCy DocBin shards. Records that cannot be annotated go to a rejects file
(JSON Lines: ``id``, ``reason``, ``source``, ``line``) and the run goes on.

Outputs are published whole or not at all: each engine writes OUTPUT, its rejects file and
its manifest under temporary names beside them (``.NAME._temporary``), and renames them into
place only when the run has completed (OUTPUT last; a folder gets a ``_SUCCESS`` file, as a
Hadoop or Spark job's does). An interrupted or failed run removes its temporaries (a process
killed outright leaves them, and the next run refuses them without ``--overwrite``).
"""
import concurrent.futures
import contextlib
import datetime
import glob
import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import threading
import time
import warnings
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from .about import __version__
from .annotator import Annotator, doc_records, surrogate_problem, text_problem

INPUT_FORMATS = {"jsonl": (".jsonl", ".ndjson", ".json"), "txt": (".txt",), "parquet": (".parquet",)}
OUTPUT_FORMATS = {"jsonl": (".jsonl", ".ndjson", ".json"), "parquet": (".parquet",), "docbin": (".spacy",)}
OUTPUT_EXTENSIONS = {"jsonl": "jsonl", "parquet": "parquet", "docbin": "spacy"}
# Exit status of a run that completed but rejected some records (0: all annotated).
EXIT_REJECTS = 3
# spaCy's own default nlp.max_length: a longer text makes nlp.pipe raise, so reject it first.
DEFAULT_MAX_CHARS = 1_000_000
LINE_BLOCK_ROWS = 10_000
# Seconds the Ray engine waits for all its actors to start (load the pipeline) before the run.
ACTOR_START_TIMEOUT_S = 600


class AnnotateInputError(ValueError):
    """The input cannot be read: a missing path, no matching files, an unreadable or
    malformed file, a missing column. The message names the file and the fix."""


class AnnotateRunError(RuntimeError):
    """The run could not complete (a worker process died, the pipeline failed to load in
    a worker). Nothing was published; the message says what happened and what to do."""


class AnnotateInterrupted(KeyboardInterrupt):
    """The run was stopped by SIGINT (Ctrl-C) or SIGTERM; nothing was published."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass
class RecordSettings:
    """How input records are read and output records written.

    fmt (str): the input format, "jsonl", "txt" or "parquet".
    id_field (str): the field (JSON Lines) or column (Parquet) holding each record's id.
    text_field (str): the field or column holding the text.
    max_chars (Optional[int]): longer texts are rejected (None: no limit).
    include_text (bool): copy each text into its output record.
    source_names (Dict[str, str]): input path -> the name used in ids and rejects.
    multi_source (bool): several input files; plain-text ids are then "NAME:LINE".
    """

    fmt: str
    id_field: str = "id"
    text_field: str = "text"
    max_chars: Optional[int] = DEFAULT_MAX_CHARS
    include_text: bool = False
    source_names: Dict[str, str] = field(default_factory=dict)
    multi_source: bool = False

    def source_name(self, path: str) -> str:
        return self.source_names.get(path, path)


@dataclass
class Row:
    """One valid input record: its id, text, and where it came from."""

    id: Any
    text: str
    source: str
    line: Optional[int] = None


# ---------------------------------------------------------------------------------------
# Finding and checking the input


def resolve_inputs(input_path: str, input_format: Optional[str] = None) -> Tuple[str, List[Path]]:
    """The input format and the files of INPUT (a file, a folder, searched recursively,
    or a glob), sorted. The format comes from ``input_format`` or the files' extensions.
    Raises AnnotateInputError naming the problem."""
    if input_format is not None and input_format not in INPUT_FORMATS:
        raise AnnotateInputError(f"unknown input format {input_format!r}: use one of {', '.join(INPUT_FORMATS)}.")
    known = tuple(ext for exts in INPUT_FORMATS.values() for ext in exts)
    wanted = INPUT_FORMATS[input_format] if input_format else known
    if any(c in input_path for c in "*?["):
        files = [Path(p) for p in sorted(glob.glob(input_path, recursive=True)) if Path(p).is_file()]
        if not files:
            raise AnnotateInputError(f"no files match {input_path!r}.")
    elif Path(input_path).is_dir():
        files = sorted(p for p in Path(input_path).rglob("*") if p.is_file() and p.suffix.lower() in wanted)
        if not files:
            raise AnnotateInputError(
                f"{input_path} holds no {' / '.join(wanted)} files: give a file, a glob, or --input-format."
            )
    elif Path(input_path).is_file():
        files = [Path(input_path)]
    else:
        raise AnnotateInputError(f"{input_path} does not exist: give a file, a folder or a glob of input files.")
    if input_format:
        return input_format, files
    formats = {fmt for f in files for fmt, exts in INPUT_FORMATS.items() if f.suffix.lower() in exts}
    unknown = [str(f) for f in files if f.suffix.lower() not in known]
    if unknown or len(formats) != 1:
        found = ", ".join(sorted(formats)) or "none"
        raise AnnotateInputError(
            f"cannot tell the input format of {input_path} (formats found: {found}"
            f"{'; unknown extensions: ' + ', '.join(unknown[:3]) if unknown else ''}): give --input-format."
        )
    return formats.pop(), files


def source_names(files: List[Path]) -> Dict[str, str]:
    """Short names of the input files (relative to their common folder) for ids and rejects."""
    if len(files) == 1:
        return {str(files[0]): files[0].name}
    root = os.path.commonpath([str(f.resolve().parent) for f in files])
    return {str(f): os.path.relpath(str(f.resolve()), root) for f in files}


def check_inputs(files: List[Path], settings: RecordSettings) -> None:
    """Open each input file before the run (Parquet: read its footer and check the id
    and text columns), so that an unreadable file fails at once with its name."""
    for path in files:
        try:
            with open(path, "rb") as f:
                f.read(1)
        except OSError as e:
            raise AnnotateInputError(f"cannot read {path}: {e.strerror or e}.") from e
        if settings.fmt != "parquet":
            continue
        import pyarrow.parquet as pq

        try:
            names = pq.read_schema(path).names
        except Exception as e:  # pyarrow raises ArrowInvalid / OSError for a damaged file
            raise AnnotateInputError(f"{path} is not a readable Parquet file: {e}") from e
        for what, name in (("text", settings.text_field), ("id", settings.id_field)):
            if name not in names:
                raise AnnotateInputError(
                    f"{path} has no column {name!r} for the {what} (columns: {', '.join(names)}): "
                    f"use --{what}-field."
                )


# ---------------------------------------------------------------------------------------
# Reading: batches of columns, the same in both engines


def iter_lines(f, chunk_size: int = 1 << 20) -> Iterator[Tuple[int, bytes]]:
    """(line number from 1, line without its line break) of a binary file object."""
    rest = b""
    number = 0
    while True:
        chunk = f.read(chunk_size)
        if not chunk:
            break
        *lines, rest = (rest + chunk).split(b"\n")
        for line in lines:
            number += 1
            yield number, line.rstrip(b"\r")
    if rest:
        yield number + 1, rest.rstrip(b"\r")


def read_line_batches(path: str, f, rows_per_batch: int = LINE_BLOCK_ROWS) -> Iterator[Dict[str, list]]:
    """Batches of columns (``line``, ``raw``, ``path``) of the lines of a text or JSON
    Lines file: the line numbers from 1, the lines' bytes, the file."""
    batch: Dict[str, list] = {"line": [], "raw": [], "path": []}
    for number, raw in iter_lines(f):
        batch["line"].append(number)
        batch["raw"].append(raw)
        batch["path"].append(path)
        if len(batch["line"]) >= rows_per_batch:
            yield batch
            batch = {"line": [], "raw": [], "path": []}
    if batch["line"]:
        yield batch


def read_parquet_batches(path: str, settings: "RecordSettings", rows_per_batch: int = LINE_BLOCK_ROWS):
    """Arrow tables of the id and text columns of a Parquet file, read one row group slice
    at a time, with one schema whatever the file's column types (so that Ray Data can put
    rows of files with integer ids and files with string ids in one batch): ``id`` and
    ``text`` as strings (integers in decimal; null where the column has another type),
    ``id_type`` and ``text_type`` ("integer", "string", or the Arrow type of the column,
    which :func:`parse_batch` rejects), ``line`` (the row number from 1) and ``path``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def column(values, integers_allowed: bool):
        kind = values.type
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            return values.cast(pa.large_string()), "string"
        if integers_allowed and pa.types.is_integer(kind):
            return values.cast(pa.large_string()), "integer"
        return pa.nulls(len(values), pa.large_string()), str(kind)

    row = 0
    for rb in pq.ParquetFile(path).iter_batches(batch_size=rows_per_batch,
                                               columns=[settings.id_field, settings.text_field]):
        n = rb.num_rows
        ids, id_type = column(rb.column(settings.id_field), True)
        texts, text_type = column(rb.column(settings.text_field), False)
        yield pa.table({
            "id": ids, "id_type": pa.array([id_type] * n, pa.string()),
            "text": texts, "text_type": pa.array([text_type] * n, pa.string()),
            "line": pa.array(range(row + 1, row + 1 + n), pa.int64()), "path": pa.array([path] * n, pa.string()),
        })
        row += n


def iter_input_batches(files: List[Path], settings: RecordSettings, batch_size: int) -> Iterator[Dict[str, list]]:
    """Batches of input columns, as the Ray engine's readers give them: ``line`` (line or
    row number), ``path``, and ``raw`` (text, JSON Lines) or the id and text columns (Parquet)."""
    for path in files:
        if settings.fmt == "parquet":
            for table in read_parquet_batches(str(path), settings, batch_size):
                yield table.to_pydict()
        else:
            with open(path, "rb") as f:
                yield from read_line_batches(str(path), f, batch_size)


def parse_batch(batch: Dict[str, list], settings: RecordSettings) -> Tuple[List[Row], List[Dict[str, Any]]]:
    """The valid rows of a batch of input columns and the rejects (``id`` if it is a
    usable one, ``reason``, ``source``, ``line``). Blank lines are not records. Every other
    input record becomes exactly one Row or one reject, whatever the line holds: this
    function does not raise on any input."""
    rows: List[Row] = []
    rejects: List[Dict[str, Any]] = []
    for i in range(len(batch["path"])):
        source = settings.source_name(batch["path"][i])
        line = batch["line"][i]
        if settings.fmt == "parquet":
            id_, text, problem = _parquet_record(batch["id"][i], batch["id_type"][i], batch["text"][i],
                                                 batch["text_type"][i], settings)
        else:
            try:
                decoded = batch["raw"][i].decode("utf8")
            except UnicodeDecodeError as e:
                rejects.append({"id": None, "reason": f"line is not valid UTF-8 ({e.reason} at byte {e.start})",
                                "source": source, "line": line})
                continue
            if line == 1 and decoded.startswith("\ufeff"):
                decoded = decoded[1:]  # a byte order mark that some editors put at the start of a file
            if settings.fmt == "txt":
                if not decoded.strip():
                    continue
                id_ = f"{source}:{line}" if settings.multi_source else line
                text = decoded
                problem = text_problem(text, settings.max_chars)
            else:
                if not decoded.strip(JSON_WHITESPACE):
                    continue
                id_, text, problem = _json_record(decoded, settings)
        if problem:
            # The id as given if it is a string or an integer (one with a lone surrogate
            # included: the rejects file writes it as the input's \uXXXX escape).
            usable_id = isinstance(id_, (str, int)) and not isinstance(id_, bool)
            rejects.append({"id": id_ if usable_id else None, "reason": problem,
                            "source": source, "line": line})
        else:
            rows.append(Row(id_, text, source, line))
    return rows, rejects


# What JSON counts as whitespace (RFC 8259): a line of only these is blank; a line of other
# characters that str.strip() drops (form feed, U+2028, ...) is a record, and a reject.
JSON_WHITESPACE = " \t\r\n"


def _json_record(decoded: str, settings: RecordSettings) -> Tuple[Any, Any, Optional[str]]:
    """(id, text, problem) of one JSON Lines line."""
    try:
        record = json.loads(decoded)
    except ValueError as e:  # JSONDecodeError; also an integer of more than 4,300 digits
        return None, None, f"line is not valid JSON: {e}"
    except RecursionError:
        return None, None, "line is not usable JSON: it nests deeper than Python's recursion limit"
    if not isinstance(record, dict):
        return None, None, f"line is a JSON {_json_type(record)}, not an object"
    id_, text = record.get(settings.id_field), record.get(settings.text_field)
    if settings.id_field not in record:
        return id_, text, f"no {settings.id_field!r} field (set the id field with --id-field)"
    if settings.text_field not in record:
        return id_, text, f"no {settings.text_field!r} field (set the text field with --text-field)"
    return id_, text, id_problem(id_) or text_problem(text, settings.max_chars)


def _parquet_record(id_: Optional[str], id_type: str, text: Optional[str], text_type: str,
                    settings: RecordSettings) -> Tuple[Any, Any, Optional[str]]:
    """(id, text, problem) of one Parquet row, from :func:`read_parquet_batches`' columns."""
    if id_type not in ID_TYPES.values():
        return None, text, f"id must be a string or an integer, got a column of {id_type} (--id-field)"
    id_ = None if id_ is None else id_from_columns(id_, id_type)
    if text_type != "string":
        return id_, None, f"text must be a string, got a column of {text_type} (--text-field)"
    if id_ is None:
        return id_, text, "id is null"
    if text is None:
        return id_, text, "text is null"
    return id_, text, text_problem(text, settings.max_chars)


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number",
             type(None): "null"}
    return names.get(type(value), type(value).__name__)


def id_problem(id_: Any) -> Optional[str]:
    """Why ``id_`` cannot be a record's id, or None if it can: an id is a string that UTF-8
    can hold or an integer of any size (not a boolean, a float, null, an array or an object)."""
    if isinstance(id_, bool) or not isinstance(id_, (str, int)):
        return f"id must be a string or an integer, got {_json_type(id_)}"
    if isinstance(id_, str):
        return surrogate_problem(id_, "id")
    return None


# ---------------------------------------------------------------------------------------
# Annotating: the engine-neutral core


def annotate_rows(annotator: Annotator, rows: Iterable[Row], n_process: int = 1) -> Iterator[Tuple[Row, Any]]:
    """(row, Doc) for each row, in order, from ``nlp.pipe`` of the annotator's pipeline."""
    kwargs = {} if annotator.batch_size is None else {"batch_size": annotator.batch_size}
    pairs = ((row.text, row) for row in rows)
    for doc, row in annotator.nlp.pipe(pairs, as_tuples=True, n_process=n_process, **kwargs):
        yield row, doc


def output_record(row: Row, doc, settings: RecordSettings) -> Dict[str, Any]:
    """The output record of an annotated row: ``id``, ``ents`` (``start_char``,
    ``end_char``, ``label``, ``text``, ``confidence``) and, with include_text, ``text``."""
    record = {"id": row.id, "ents": doc_records(doc)}
    if settings.include_text:
        record["text"] = row.text
    return record


def annotate_batch(annotator: Annotator, batch: Dict[str, list], settings: RecordSettings) -> Dict[str, Any]:
    """Annotate one batch of input columns: ``{"records": [...], "docs": [...],
    "rejects": [...], "n_words": int}`` (records and docs in input order, valid rows only).

    A text on which the pipeline raises is a reject too: if ``nlp.pipe`` fails on the
    batch, its rows are annotated one at a time and those that fail are rejected with
    the error, so one bad record never fails the run."""
    rows, rejects = parse_batch(batch, settings)
    try:
        pairs = list(annotate_rows(annotator, rows))
    except Exception:
        pairs = []
        for row in rows:
            try:
                pairs.extend(annotate_rows(annotator, [row]))
            except Exception as e:
                rejects.append({"id": row.id, "reason": f"the pipeline failed on this text: {type(e).__name__}: {e}",
                                "source": row.source, "line": row.line})
    records = [output_record(row, doc, settings) for row, doc in pairs]
    return {"records": records, "docs": [doc for _, doc in pairs], "rejects": rejects,
            "n_words": sum(len(doc) for _, doc in pairs)}


def encode_batch(result: Dict[str, Any], output_format: str, include_text: bool):
    """The output of one annotated batch as its writer takes it, the same in both engines:
    JSON Lines: the lines' bytes; Parquet: an Arrow table (:func:`records_table`); DocBin:
    the bytes of a DocBin of the batch's Docs (ids in ``user_data``)."""
    if output_format == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in result["records"]).encode("utf8")
    if output_format == "parquet":
        return records_table(result["records"], include_text)
    return docbin_bytes(result["docs"], [r["id"] for r in result["records"]])


# Parquet (and DocBin, for integers beyond 64 bits) store each id as a string with its type,
# so that one schema holds string and integer ids of any size: "integer" ids are decimal.
ID_TYPES = {str: "string", int: "integer"}


def id_columns(ids: List[Any]) -> Tuple[List[str], List[str]]:
    """The ``id`` (a string) and ``id_type`` ("string" or "integer") of each valid id."""
    return [i if isinstance(i, str) else str(i) for i in ids], [ID_TYPES[type(i)] for i in ids]


def id_from_columns(value: Any, id_type: Optional[str]) -> Any:
    """An id as given in the input, from its ``id`` and ``id_type`` columns."""
    return int(value) if id_type == "integer" and isinstance(value, str) else value


def id_digests(ids: List[Any]):
    """A 64-bit digest of each id (type included: 1 and "1" differ), as a NumPy array;
    duplicate ids are counted from these, without holding every id in memory."""
    import numpy

    def digest(id_: Any) -> int:
        key = f"{ID_TYPES[type(id_)]}:{id_}".encode("utf8", "surrogatepass")
        return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")

    return numpy.array([digest(i) for i in ids], dtype=numpy.uint64)


def count_duplicates(digests: List[Any]) -> int:
    """The number of records whose id an earlier record already had (0: all ids unique)."""
    import numpy

    if not digests:
        return 0
    every = numpy.concatenate(digests)
    return int(len(every) - len(numpy.unique(every)))


def records_table(records: List[Dict[str, Any]], include_text: bool):
    """The output records as an Arrow table with a fixed schema: ``id`` (string),
    ``id_type`` ("string" or "integer"), ``ents`` and, with include_text, ``text``. An
    empty ``ents`` list keeps its type, so every shard has the same schema."""
    import pyarrow as pa

    ent = pa.struct([("start_char", pa.int64()), ("end_char", pa.int64()), ("label", pa.string()),
                     ("text", pa.string()), ("confidence", pa.float64())])
    ids, id_types = id_columns([r["id"] for r in records])
    columns = {"id": pa.array(ids, pa.string()), "id_type": pa.array(id_types, pa.string()),
               "ents": pa.array([r["ents"] for r in records], pa.list_(ent))}
    if include_text:
        columns["text"] = pa.array([r["text"] for r in records], pa.string())
    return pa.table(columns)


def docbin_bytes(docs: List[Any], ids: List[Any]) -> bytes:
    """A DocBin of the docs with each id in ``doc.user_data["id"]`` and its type in
    ``user_data["id_type"]`` (an integer outside 64 bits, which msgpack cannot hold, is
    stored as its decimal string); user data kept, so ``ent._.confidence`` travels too."""
    from spacy.tokens import DocBin

    db = DocBin(store_user_data=True)
    for doc, id_ in zip(docs, ids):
        fits = isinstance(id_, str) or -(1 << 63) <= id_ < (1 << 64)
        doc.user_data["id"] = id_ if fits else str(id_)
        doc.user_data["id_type"] = ID_TYPES[type(id_)]
        db.add(doc)
    return db.to_bytes()


# ---------------------------------------------------------------------------------------
# Output paths, formats, publishing and reading outputs back


def output_format_of(output: Path, output_format: Optional[str]) -> str:
    """The output format: ``output_format``, else from OUTPUT's extension."""
    if output_format is not None:
        if output_format not in OUTPUT_FORMATS:
            raise AnnotateInputError(
                f"unknown output format {output_format!r}: use one of {', '.join(OUTPUT_FORMATS)}.")
        return output_format
    for fmt, exts in OUTPUT_FORMATS.items():
        if output.suffix.lower() in exts:
            return fmt
    raise AnnotateInputError(
        f"cannot tell the output format of {output} from its extension: give --output-format "
        f"({', '.join(OUTPUT_FORMATS)})."
    )


def default_rejects_path(output: Path) -> Path:
    """``out.jsonl`` -> ``out.jsonl.rejects.jsonl``, ``out.parquet`` ->
    ``out.parquet.rejects.jsonl``, a folder ``out`` -> ``out.rejects.jsonl``: each
    output its own rejects file, next to it."""
    return output.with_name(output.name + ".rejects.jsonl")


def manifest_path(output: Path) -> Path:
    """``out.jsonl`` -> ``out.jsonl.manifest.json``; a folder ``out`` -> ``out.manifest.json``."""
    return output.with_name(output.name + ".manifest.json")


def temporary_path(path: Path) -> Path:
    """Where a run writes ``path`` until it publishes it: ``.NAME._temporary`` beside it
    (hidden, and not matched by ``*.jsonl`` or a Parquet dataset reader)."""
    return path.with_name(f".{path.name}._temporary")


def _names(paths: List[Path]) -> str:
    return ", ".join(map(str, paths))


def _exist(paths: List[Path]) -> str:
    return "exists" if len(paths) == 1 else "exist"


def _them(paths: List[Path]) -> str:
    return "it" if len(paths) == 1 else "them"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@dataclass
class OutputPaths:
    """The files a run publishes: OUTPUT (a file or a folder of shards), its rejects file
    and its manifest, each written under :func:`temporary_path` until the run completes."""

    output: Path
    rejects: Path
    manifest: Path

    def finals(self) -> List[Path]:
        return [self.output, self.rejects, self.manifest]

    def temporaries(self) -> List[Path]:
        return [temporary_path(p) for p in self.finals()]

    def prepare(self, overwrite: bool) -> None:
        """Refuse to replace an existing output, rejects file or manifest, or the
        temporaries of another run, unless ``overwrite``. With ``overwrite`` the old
        temporaries go now and the old outputs when the new ones are published, so a
        failed rerun leaves the previous complete output in place."""
        if len({p.resolve() for p in self.finals()}) < 3:
            raise AnnotateInputError(f"OUTPUT and --rejects must differ from each other and from {self.manifest}.")
        temporaries = [p for p in self.temporaries() if p.exists() or p.is_symlink()]
        existing = [p for p in self.finals() if p.exists() or p.is_symlink()]
        if temporaries and not overwrite:
            raise AnnotateInputError(
                f"{_names(temporaries)} already {_exist(temporaries)}: the temporaries of a run that was killed "
                f"(or of one still running). Pass --overwrite to remove them and rerun, or choose another OUTPUT.")
        if existing and not overwrite:
            raise AnnotateInputError(
                f"{_names(existing)} already {_exist(existing)}: remove {_them(existing)}, choose another OUTPUT "
                f"(or --rejects), or pass --overwrite to replace {_them(existing)} when this run completes.")
        for path in temporaries:
            _remove(path)
        for path in self.finals():
            path.parent.mkdir(parents=True, exist_ok=True)

    def discard(self) -> None:
        """Remove the temporaries (an interrupted or failed run): nothing is published."""
        for path in self.temporaries():
            with contextlib.suppress(OSError):
                _remove(path)

    def publish(self, manifest: Dict[str, Any], overwrite: bool) -> None:
        """Write the manifest and rename everything into place: the rejects file, the
        manifest, then OUTPUT last, so that OUTPUT exists only once the run is complete
        (``os.replace`` is atomic within a file system). A folder OUTPUT also gets
        ``_SUCCESS``, as Hadoop and Spark jobs mark theirs."""
        tmp_output, tmp_rejects, tmp_manifest = self.temporaries()
        if tmp_output.is_dir():
            (tmp_output / "_SUCCESS").write_bytes(b"")
        with open(tmp_manifest, "w", encoding="utf8") as f:
            json.dump(manifest, f, indent=2, ensure_ascii=False)
            f.write("\n")
        existing = [p for p in self.finals() if p.exists() or p.is_symlink()]
        if existing and not overwrite:
            raise AnnotateRunError(f"{_names(existing)} appeared during this run (another run writing the same "
                                   f"OUTPUT?): nothing was replaced. Rerun with --overwrite to replace "
                                   f"{_them(existing)}.")
        for path in existing:
            _remove(path)
        os.replace(tmp_rejects, self.rejects)
        os.replace(tmp_manifest, self.manifest)
        os.replace(tmp_output, self.output)


def prepare_output(path: Path, overwrite: bool) -> None:
    """Refuse an existing OUTPUT unless ``overwrite`` (see :meth:`OutputPaths.prepare`)."""
    OutputPaths(path, default_rejects_path(path), manifest_path(path)).prepare(overwrite)


def read_output(path: Path, output_format: Optional[str] = None) -> List[Dict[str, Any]]:
    """The records of an annotate output (a file, or a folder of shards) as dicts with
    ``id`` (as given in the input: a Parquet or DocBin id is turned back into an integer
    where its ``id_type`` says so), ``ents`` and, if written, ``text``. DocBin outputs give
    ``id`` and ``ents``. Files whose names start with ``_`` or ``.`` are not records."""
    path = Path(path)
    fmt = output_format or _format_of_output_path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    files = [p for p in files if p.suffix.lower() in OUTPUT_FORMATS[fmt] and not p.name.startswith(("_", "."))]
    records: List[Dict[str, Any]] = []
    for file in files:
        if fmt == "jsonl":
            with open(file, encoding="utf8") as f:
                records.extend(json.loads(line) for line in f if line.strip())
        elif fmt == "parquet":
            import pyarrow.parquet as pq

            for record in pq.read_table(file).to_pylist():
                record["id"] = id_from_columns(record["id"], record.pop("id_type", None))
                records.append(record)
        else:
            import spacy
            from spacy.tokens import DocBin

            from .extensions import install_extensions

            install_extensions()
            vocab = spacy.blank("xx").vocab
            for doc in DocBin().from_disk(file).get_docs(vocab):
                records.append({"id": id_from_columns(doc.user_data.get("id"), doc.user_data.get("id_type")),
                                "ents": doc_records(doc)})
    return records


def _format_of_output_path(path: Path) -> str:
    if path.is_dir():
        exts = {p.suffix.lower() for p in path.rglob("*") if p.is_file()}
        for fmt, known in OUTPUT_FORMATS.items():
            if exts & set(known):
                return fmt
    return output_format_of(path, None)


class LocalWriter:
    """Writes the encoded batches (:func:`encode_batch`) in this process: one JSON Lines
    or Parquet file, or a folder of DocBin shards (``part-00000.spacy``, ... of
    ``shard_size`` docs each) at ``path`` (the temporary output of the run)."""

    def __init__(self, path: Path, fmt: str, settings: RecordSettings, shard_size: int = 10_000) -> None:
        self.path, self.fmt, self.settings, self.shard_size = path, fmt, settings, shard_size
        self._file = None
        self._parquet = None
        self._docs: List[Any] = []
        self._vocab = None
        self._n_shards = 0
        if fmt == "docbin":
            path.mkdir(parents=True)
        elif fmt == "jsonl":
            self._file = open(path, "wb")  # noqa: SIM115 (closed by close())

    def write(self, encoded) -> None:
        """Write one encoded batch."""
        if self.fmt == "jsonl":
            self._file.write(encoded)
        elif self.fmt == "parquet":
            import pyarrow.parquet as pq

            if encoded.num_rows == 0:
                return
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self.path, encoded.schema)
            self._parquet.write_table(encoded)
        else:
            from spacy.tokens import DocBin
            from spacy.vocab import Vocab

            if self._vocab is None:
                self._vocab = Vocab()  # a fresh one per shard: its strings do not pile up
            self._docs.extend(DocBin(store_user_data=True).from_bytes(encoded).get_docs(self._vocab))
            while len(self._docs) >= self.shard_size:
                self._flush_shard(self.shard_size)

    def _flush_shard(self, n: int) -> None:
        from spacy.tokens import DocBin

        db = DocBin(store_user_data=True, docs=self._docs[:n])
        (self.path / f"part-{self._n_shards:05d}.spacy").write_bytes(db.to_bytes())
        self._docs = self._docs[n:]
        self._n_shards += 1
        if not self._docs:
            self._vocab = None

    def close(self) -> None:
        """Finish the output (an input without valid records still gives a valid file)."""
        if self.fmt == "jsonl":
            self._file.close()
        elif self.fmt == "parquet":
            if self._parquet is None:
                import pyarrow.parquet as pq

                pq.write_table(records_table([], self.settings.include_text), self.path)
            else:
                self._parquet.close()
        elif self._docs:
            self._flush_shard(len(self._docs))


def write_rejects(path: Path, rejects: List[Dict[str, Any]]) -> None:
    """The rejects as one JSON Lines file, sorted by source and line (empty if none).
    A reject whose id UTF-8 cannot hold (a lone surrogate) is written with JSON's
    ``\\uXXXX`` escapes, so it names the record as the input did."""
    path.parent.mkdir(parents=True, exist_ok=True)

    def key(r: Dict[str, Any]) -> Tuple[str, int, str]:
        return r["source"], r["line"] if r["line"] is not None else -1, str(r["id"])

    with open(path, "wb") as f:
        for reject in sorted(rejects, key=key):
            try:
                line = json.dumps(reject, ensure_ascii=False).encode("utf8")
            except UnicodeEncodeError:
                line = json.dumps(reject).encode("ascii")
            f.write(line + b"\n")


# ---------------------------------------------------------------------------------------
# The engines


@dataclass
class AnnotateSummary:
    """What a run did: documents read (annotated + rejected), annotated, rejected, words
    (spaCy tokens of the annotated docs), wall seconds, where the results are, and how
    many annotated records repeated an earlier record's id (they are all kept)."""

    engine: str
    read: int
    annotated: int
    rejected: int
    words: int
    seconds: float
    output: str
    rejects: str
    duplicate_ids: int = 0
    manifest: str = ""

    @property
    def words_per_second(self) -> float:
        return self.words / self.seconds if self.seconds > 0 else 0.0

    @property
    def docs_per_second(self) -> float:
        return self.annotated / self.seconds if self.seconds > 0 else 0.0

    @property
    def exit_code(self) -> int:
        """0 when every record was annotated, EXIT_REJECTS (3) when some were rejected."""
        return EXIT_REJECTS if self.rejected else 0

    def lines(self) -> List[str]:
        return [
            (f"{self.engine} engine: {self.read:,} documents read, {self.annotated:,} annotated, "
             f"{self.rejected:,} rejected, {self.duplicate_ids:,} duplicate ids in {self.seconds:.1f} s "
             f"({self.docs_per_second:,.1f} docs/s, {self.words_per_second:,.0f} words/s)"),
            f"annotations: {self.output}",
            f"rejects: {self.rejects}" + (" (none)" if not self.rejected else ""),
            f"manifest: {self.manifest}",
        ]


@dataclass
class BatchOutput:
    """One annotated batch, ready for its writer: the encoded records
    (:func:`encode_batch`), their number and words, the rejects and the ids' digests."""

    encoded: Any
    n_records: int
    n_words: int
    rejects: List[Dict[str, Any]]
    digests: Any


class BatchAnnotator:
    """Loads the pipeline once and turns each batch of input columns into a
    :class:`BatchOutput` (:func:`annotate_batch`, then :func:`encode_batch`): what runs
    in this process (local engine, one worker), in each worker process of the local
    engine, and in each Ray actor (:class:`RayAnnotator`), so all give the same records.

    Fault injection in tests: subclass it, kill the process in ``__call__``, and pass the
    subclass as ``worker_class`` to :func:`annotate`."""

    def __init__(self, model: str, batch_size: Optional[int], settings: RecordSettings, output_format: str,
                 torch_threads: Optional[int] = None) -> None:
        self.annotator = Annotator(model, batch_size=batch_size, torch_threads=torch_threads)
        self.settings = settings
        self.output_format = output_format

    def __call__(self, batch: Dict[str, list]) -> BatchOutput:
        result = annotate_batch(self.annotator, batch, self.settings)
        ids = [r["id"] for r in result["records"]]
        return BatchOutput(encode_batch(result, self.output_format, self.settings.include_text), len(ids),
                           result["n_words"], result["rejects"], id_digests(ids))


def describe_batch(batch: Dict[str, list], settings: RecordSettings) -> str:
    """Where a batch of input columns comes from: "FILE lines A-B" (or rows, Parquet)."""
    if not batch["line"]:
        return "an empty batch"
    unit = "rows" if settings.fmt == "parquet" else "lines"
    return f"{settings.source_name(batch['path'][0])} {unit} {batch['line'][0]}-{batch['line'][-1]}"


# The worker processes of the local engine: each holds one BatchAnnotator.
_WORKER: Optional[BatchAnnotator] = None


def _init_worker(worker_class: type, kwargs: Dict[str, Any]) -> None:
    global _WORKER
    # Ctrl-C reaches the whole process group: the parent stops the run and ends its workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _WORKER = worker_class(**kwargs)


def _run_worker(batch: Dict[str, list]) -> BatchOutput:
    return _WORKER(batch)


def _end_pool(pool: concurrent.futures.ProcessPoolExecutor) -> None:
    """Stop a process pool now, without waiting for the batches it is running."""
    if hasattr(pool, "terminate_workers"):  # Python 3.14
        pool.terminate_workers()
        return
    # Python < 3.14 has no public way to end the workers of a pool: its process table.
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for process in processes:
        process.terminate()
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.join(10)


def _pool_results(batches: Iterator[Dict[str, list]], settings: RecordSettings, workers: int,
                  worker_class: type, kwargs: Dict[str, Any]) -> Iterator[BatchOutput]:
    """The outputs of the batches, in order, from ``workers`` processes (spawned, each
    with one torch and BLAS thread and its own pipeline), at most two batches per worker in
    flight. A worker that dies or fails ends the run with :class:`AnnotateRunError`
    naming the batch, rather than a hang (the pool notices a dead worker)."""
    kwargs = {**kwargs, "torch_threads": 1}
    pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                                  initializer=_init_worker, initargs=(worker_class, kwargs))
    pending: deque = deque()
    completed = False

    def result(where: str, future: concurrent.futures.Future) -> BatchOutput:
        try:
            return future.result()
        except concurrent.futures.process.BrokenProcessPool as e:
            raise AnnotateRunError(
                f"a worker process died while annotating {where} (killed, out of memory, or a crash in "
                f"native code): the run stopped and nothing was published. Rerun with --workers 1 to see "
                f"the error, or with --engine ray, which restarts dead workers and retries their batches."
            ) from e
        except Exception as e:
            raise AnnotateRunError(f"a worker process failed while annotating {where}: {type(e).__name__}: {e}") from e

    try:
        for batch in batches:
            pending.append((describe_batch(batch, settings), pool.submit(_run_worker, batch)))
            if len(pending) >= 2 * workers:
                yield result(*pending.popleft())
        while pending:
            yield result(*pending.popleft())
        completed = True
    finally:
        if completed:
            pool.shutdown(wait=True)
        else:
            _end_pool(pool)


def run_local(
    model: str,
    files: List[Path],
    settings: RecordSettings,
    output: Path,
    output_format: str,
    rejects_path: Path,
    *,
    workers: int = 1,
    read_batch_size: int = 1000,
    pipe_batch_size: Optional[int] = None,
    shard_size: int = 10_000,
    worker_class: type = BatchAnnotator,
    progress: bool = True,
) -> AnnotateSummary:
    """The local engine: batches of ``read_batch_size`` input records, annotated in this
    process (``workers`` 1) or by a pool of ``workers`` processes, in order, with a
    progress bar; writes OUTPUT (a file; a folder of shards for DocBin) and the rejects."""
    from tqdm import tqdm

    start = time.perf_counter()
    kwargs = {"model": model, "batch_size": pipe_batch_size, "settings": settings, "output_format": output_format}
    batches = iter_input_batches(files, settings, read_batch_size)
    if workers == 1:
        worker = worker_class(**kwargs)
        try:
            worker.annotator.load()
        except Exception as e:
            raise AnnotateInputError(f"cannot load the pipeline {model!r}: {type(e).__name__}: {e}") from e
        outputs = (worker(batch) for batch in batches)
    else:
        outputs = _pool_results(batches, settings, workers, worker_class, kwargs)
    rejects: List[Dict[str, Any]] = []
    digests: List[Any] = []
    n_annotated = n_words = 0
    writer = LocalWriter(output, output_format, settings, shard_size)
    try:
        with tqdm(desc="annotate", unit=" docs", disable=not progress, mininterval=1.0) as bar:
            for out in outputs:
                writer.write(out.encoded)
                rejects.extend(out.rejects)
                digests.append(out.digests)
                n_annotated += out.n_records
                n_words += out.n_words
                bar.update(out.n_records + len(out.rejects))
    finally:
        outputs.close()
        writer.close()
    write_rejects(rejects_path, rejects)
    return AnnotateSummary("local", n_annotated + len(rejects), n_annotated, len(rejects), n_words,
                           time.perf_counter() - start, str(output), str(rejects_path), count_duplicates(digests))


class RayAnnotator(BatchAnnotator):
    """The Ray Data actor: loads the pipeline once (torch on one thread), then turns
    each batch of input columns into output rows with :class:`BatchAnnotator`, and
    reports its counts and rejects to the run's tally actor.

    model, batch_size: the Annotator's. settings (RecordSettings), output_format (str),
    tally: the handle of the run's :class:`_Tally` actor.

    Fault injection in tests: subclass it and SIGKILL the process in ``__call__``
    (``os.kill(os.getpid(), signal.SIGKILL)``), then pass the subclass as
    ``actor_class`` to :func:`annotate`.
    """

    def __init__(self, model: str, batch_size: Optional[int], settings: RecordSettings, output_format: str,
                 tally) -> None:
        super().__init__(model, batch_size, settings, output_format, torch_threads=1)
        self.annotator.load()
        self.tally = tally

    def __call__(self, table):
        import pyarrow as pa
        import ray

        batch = table.to_pydict()
        out = BatchAnnotator.__call__(self, batch)
        # One key per batch: a batch retried after its actor died is counted once.
        key = hashlib.sha1(repr(list(zip(batch["path"], batch["line"]))).encode("utf8")).hexdigest()
        ray.get(self.tally.add.remote(key, out.n_records, out.n_words, out.rejects, out.digests))
        if self.output_format == "parquet":
            return out.encoded
        column = "jsonl" if self.output_format == "jsonl" else "docbin"
        return pa.table({column: pa.array([out.encoded] if out.n_records else [], pa.binary())})


class _Tally:
    """Counts, id digests and rejects of a Ray run, per batch key (a retried batch
    replaces its own entry), held by one small Ray actor (no CPU) for the driver to read
    at the end. Rejects are expected to be few: each is a short record (no text) kept in
    memory; the digests take 8 bytes per record."""

    def __init__(self) -> None:
        self.batches: Dict[str, Tuple[int, int, List[Dict[str, Any]], Any]] = {}

    def add(self, key: str, annotated: int, words: int, rejects: List[Dict[str, Any]], digests=None) -> None:
        self.batches[key] = (annotated, words, rejects, digests)

    def totals(self) -> Tuple[int, int, List[Dict[str, Any]], int]:
        annotated = sum(b[0] for b in self.batches.values())
        words = sum(b[1] for b in self.batches.values())
        duplicates = count_duplicates([b[3] for b in self.batches.values() if b[3] is not None])
        return annotated, words, [r for b in self.batches.values() for r in b[2]], duplicates


def _input_datasource(paths: List[str], settings: RecordSettings, rows_per_block: int):
    from ray.data.datasource import FileBasedDatasource

    class InputDatasource(FileBasedDatasource):
        """Ray Data reader of the input files, giving the same columns as the local
        engine's reader (line or row numbers included, so ids and rejects name records
        alike). Parquet is read here too rather than by read_parquet: in Ray 2.60 that
        lists files in a task needing a CPU, which never starts while the actor pool
        holds every CPU (--workers = the cluster's CPUs)."""

        def _read_stream(self, f, path: str):
            import pyarrow as pa

            # One block per batch: Ray Data hands a whole block to one actor, so blocks as
            # large as a file would leave the other actors idle on a one-file corpus.
            if settings.fmt == "parquet":
                yield from read_parquet_batches(path, settings, rows_per_block)
                return
            for batch in read_line_batches(path, f, rows_per_block):
                yield pa.table({"line": pa.array(batch["line"], pa.int64()), "raw": pa.array(batch["raw"], pa.binary()),
                                "path": pa.array(batch["path"], pa.string())})

    return InputDatasource(paths)


def _shard_names(ext: str):
    from ray.data.datasource import FilenameProvider

    class ShardNames(FilenameProvider):
        def get_filename_for_task(self, write_uuid: str, task_index: int) -> str:
            return f"part-{write_uuid}-{task_index:06d}.{ext}"

    return ShardNames()


def _bytes_datasink(path: str, column: str, ext: str):
    from ray.data.datasource import BlockBasedFileDatasink

    class BytesDatasink(BlockBasedFileDatasink):
        """One shard per write task of the encoded batches in ``column``: JSON Lines, the
        lines' bytes as both engines encode them (so a record keeps its id as given, which
        an Arrow column of mixed or huge ids could not); DocBin, the batches' DocBins merged."""

        def write_block_to_file(self, block, file) -> None:
            chunks = block.to_arrow().column(column).to_pylist()
            if ext == "jsonl":
                for chunk in chunks:
                    file.write(chunk)
                return
            from spacy.tokens import DocBin

            db = DocBin(store_user_data=True)
            for data in chunks:
                db.merge(DocBin(store_user_data=True).from_bytes(data))
            file.write(db.to_bytes())

    return BytesDatasink(path, file_format=ext, filename_provider=_shard_names(ext))


def run_ray(
    model: str,
    files: List[Path],
    settings: RecordSettings,
    output: Path,
    output_format: str,
    rejects_path: Path,
    *,
    workers: int = 2,
    batch_size: int = 256,
    pipe_batch_size: Optional[int] = None,
    address: Optional[str] = None,
    num_cpus: Optional[int] = None,
    max_restarts: int = 8,
    max_task_retries: int = 4,
    actor_class: type = RayAnnotator,
    progress: bool = True,
) -> AnnotateSummary:
    """The Ray engine: Ray Data read -> ``map_batches(actor_class)`` on a fixed pool of
    ``workers`` actors (one CPU each) -> JSON Lines / Parquet / DocBin shards into the
    folder OUTPUT, one file per write task, written by the workers in parallel.

    Without ``address`` (and no Ray session yet) Ray starts here with ``num_cpus``
    (default: ``workers``) and stops at the end; ``address`` ("auto", "ray://...")
    joins a cluster. A worker process that dies is restarted (``max_restarts`` per
    actor) and its batches retried (``max_task_retries`` per batch), so OUTPUT holds
    each valid input record exactly once.
    """
    import ray
    from ray.data import ActorPoolStrategy, DataContext

    start = time.perf_counter()
    started_here = not ray.is_initialized()
    if started_here:
        if address:
            ray.init(address=address)
        else:
            ray.init(num_cpus=num_cpus or workers, include_dashboard=False)
    try:
        context = DataContext.get_current()
        context.enable_progress_bars = progress
        # Start work only once every actor has loaded the pipeline: otherwise the first
        # ready actor takes the queued batches while the others are still loading, and a
        # short corpus runs on one actor. A pool the cluster cannot host fails after this.
        context.wait_for_min_actors_s = ACTOR_START_TIMEOUT_S
        tally = ray.remote(num_cpus=0)(_Tally).remote()
        paths = [str(f.resolve()) for f in files]
        settings = RecordSettings(**{**settings.__dict__,
                                     "source_names": {str(f.resolve()): settings.source_name(str(f)) for f in files}})
        ds = ray.data.read_datasource(_input_datasource(paths, settings, batch_size), num_cpus=0)
        with warnings.catch_warnings():
            # Ray 2.60 takes max_restarts / max_task_retries only as extra keyword arguments
            # of map_batches, which it flags as deprecated; there is no named parameter yet.
            warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
            ds = ds.map_batches(
                actor_class,
                fn_constructor_kwargs={"model": model, "batch_size": pipe_batch_size, "settings": settings,
                                       "output_format": output_format, "tally": tally},
                batch_size=batch_size,
                batch_format="pyarrow",
                compute=ActorPoolStrategy(size=workers),
                num_cpus=1,
                # Set explicitly: Ray Data's defaults are -1 (forever), so a document that
                # kills its worker every time would loop; bounded, the run fails instead.
                max_restarts=max_restarts,
                max_task_retries=max_task_retries,
            )
        out = str(output.resolve())
        # Reading lines and writing shards is light next to the model: those tasks take no
        # CPU slot, so `workers` actors may hold every CPU without starving them (with a
        # slot each, a pool as large as the cluster would wait forever for its input).
        io_args = {"num_cpus": 0}
        if output_format == "parquet":
            ds.write_parquet(out, filename_provider=_shard_names("parquet"), ray_remote_args=io_args)
        else:
            column, ext = ("jsonl", "jsonl") if output_format == "jsonl" else ("docbin", "spacy")
            ds.write_datasink(_bytes_datasink(out, column, ext), ray_remote_args=io_args)
        output.mkdir(parents=True, exist_ok=True)  # a run whose records were all rejected writes no shard
        n_annotated, n_words, rejects, duplicates = ray.get(tally.totals.remote())
    finally:
        if started_here:
            ray.shutdown()
    write_rejects(rejects_path, rejects)
    return AnnotateSummary("ray", n_annotated + len(rejects), n_annotated, len(rejects), n_words,
                           time.perf_counter() - start, str(output), str(rejects_path), duplicates)


class _signals_interrupt:
    """Within it, SIGTERM stops the run as Ctrl-C does (an :class:`AnnotateInterrupted`,
    so the temporaries are removed); the previous handler is put back afterwards. Signal
    handlers can only be set in the main thread: elsewhere this does nothing."""

    def __enter__(self):
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            def interrupt(signum, frame):
                raise AnnotateInterrupted(signum)

            self.previous = signal.signal(signal.SIGTERM, interrupt)
        return self

    def __exit__(self, *exc) -> bool:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
        return False


def _output_files(path: Path) -> List[str]:
    """The files of a (temporary) output, relative to it: a file's own name, a folder's shards."""
    if path.is_dir():
        return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())
    return [path.name]


def annotate(
    model: str,
    input_path: str,
    output: Path,
    *,
    engine: str = "local",
    input_format: Optional[str] = None,
    output_format: Optional[str] = None,
    rejects_path: Optional[Path] = None,
    id_field: str = "id",
    text_field: str = "text",
    max_chars: Optional[int] = DEFAULT_MAX_CHARS,
    include_text: bool = False,
    workers: int = 1,
    batch_size: int = 256,
    pipe_batch_size: Optional[int] = None,
    address: Optional[str] = None,
    num_cpus: Optional[int] = None,
    max_restarts: int = 8,
    max_task_retries: int = 4,
    shard_size: int = 10_000,
    overwrite: bool = False,
    progress: bool = True,
    actor_class: Optional[type] = None,
    worker_class: Optional[type] = None,
    echo: Callable[[str], None] = print,
) -> AnnotateSummary:
    """Annotate INPUT with MODEL and write OUTPUT, its rejects file and its manifest.

    model (str): pipeline name or path (on a cluster: installed, or on a path every node sees).
    input_path (str): a file, a folder (searched recursively) or a glob.
    output (Path): local engine: a file (JSON Lines / Parquet) or a folder of DocBin shards;
        ray engine: a folder of shards.
    engine (str): "local" or "ray". workers (int): local: worker processes; ray: actors.
    batch_size (int): records per batch (the Ray actors' ``map_batches`` batch, the local
        engine's batch). pipe_batch_size: ``nlp.pipe``'s (None: the pipeline's).
    max_chars (Optional[int]): longer texts are rejected. rejects_path: default
        ``OUTPUT.rejects.jsonl`` next to OUTPUT (``out.jsonl.rejects.jsonl``; a folder
        ``out``: ``out.rejects.jsonl``). The manifest is ``OUTPUT.manifest.json``.
    overwrite (bool): replace an existing OUTPUT, rejects file or manifest (when the run
        completes), and remove the temporaries a killed run left.
    actor_class / worker_class: subclasses of RayAnnotator / BatchAnnotator (fault injection).
    The other arguments: see the CLI's help. Returns the AnnotateSummary.

    Everything is written under temporary names and published only when the run
    completes (see :class:`OutputPaths`): an interrupted (KeyboardInterrupt, SIGTERM:
    :class:`AnnotateInterrupted`) or failed run publishes nothing and removes its
    temporaries. Raises AnnotateInputError for a missing, unreadable or malformed input
    or an existing output, AnnotateRunError for a run that could not complete.
    """
    if engine not in ("local", "ray"):
        raise AnnotateInputError(f"unknown engine {engine!r}: use local or ray.")
    if workers < 1 or batch_size < 1:
        raise AnnotateInputError("--workers and --batch-size must be at least 1.")
    fmt, files = resolve_inputs(str(input_path), input_format)
    output = Path(output)
    out_fmt = output_format_of(output, output_format) if output_format or output.suffix else "jsonl"
    if engine == "local" and out_fmt != "docbin" and not output.suffix:
        raise AnnotateInputError(f"the local engine writes {out_fmt} to one file: give OUTPUT a file name "
                                 f"such as {output}.{OUTPUT_EXTENSIONS[out_fmt]}.")
    settings = RecordSettings(fmt, id_field, text_field, max_chars, include_text, source_names(files), len(files) > 1)
    check_inputs(files, settings)
    paths = OutputPaths(output, Path(rejects_path) if rejects_path else default_rejects_path(output),
                        manifest_path(output))
    paths.prepare(overwrite)
    tmp_output, tmp_rejects, _ = paths.temporaries()
    echo(f"{len(files)} {fmt} input file(s) -> {output} ({out_fmt}, {engine} engine, {workers} worker(s))")
    started = datetime.datetime.now(datetime.timezone.utc)
    try:
        with _signals_interrupt():
            if engine == "local":
                summary = run_local(model, files, settings, tmp_output, out_fmt, tmp_rejects, workers=workers,
                                    read_batch_size=batch_size, pipe_batch_size=pipe_batch_size,
                                    shard_size=shard_size, worker_class=worker_class or BatchAnnotator,
                                    progress=progress)
            else:
                summary = run_ray(model, files, settings, tmp_output, out_fmt, tmp_rejects, workers=workers,
                                  batch_size=batch_size, pipe_batch_size=pipe_batch_size, address=address,
                                  num_cpus=num_cpus, max_restarts=max_restarts, max_task_retries=max_task_retries,
                                  actor_class=actor_class or RayAnnotator, progress=progress)
            summary.output, summary.rejects, summary.manifest = str(output), str(paths.rejects), str(paths.manifest)
            paths.publish({
                "complete": True,
                "output": str(output),
                "output_format": out_fmt,
                "files": _output_files(tmp_output),
                "rejects": str(paths.rejects),
                "input": str(input_path),
                "input_format": fmt,
                "input_files": len(files),
                "id_field": id_field,
                "text_field": text_field,
                "model": str(model),
                "engine": engine,
                "workers": workers,
                "read": summary.read,
                "annotated": summary.annotated,
                "rejected": summary.rejected,
                "duplicate_ids": summary.duplicate_ids,
                "words": summary.words,
                "seconds": round(summary.seconds, 3),
                "started": started.isoformat(timespec="seconds"),
                "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "spacy_hybridner_version": __version__,
            }, overwrite)
    except BaseException:
        paths.discard()
        raise
    for line in summary.lines():
        echo(line)
    return summary
