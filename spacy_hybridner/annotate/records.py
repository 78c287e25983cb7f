"""Input records: a batch of input columns (lines or Parquet rows, as :mod:`.inputs`
reads them) into valid :class:`Row` s and rejects, and the ids' checks, columns and digests.

:func:`parse_batch` is the one place where an input record becomes a Row or a reject, in
both engines: the same checks, the same ids, the same reject reasons.
"""

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from .annotator import surrogate_problem, text_problem

# spaCy's own default nlp.max_length: a longer text makes nlp.pipe raise, so reject it first.
DEFAULT_MAX_CHARS = 1_000_000
# What JSON counts as whitespace (RFC 8259): a line of only these is blank; a line of other
# characters that str.strip() drops (form feed, U+2028, ...) is a record, and a reject.
JSON_WHITESPACE = " \t\r\n"
# Parquet (and DocBin, for integers beyond 64 bits) store each id as a string with its type,
# so that one schema holds string and integer ids of any size: "integer" ids are decimal.
ID_TYPES = {str: "string", int: "integer"}


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


# (id, text, why the record cannot be annotated or None) of one input record.
Parsed = Tuple[Any, Any, Optional[str]]


def parse_batch(batch: Dict[str, list], settings: RecordSettings) -> Tuple[List[Row], List[Dict[str, Any]]]:
    """The valid rows of a batch of input columns and the rejects (``id`` if it is a
    usable one, ``reason``, ``source``, ``line``). Blank lines are not records. Every other
    input record becomes exactly one Row or one reject, whatever the line holds: this
    function does not raise on any input."""
    parse = _PARSERS[settings.fmt]
    rows: List[Row] = []
    rejects: List[Dict[str, Any]] = []
    for i in range(len(batch["path"])):
        source = settings.source_name(batch["path"][i])
        line = batch["line"][i]
        parsed = parse(batch, i, source, settings)
        if parsed is None:
            continue
        id_, text, problem = parsed
        if problem:
            # The id as given if it is a string or an integer (one with a lone surrogate
            # included: the rejects file writes it as the input's \uXXXX escape).
            usable_id = isinstance(id_, (str, int)) and not isinstance(id_, bool)
            rejects.append({"id": id_ if usable_id else None, "reason": problem, "source": source, "line": line})
        else:
            rows.append(Row(id_, text, source, line))
    return rows, rejects


def _decoded_line(batch: Dict[str, list], i: int) -> Tuple[Optional[str], Optional[str]]:
    """(the text of line ``i`` of a batch of lines, None), or (None, why it is not text)."""
    try:
        decoded = batch["raw"][i].decode("utf8")
    except UnicodeDecodeError as e:
        return None, f"line is not valid UTF-8 ({e.reason} at byte {e.start})"
    if batch["line"][i] == 1 and decoded.startswith("\ufeff"):
        decoded = decoded[1:]  # a byte order mark that some editors put at the start of a file
    return decoded, None


def _text_line(batch: Dict[str, list], i: int, source: str, settings: RecordSettings) -> Optional[Parsed]:
    """One plain-text line: the text, with the line number (several files: "NAME:LINE") as id."""
    decoded, problem = _decoded_line(batch, i)
    if problem:
        return None, None, problem
    if not decoded.strip():
        return None
    line = batch["line"][i]
    id_ = f"{source}:{line}" if settings.multi_source else line
    return id_, decoded, text_problem(decoded, settings.max_chars)


def _json_line(batch: Dict[str, list], i: int, source: str, settings: RecordSettings) -> Optional[Parsed]:
    """One JSON Lines line: an object with the id and text fields."""
    decoded, problem = _decoded_line(batch, i)
    if problem:
        return None, None, problem
    if not decoded.strip(JSON_WHITESPACE):
        return None
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


def _parquet_row(batch: Dict[str, list], i: int, source: str, settings: RecordSettings) -> Parsed:
    """One Parquet row, from :func:`~.inputs.read_parquet_batches`' columns."""
    id_, id_type, text, text_type = batch["id"][i], batch["id_type"][i], batch["text"][i], batch["text_type"][i]
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


# How each input format's records are parsed (None: a blank line, not a record).
_PARSERS: Dict[str, Callable[[Dict[str, list], int, str, RecordSettings], Optional[Parsed]]] = {
    "jsonl": _json_line,
    "txt": _text_line,
    "parquet": _parquet_row,
}


def _json_type(value: Any) -> str:
    names = {
        dict: "object",
        list: "array",
        str: "string",
        bool: "boolean",
        int: "integer",
        float: "number",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)


def id_problem(id_: Any) -> Optional[str]:
    """Why ``id_`` cannot be a record's id, or None if it can: an id is a string that UTF-8
    can hold or an integer of any size (not a boolean, a float, null, an array or an object)."""
    if isinstance(id_, bool) or not isinstance(id_, (str, int)):
        return f"id must be a string or an integer, got {_json_type(id_)}"
    if isinstance(id_, str):
        return surrogate_problem(id_, "id")
    return None


def id_columns(ids: List[Any]) -> Tuple[List[str], List[str]]:
    """The ``id`` (a string) and ``id_type`` ("string" or "integer") of each valid id."""
    return [i if isinstance(i, str) else str(i) for i in ids], [ID_TYPES[type(i)] for i in ids]


def id_from_columns(value: Any, id_type: Optional[str]) -> Any:
    """An id as given in the input, from its ``id`` and ``id_type`` columns."""
    return int(value) if id_type == "integer" and isinstance(value, str) else value


def _id_digest(id_: Any) -> int:
    key = f"{ID_TYPES[type(id_)]}:{id_}".encode("utf8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")


def id_digests(ids: List[Any]):
    """A 64-bit digest of each id (type included: 1 and "1" differ), as a NumPy array;
    duplicate ids are counted from these, without holding every id in memory."""
    import numpy

    return numpy.array([_id_digest(i) for i in ids], dtype=numpy.uint64)


def count_duplicates(digests: List[Any]) -> int:
    """The number of records whose id an earlier record already had (0: all ids unique)."""
    import numpy

    if not digests:
        return 0
    every = numpy.concatenate(digests)
    return int(len(every) - len(numpy.unique(every)))
