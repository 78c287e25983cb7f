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
"""
import contextlib
import glob
import hashlib
import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from .annotator import Annotator, doc_records, text_problem

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
    """Arrow tables of the id and text columns of a Parquet file, with ``line`` (the
    row number from 1) and ``path``, read one row group slice at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    row = 0
    for rb in pq.ParquetFile(path).iter_batches(batch_size=rows_per_batch,
                                               columns=[settings.id_field, settings.text_field]):
        table = pa.Table.from_batches([rb])
        table = table.append_column("line", pa.array(range(row + 1, row + 1 + table.num_rows), pa.int64()))
        table = table.append_column("path", pa.array([path] * table.num_rows, pa.string()))
        row += table.num_rows
        yield table


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
    """The valid rows of a batch of input columns and the rejects (``id`` if known,
    ``reason``, ``source``, ``line``). Blank lines are not records. Every other input
    record becomes exactly one Row or one reject."""
    rows: List[Row] = []
    rejects: List[Dict[str, Any]] = []
    n = len(batch["path"])
    for i in range(n):
        source = settings.source_name(batch["path"][i])
        line = batch["line"][i]
        if settings.fmt == "parquet":
            id_, text = batch[settings.id_field][i], batch[settings.text_field][i]
            problem = ("id is null" if id_ is None else "text is null" if text is None
                       else _record_problem(id_, text, settings, has_id=True, has_text=True))
        else:
            try:
                decoded = batch["raw"][i].decode("utf8")
            except UnicodeDecodeError as e:
                rejects.append({"id": None, "reason": f"line is not valid UTF-8 ({e.reason} at byte {e.start})",
                                "source": source, "line": line})
                continue
            if not decoded.strip():
                continue
            if settings.fmt == "txt":
                id_ = f"{source}:{line}" if settings.multi_source else line
                text = decoded
                problem = text_problem(text, settings.max_chars)
            else:
                try:
                    record = json.loads(decoded)
                except ValueError as e:
                    rejects.append({"id": None, "reason": f"line is not valid JSON: {e}", "source": source,
                                    "line": line})
                    continue
                if not isinstance(record, dict):
                    rejects.append({"id": None, "reason": f"line is a JSON {type(record).__name__}, not an object",
                                    "source": source, "line": line})
                    continue
                id_, text = record.get(settings.id_field), record.get(settings.text_field)
                problem = _record_problem(id_, text, settings, has_id=settings.id_field in record,
                                          has_text=settings.text_field in record)
        if problem:
            rejects.append({"id": id_ if isinstance(id_, (str, int)) else None, "reason": problem,
                            "source": source, "line": line})
        else:
            rows.append(Row(id_, text, source, line))
    return rows, rejects


