"""annotate's readers: a long line costs work in proportion to its length (counted, not
timed), and Parquet text and id columns of any string encoding (dictionary-encoded, as a
pandas Categorical writes them, or large_string) are read as strings."""

import io
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from spacy_hybridner.annotate import RecordSettings, parse_batch, read_parquet_batches
from spacy_hybridner.annotate.inputs import _string_column, iter_lines

# The methods that scan or copy a bytes object: a reader that calls them on its unfinished
# line again for every chunk (``(rest + chunk).split(...)``) does quadratic work.
SCANNING = {
    "split",
    "find",
    "index",
    "rfind",
    "rindex",
    "partition",
    "rpartition",
    "splitlines",
    "count",
    "rstrip",
    "strip",
    "replace",
    "__add__",
    "join",
    "decode",
}


def bytes_scanned(reader) -> tuple:
    """(what ``reader()`` returns, the sum of the sizes of the bytes and bytearray objects it
    called a scanning method on, plus the sizes of what it joined). Counted with a profile
    hook, which sees every call of a builtin method and its object: deterministic, whatever
    the machine's speed."""
    total = 0

    def profile(frame, event, arg):
        nonlocal total
        if event == "c_call":
            receiver = getattr(arg, "__self__", None)
            if isinstance(receiver, (bytes, bytearray)) and arg.__name__ in SCANNING:
                total += len(receiver)

    sys.setprofile(profile)
    try:
        result = reader()
    finally:
        sys.setprofile(None)
    return result, total


@pytest.mark.parametrize("n_chunks", [64, 256])
def test_one_long_line_is_read_in_linear_work(n_chunks):
    """A line of ``n_chunks`` read chunks: the reader scans each byte a bounded number of
    times (the quadratic reader scanned the line's first chunk ``n_chunks`` times over)."""
    chunk = 1024
    line = b"x" * (chunk * n_chunks)
    data = b"short\n" + line + b"\r\nlast"
    lines, scanned = bytes_scanned(lambda: list(iter_lines(io.BytesIO(data), chunk_size=chunk)))
    assert lines == [(1, b"short"), (2, line), (3, b"last")]
    assert scanned <= 3 * len(data), f"{scanned:,} bytes scanned for a {len(data):,}-byte input"


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7, 1 << 20])
def test_lines_are_the_same_whatever_the_chunks(chunk_size):
    data = b"a\r\nbb\n\n\r\nccc\r\n" + b"d" * 20 + b"\n\xff\xfe\ne\r"
    got = list(iter_lines(io.BytesIO(data), chunk_size=chunk_size))
    assert got == [(1, b"a"), (2, b"bb"), (3, b""), (4, b""), (5, b"ccc"), (6, b"d" * 20), (7, b"\xff\xfe"), (8, b"e")]
    assert list(iter_lines(io.BytesIO(b""), chunk_size=chunk_size)) == []
    assert list(iter_lines(io.BytesIO(b"x\n"), chunk_size=chunk_size)) == [(1, b"x")]


def _rows(path, **settings):
    settings = RecordSettings("parquet", **settings)
    parsed = [parse_batch(t.to_pydict(), settings) for t in read_parquet_batches(str(path), settings, 2)]
    return [row for rows, _ in parsed for row in rows], [r for _, rejects in parsed for r in rejects]


@pytest.mark.parametrize("encoding", ["dictionary", "large_string", "pandas-categorical"])
def test_parquet_text_column_of_any_string_encoding(tmp_path, encoding):
    texts = ["Apple hired Tim Cook .", "Angela Merkel visited Paris .", "Apple hired Tim Cook .", None]
    path = tmp_path / "in.parquet"
    if encoding == "pandas-categorical":
        import pandas as pd

        pd.DataFrame({"id": [1, 2, 3, 4], "text": pd.Categorical(texts)}).to_parquet(path)
    else:
        column = pa.array(texts, pa.string())
        column = column.dictionary_encode() if encoding == "dictionary" else column.cast(pa.large_string())
        pq.write_table(pa.table({"id": pa.array([1, 2, 3, 4]), "text": column}), path)
    text_type = pq.read_schema(path).field("text").type
    assert pa.types.is_dictionary(text_type) == (encoding != "large_string"), text_type
    rows, rejects = _rows(path)
    assert [(r.id, r.text) for r in rows] == list(zip([1, 2, 3], texts[:3]))
    assert [(r["id"], r["reason"]) for r in rejects] == [(4, "text is null")]


def test_parquet_dictionary_encoded_ids(tmp_path):
    """A dictionary-encoded id column of strings (Parquet keeps the dictionary type of
    strings only: it stores a dictionary of integers as the integers)."""
    path = tmp_path / "in.parquet"
    ids = pa.array(["a", "b", "a"]).dictionary_encode()
    pq.write_table(pa.table({"id": ids, "text": pa.array(["Apple", "Paris", "Berlin"])}), path)
    assert pa.types.is_dictionary(pq.read_schema(path).field("id").type)
    rows, rejects = _rows(path)
    assert [r.id for r in rows] == ["a", "b", "a"] and not rejects


def test_dictionary_columns_are_read_as_their_values():
    """The column reader on Arrow arrays as any reader may hand them: a dictionary of
    integers gives integer ids; of another type, the reject names the column's own type."""
    values, kind = _string_column(pa.array([7, 2**40, 7]).dictionary_encode(), True)
    assert (values.to_pylist(), kind) == (["7", str(2**40), "7"], "integer")
    values, kind = _string_column(pa.array([1.5]).dictionary_encode(), True)
    assert values.to_pylist() == [None] and kind.startswith("dictionary<values=double")
