"""Input formats: plain text (one document per line), JSON Lines and Parquet; finding,
checking and reading the input files into batches of columns.

One small object per format (:data:`INPUTS`) knows its extensions, what it checks before
a run and how it reads a file: as Python columns for the local engine
(:meth:`InputFormat.columns`) and as Arrow tables for Ray Data's reader
(:meth:`InputFormat.tables`), the same columns either way. What a record holds is read from
those columns by :func:`~.records.parse_batch`.
"""

import glob
import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from .errors import AnnotateInputError
from .records import RecordSettings

LINE_BLOCK_ROWS = 10_000


class InputFormat:
    """An input format: its name, file extensions and the unit of its records ("lines" or
    "rows", as errors name them)."""

    name: str
    extensions: Tuple[str, ...]
    unit: str

    def check(self, path: Path, settings: RecordSettings) -> None:
        """Raise AnnotateInputError if the (readable) file cannot be read as this format."""

    def columns(self, path: str, settings: RecordSettings, rows_per_batch: int) -> Iterator[Dict[str, list]]:
        """Batches of the file's input columns as lists (the local engine)."""
        raise NotImplementedError

    def tables(self, path: str, f, settings: RecordSettings, rows_per_batch: int) -> Iterator[Any]:
        """Batches of the file's input columns as Arrow tables, from the binary file
        object ``f`` Ray Data opened (the Ray engine)."""
        raise NotImplementedError


class LineInput(InputFormat):
    """A format of one record per line (plain text, JSON Lines): columns ``line`` (from
    1), ``raw`` (the line's bytes) and ``path``."""

    unit = "lines"

    def __init__(self, name: str, extensions: Tuple[str, ...]) -> None:
        self.name, self.extensions = name, extensions

    def columns(self, path: str, settings: RecordSettings, rows_per_batch: int) -> Iterator[Dict[str, list]]:
        with open(path, "rb") as f:
            yield from read_line_batches(path, f, rows_per_batch)

    def tables(self, path: str, f, settings: RecordSettings, rows_per_batch: int) -> Iterator[Any]:
        import pyarrow as pa

        for batch in read_line_batches(path, f, rows_per_batch):
            yield pa.table(
                {
                    "line": pa.array(batch["line"], pa.int64()),
                    "raw": pa.array(batch["raw"], pa.binary()),
                    "path": pa.array(batch["path"], pa.string()),
                }
            )


class ParquetInput(InputFormat):
    """Parquet: the id and text columns (see :func:`read_parquet_batches`)."""

    name = "parquet"
    extensions = (".parquet",)
    unit = "rows"

    def check(self, path: Path, settings: RecordSettings) -> None:
        """Read the file's footer and check that it has the id and text columns."""
        import pyarrow.parquet as pq

        try:
            names = pq.read_schema(path).names
        except Exception as e:  # pyarrow raises ArrowInvalid / OSError for a damaged file
            raise AnnotateInputError(f"{path} is not a readable Parquet file: {e}") from e
        for what, name in (("text", settings.text_field), ("id", settings.id_field)):
            if name not in names:
                raise AnnotateInputError(
                    f"{path} has no column {name!r} for the {what} (columns: {', '.join(names)}): use --{what}-field."
                )

    def columns(self, path: str, settings: RecordSettings, rows_per_batch: int) -> Iterator[Dict[str, list]]:
        for table in read_parquet_batches(path, settings, rows_per_batch):
            yield table.to_pydict()

    def tables(self, path: str, f, settings: RecordSettings, rows_per_batch: int) -> Iterator[Any]:
        # Read here rather than by Ray Data's read_parquet: in Ray 2.60 that lists files in
        # a task needing a CPU, which never starts while the actor pool holds every CPU.
        return read_parquet_batches(path, settings, rows_per_batch)


INPUTS: Dict[str, InputFormat] = {
    "jsonl": LineInput("jsonl", (".jsonl", ".ndjson", ".json")),
    "txt": LineInput("txt", (".txt",)),
    "parquet": ParquetInput(),
}
INPUT_FORMATS = {name: fmt.extensions for name, fmt in INPUTS.items()}


# ---------------------------------------------------------------------------------------
# Finding and checking the input


def path_key(path: Path) -> str:
    """``path`` as one name however it is written: absolute, the folders' symbolic links
    resolved (the file's own name kept, so a link is not the file it points to)."""
    path = Path(os.path.abspath(path))
    return os.path.join(os.path.realpath(path.parent), path.name)


def is_within(key: str, folder_key: str) -> bool:
    """Whether the path of ``key`` is the path of ``folder_key`` or inside it (keys of :func:`path_key`)."""
    return key == folder_key or key.startswith(folder_key.rstrip(os.sep) + os.sep)