def _record_problem(id_: Any, text: Any, settings: RecordSettings, *, has_id: bool, has_text: bool) -> Optional[str]:
    if not has_id:
        return f"no {settings.id_field!r} field (set the id field with --id-field)"
    if isinstance(id_, bool) or not isinstance(id_, (str, int)):
        return f"id must be a string or an integer, got {type(id_).__name__}"
    if not has_text:
        return f"no {settings.text_field!r} field (set the text field with --text-field)"
    return text_problem(text, settings.max_chars)


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
    "rejects": [...], "n_words": int}`` (records and docs in input order, valid rows only)."""
    rows, rejects = parse_batch(batch, settings)
    records, docs, n_words = [], [], 0
    for row, doc in annotate_rows(annotator, rows):
        records.append(output_record(row, doc, settings))
        docs.append(doc)
        n_words += len(doc)
    return {"records": records, "docs": docs, "rejects": rejects, "n_words": n_words}


def records_table(records: List[Dict[str, Any]], include_text: bool):
    """The output records as an Arrow table with a fixed schema (an empty ``ents`` list
    keeps its type, so every shard has the same schema)."""
    import pyarrow as pa

    ent = pa.struct([("start_char", pa.int64()), ("end_char", pa.int64()), ("label", pa.string()),
                     ("text", pa.string()), ("confidence", pa.float64())])
    columns = {"id": pa.array([r["id"] for r in records]),
               "ents": pa.array([r["ents"] for r in records], pa.list_(ent))}
    if include_text:
        columns["text"] = pa.array([r["text"] for r in records], pa.string())
    return pa.table(columns)


def docbin_bytes(docs: List[Any], ids: List[Any]) -> bytes:
    """A DocBin of the docs with each id in ``doc.user_data["id"]`` (user data kept,
    so ``ent._.confidence`` travels with the entities)."""
    from spacy.tokens import DocBin

    db = DocBin(store_user_data=True)
    for doc, id_ in zip(docs, ids):
        doc.user_data["id"] = id_
        db.add(doc)
    return db.to_bytes()


# ---------------------------------------------------------------------------------------
# Output paths, formats and reading outputs back


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
    """``out.jsonl`` -> ``out.rejects.jsonl``; a folder ``out`` -> ``out.rejects.jsonl``."""
    return output.with_name(output.stem + ".rejects.jsonl") if output.suffix else output.with_name(
        output.name + ".rejects.jsonl")


def prepare_output(path: Path, overwrite: bool) -> None:
    """Refuse to write into an existing output (Ray appends to a folder, which would
    duplicate records) unless ``overwrite``, which removes it first."""
    if path.exists():
        if not overwrite:
            raise AnnotateInputError(f"{path} exists: remove it, choose another OUTPUT, or pass --overwrite.")
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def read_output(path: Path, output_format: Optional[str] = None) -> List[Dict[str, Any]]:
    """The records of an annotate output (a file, or a folder of shards) as dicts with
    ``id``, ``ents`` and, if written, ``text``. DocBin outputs give ``id`` and ``ents``."""
    path = Path(path)
    fmt = output_format or _format_of_output_path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    files = [p for p in files if p.suffix.lower() in OUTPUT_FORMATS[fmt]]
    records: List[Dict[str, Any]] = []
    for file in files:
        if fmt == "jsonl":
            with open(file, encoding="utf8") as f:
                records.extend(json.loads(line) for line in f if line.strip())
        elif fmt == "parquet":
            import pyarrow.parquet as pq

            records.extend(pq.read_table(file).to_pylist())
        else:
            import spacy
            from spacy.tokens import DocBin

            from .extensions import install_extensions

            install_extensions()
            vocab = spacy.blank("xx").vocab
            for doc in DocBin().from_disk(file).get_docs(vocab):
                records.append({"id": doc.user_data.get("id"), "ents": doc_records(doc)})
    return records


def _format_of_output_path(path: Path) -> str:
    if path.is_dir():
        exts = {p.suffix.lower() for p in path.rglob("*") if p.is_file()}
        for fmt, known in OUTPUT_FORMATS.items():
            if exts & set(known):
                return fmt
    return output_format_of(path, None)


class LocalWriter:
    """Writes output records in this process: one JSON Lines or Parquet file, or a
    folder of DocBin shards (``part-00000.spacy``, ... of ``shard_size`` docs each)."""

    def __init__(self, path: Path, fmt: str, settings: RecordSettings, shard_size: int = 10_000) -> None:
        self.path, self.fmt, self.settings, self.shard_size = path, fmt, settings, shard_size
        self._file = None
        self._parquet = None
        self._docs: List[Any] = []
        self._ids: List[Any] = []
        self._n_shards = 0
        if fmt == "docbin":
            path.mkdir(parents=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            if fmt == "jsonl":
                self._file = open(path, "w", encoding="utf8")  # noqa: SIM115 (closed by close())

    def write(self, records: List[Dict[str, Any]], docs: List[Any]) -> None:
        """Write one batch of records (and their Docs, used by the DocBin format)."""
        if not records:
            return
        if self.fmt == "jsonl":
            self._file.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
        elif self.fmt == "parquet":
            import pyarrow.parquet as pq

            table = records_table(records, self.settings.include_text)
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self.path, table.schema)
            self._parquet.write_table(table)
        else:
            self._docs.extend(docs)
            self._ids.extend(r["id"] for r in records)
            while len(self._docs) >= self.shard_size:
                self._flush_shard(self.shard_size)

    def _flush_shard(self, n: int) -> None:
        shard = self.path / f"part-{self._n_shards:05d}.spacy"
        shard.write_bytes(docbin_bytes(self._docs[:n], self._ids[:n]))
        self._docs, self._ids = self._docs[n:], self._ids[n:]
        self._n_shards += 1

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
    """The rejects as one JSON Lines file, sorted by source and line (empty if none)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    def key(r: Dict[str, Any]) -> Tuple[str, int, str]:
        return r["source"], r["line"] if r["line"] is not None else -1, str(r["id"])

    with open(path, "w", encoding="utf8") as f:
        f.writelines(json.dumps(reject, ensure_ascii=False) + "\n" for reject in sorted(rejects, key=key))


# ---------------------------------------------------------------------------------------
# The engines


@dataclass
class AnnotateSummary:
    """What a run did: documents read (annotated + rejected), annotated, rejected, words
    (spaCy tokens of the annotated docs), wall seconds, and where the results are."""

    engine: str
    read: int
    annotated: int
    rejected: int
    words: int
    seconds: float
    output: str
    rejects: str

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
             f"{self.rejected:,} rejected in {self.seconds:.1f} s "
             f"({self.docs_per_second:,.1f} docs/s, {self.words_per_second:,.0f} words/s)"),
            f"annotations: {self.output}",
            f"rejects: {self.rejects}" + (" (none)" if not self.rejected else ""),
        ]


def run_local(
    annotator: Annotator,
    files: List[Path],
    settings: RecordSettings,
    output: Path,
    output_format: str,
    rejects_path: Path,
    *,
    workers: int = 1,
    read_batch_size: int = 1000,
    shard_size: int = 10_000,
    progress: bool = True,
) -> AnnotateSummary:
    """The local engine: one ``nlp.pipe`` over the whole input (``n_process=workers``)
    with a progress bar; writes OUTPUT (a file; a folder of shards for DocBin)."""
    from tqdm import tqdm

    start = time.perf_counter()
    rejects: List[Dict[str, Any]] = []

    def rows() -> Iterator[Row]:
        for batch in iter_input_batches(files, settings, read_batch_size):
            valid, rejected = parse_batch(batch, settings)
            rejects.extend(rejected)
            yield from valid

    torch_threads = None
    blas_limits = contextlib.nullcontext()
    if workers > 1:
        # Each forked worker runs torch and BLAS on one thread: a process forked after
        # torch used several threads hangs in its first parallel op, and N workers on N
        # cores each with a pool of N (spinning) BLAS threads run slower than one process.
        # Set here, explicitly, before the fork, and restored afterwards.
        import torch
        from threadpoolctl import threadpool_limits

        torch_threads = torch.get_num_threads()
        torch.set_num_threads(1)
        blas_limits = threadpool_limits(limits=1)
    writer = LocalWriter(output, output_format, settings, shard_size)
    n_annotated = n_words = 0
    try:
        with blas_limits, tqdm(desc="annotate", unit=" docs", disable=not progress, mininterval=1.0) as bar:
            records: List[Dict[str, Any]] = []
            docs: List[Any] = []
            for row, doc in annotate_rows(annotator, rows(), n_process=workers):
                records.append(output_record(row, doc, settings))
                docs.append(doc)
                n_annotated += 1
                n_words += len(doc)
                if len(records) >= read_batch_size:
                    writer.write(records, docs)
                    bar.update(len(records))
                    records, docs = [], []
            writer.write(records, docs)
            bar.update(len(records))
    finally:
        writer.close()
        if torch_threads is not None:
            import torch

            torch.set_num_threads(torch_threads)
    write_rejects(rejects_path, rejects)
    return AnnotateSummary("local", n_annotated + len(rejects), n_annotated, len(rejects), n_words,
                           time.perf_counter() - start, str(output), str(rejects_path))


class RayAnnotator:
    """The Ray Data actor: loads the pipeline once (torch on one thread), then turns
    each batch of input columns into output rows with :func:`annotate_batch`, and
    reports its counts and rejects to the run's tally actor.

    model, batch_size: the Annotator's. settings (RecordSettings), output_format (str),
    tally: the handle of the run's :class:`_Tally` actor.

    Fault injection in tests: subclass it and SIGKILL the process in ``__call__``
    (``os.kill(os.getpid(), signal.SIGKILL)``), then pass the subclass as
    ``actor_class`` to :func:`annotate`.
    """

    def __init__(self, model: str, batch_size: Optional[int], settings: RecordSettings, output_format: str,
                 tally) -> None:
        self.annotator = Annotator(model, batch_size=batch_size, torch_threads=1).load()
        self.settings = settings
        self.output_format = output_format
        self.tally = tally

    def __call__(self, table):
        import pyarrow as pa
        import ray

        batch = table.to_pydict()
        result = annotate_batch(self.annotator, batch, self.settings)
        # One key per batch: a batch retried after its actor died is counted once.
        key = hashlib.sha1(repr(list(zip(batch["path"], batch["line"]))).encode("utf8")).hexdigest()
        ray.get(self.tally.add.remote(key, len(result["records"]), result["n_words"], result["rejects"]))
        if self.output_format == "docbin":
            ids = [r["id"] for r in result["records"]]
            return pa.table({"id": pa.array(ids),
                             "docbin": pa.array([docbin_bytes([d], [i]) for d, i in zip(result["docs"], ids)],
                                                pa.binary())})
        return records_table(result["records"], self.settings.include_text)