def resolve_inputs(
    input_path: str, input_format: Optional[str] = None, exclude: Sequence[Path] = ()
) -> Tuple[str, List[Path]]:
    """The input format and the files of INPUT (a file, a folder, searched recursively,
    or a glob), sorted. The format comes from ``input_format`` or the files' extensions.
    Files of a folder or a glob that are, or are inside, one of ``exclude`` (the run's own
    outputs) are left out. Raises AnnotateInputError naming the problem."""
    if input_format is not None and input_format not in INPUT_FORMATS:
        raise AnnotateInputError(f"unknown input format {input_format!r}: use one of {', '.join(INPUT_FORMATS)}.")
    known = tuple(ext for exts in INPUT_FORMATS.values() for ext in exts)
    wanted = INPUT_FORMATS[input_format] if input_format else known
    excluded = [path_key(p) for p in exclude]

    def own(files: List[Path]) -> List[Path]:
        return [f for f in files if any(is_within(path_key(f), key) for key in excluded)]

    if any(c in input_path for c in "*?["):
        matched = [Path(p) for p in sorted(glob.glob(input_path, recursive=True)) if Path(p).is_file()]
        skipped = own(matched)
        files = [f for f in matched if f not in skipped]
        if not files:
            raise AnnotateInputError(
                f"{input_path!r} matches only the outputs of this run ({', '.join(map(str, skipped[:3]))}), "
                "which are not read as input."
                if skipped
                else f"no files match {input_path!r}."
            )
    elif Path(input_path).is_dir():
        found = sorted(p for p in Path(input_path).rglob("*") if p.is_file() and p.suffix.lower() in wanted)
        skipped = own(found)
        files = [f for f in found if f not in skipped]
        if not files:
            raise AnnotateInputError(
                f"{input_path} holds no {' / '.join(wanted)} files"
                f"{' besides the outputs of this run' if skipped else ''}: give a file, a glob, or --input-format."
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
        INPUTS[settings.fmt].check(path, settings)


# ---------------------------------------------------------------------------------------
# Reading: batches of columns, the same in both engines


def iter_lines(f, chunk_size: int = 1 << 20) -> Iterator[Tuple[int, bytes]]:
    """(line number from 1, line without its line break) of a binary file object.

    Work and memory are linear in the input: each chunk is split once, and a line that
    spans chunks is kept as a list of its pieces, joined once when its end is read (adding
    each chunk to the unfinished line and splitting the whole again would be quadratic in
    the line's length: minutes for a line of a few hundred MB)."""
    pending: List[bytes] = []  # the pieces of the line whose end has not been read yet
    number = 0
    while True:
        chunk = f.read(chunk_size)
        if not chunk:
            break
        lines = chunk.split(b"\n")
        last = lines.pop()
        if lines:
            if pending:
                pending.append(lines[0])
                lines[0] = b"".join(pending)
                pending = []
            for line in lines:
                number += 1
                yield number, line.rstrip(b"\r")
        if last:
            pending.append(last)
    if pending:
        yield number + 1, b"".join(pending).rstrip(b"\r")


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


def _string_column(values, integers_allowed: bool, kind=None):
    """A Parquet column as strings and its type: "string", "integer" (decimal, where
    allowed), or the Arrow type of a column of another type (all nulls). A
    dictionary-encoded column (a pandas Categorical, or a column pyarrow wrote with a
    dictionary) is read as its values; ``kind`` is the column's type as the file has it."""
    import pyarrow as pa

    kind = kind or values.type
    if pa.types.is_dictionary(values.type):
        return _string_column(values.dictionary_decode(), integers_allowed, kind)
    if (
        pa.types.is_string(values.type)
        or pa.types.is_large_string(values.type)
        or (hasattr(pa.types, "is_string_view") and pa.types.is_string_view(values.type))
    ):
        return values.cast(pa.large_string()), "string"
    if integers_allowed and pa.types.is_integer(values.type):
        return values.cast(pa.large_string()), "integer"
    return pa.nulls(len(values), pa.large_string()), str(kind)


def read_parquet_batches(path: str, settings: RecordSettings, rows_per_batch: int = LINE_BLOCK_ROWS):
    """Arrow tables of the id and text columns of a Parquet file, read one row group slice
    at a time, with one schema whatever the file's column types (so that Ray Data can put
    rows of files with integer ids and files with string ids in one batch): ``id`` and
    ``text`` as strings (integers in decimal; null where the column has another type),
    ``id_type`` and ``text_type`` ("integer", "string", or the Arrow type of the column,
    which :func:`~.records.parse_batch` rejects), ``line`` (the row number from 1) and ``path``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    row = 0
    for rb in pq.ParquetFile(path).iter_batches(
        batch_size=rows_per_batch, columns=[settings.id_field, settings.text_field]
    ):
        n = rb.num_rows
        ids, id_type = _string_column(rb.column(settings.id_field), True)
        texts, text_type = _string_column(rb.column(settings.text_field), False)
        yield pa.table(
            {
                "id": ids,
                "id_type": pa.array([id_type] * n, pa.string()),
                "text": texts,
                "text_type": pa.array([text_type] * n, pa.string()),
                "line": pa.array(range(row + 1, row + 1 + n), pa.int64()),
                "path": pa.array([path] * n, pa.string()),
            }
        )
        row += n


def iter_input_batches(files: List[Path], settings: RecordSettings, batch_size: int) -> Iterator[Dict[str, list]]:
    """Batches of input columns, as the Ray engine's readers give them: ``line`` (line or
    row number), ``path``, and ``raw`` (text, JSON Lines) or the id and text columns (Parquet)."""
    for path in files:
        yield from INPUTS[settings.fmt].columns(str(path), settings, batch_size)


def describe_batch(batch: Dict[str, list], settings: RecordSettings) -> str:
    """Where a batch of input columns comes from: "FILE lines A-B" (or rows, Parquet)."""
    if not batch["line"]:
        return "an empty batch"
    unit = INPUTS[settings.fmt].unit
    return f"{settings.source_name(batch['path'][0])} {unit} {batch['line'][0]}-{batch['line'][-1]}"