class _Tally:
    """Counts and rejects of a Ray run, per batch key (a retried batch replaces its own
    entry), held by one small Ray actor (no CPU) for the driver to read at the end.
    Rejects are expected to be few: each is a short record (no text) kept in memory."""

    def __init__(self) -> None:
        self.batches: Dict[str, Tuple[int, int, List[Dict[str, Any]]]] = {}

    def add(self, key: str, annotated: int, words: int, rejects: List[Dict[str, Any]]) -> None:
        self.batches[key] = (annotated, words, rejects)

    def totals(self) -> Tuple[int, int, List[Dict[str, Any]]]:
        annotated = sum(b[0] for b in self.batches.values())
        words = sum(b[1] for b in self.batches.values())
        return annotated, words, [r for b in self.batches.values() for r in b[2]]


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


def _docbin_datasink(path: str):
    from ray.data.datasource import BlockBasedFileDatasink

    class DocBinDatasink(BlockBasedFileDatasink):
        """One DocBin shard (``.spacy``) per write task, merged from the rows' DocBins."""

        def write_block_to_file(self, block, file) -> None:
            from spacy.tokens import DocBin

            db = DocBin(store_user_data=True)
            for data in block.to_arrow().column("docbin").to_pylist():
                db.merge(DocBin(store_user_data=True).from_bytes(data))
            file.write(db.to_bytes())

    return DocBinDatasink(path, file_format="spacy", filename_provider=_shard_names("spacy"))


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
    ``workers`` actors (one CPU each) -> write_json / write_parquet / DocBin shards into
    the folder OUTPUT, one file per write task, written by the workers in parallel.

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
        if output_format == "jsonl":
            ds.write_json(out, filename_provider=_shard_names("jsonl"), ray_remote_args=io_args,
                          force_ascii=False, double_precision=15)
        elif output_format == "parquet":
            ds.write_parquet(out, filename_provider=_shard_names("parquet"), ray_remote_args=io_args)
        else:
            ds.write_datasink(_docbin_datasink(out), ray_remote_args=io_args)
        n_annotated, n_words, rejects = ray.get(tally.totals.remote())
    finally:
        if started_here:
            ray.shutdown()
    write_rejects(rejects_path, rejects)
    return AnnotateSummary("ray", n_annotated + len(rejects), n_annotated, len(rejects), n_words,
                           time.perf_counter() - start, str(output), str(rejects_path))


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
    echo: Callable[[str], None] = print,
) -> AnnotateSummary:
    """Annotate INPUT with MODEL and write OUTPUT plus a rejects file.

    model (str): pipeline name or path (on a cluster: installed, or on a path every node sees).
    input_path (str): a file, a folder (searched recursively) or a glob.
    output (Path): local engine: a file (JSON Lines / Parquet) or a folder of DocBin shards;
        ray engine: a folder of shards.
    engine (str): "local" or "ray". workers (int): local: ``n_process``; ray: actors.
    batch_size (int): records per batch (the Ray actors' ``map_batches`` batch, the local
        engine's read and write batch). pipe_batch_size: ``nlp.pipe``'s (None: the pipeline's).
    max_chars (Optional[int]): longer texts are rejected. rejects_path: default
        ``OUTPUT-stem.rejects.jsonl`` next to OUTPUT.
    The other arguments: see the CLI's help. Returns the AnnotateSummary.
    Raises AnnotateInputError for a missing, unreadable or malformed input.
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
    rejects_path = Path(rejects_path) if rejects_path else default_rejects_path(output)
    prepare_output(output, overwrite)
    echo(f"{len(files)} {fmt} input file(s) -> {output} ({out_fmt}, {engine} engine, {workers} worker(s))")
    if engine == "local":
        annotator = Annotator(model, batch_size=pipe_batch_size)
        summary = run_local(annotator, files, settings, output, out_fmt, rejects_path, workers=workers,
                            read_batch_size=batch_size, shard_size=shard_size, progress=progress)
    else:
        summary = run_ray(model, files, settings, output, out_fmt, rejects_path, workers=workers,
                          batch_size=batch_size, pipe_batch_size=pipe_batch_size, address=address,
                          num_cpus=num_cpus, max_restarts=max_restarts, max_task_retries=max_task_retries,
                          actor_class=actor_class or RayAnnotator, progress=progress)
    for line in summary.lines():
        echo(line)
    return summary
