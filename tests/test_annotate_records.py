"""annotate's record path against everything a line can hold (Hypothesis): any JSON value,
ids of every type and size, strings with lone surrogates and control characters, bytes that
are not UTF-8. Every record becomes one output record or one reject with a reason, never an
exception, and each valid record keeps its id as given, in JSON Lines, Parquet and DocBin.

The pure parser is tested on many examples without a model; the whole command runs on a
fixed sample drawn from the same strategies (the Ray engine's run of it is in test_annotate.py,
which shares one Ray session)."""

import json
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import spacy
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from spacy_hybridner.annotate import (
    EXIT_REJECTS,
    AnnotateInputError,
    RecordSettings,
    annotate,
    default_rejects_path,
    docbin_bytes,
    encode_batch,
    id_from_columns,
    manifest_path,
    output_record,
    parse_batch,
    read_output,
    read_parquet_batches,
    records_table,
    temporary_path,
    write_rejects,
)

MAX_CHARS = 60
SETTINGS = RecordSettings("jsonl", max_chars=MAX_CHARS)
PROPERTY = settings(
    derandomize=True, deadline=None, max_examples=300, database=None, suppress_health_check=list(HealthCheck)
)

# Strings: any code point, lone surrogates (JSON's "\ud800" escapes), control characters,
# Unicode line separators and a byte order mark, which str.strip() and splitlines() treat
# specially, and the words the tiny model knows, so that some records get entities.
CHARS = st.one_of(
    st.characters(),
    st.characters(categories=["Cs"]),
    st.sampled_from(["\x00", "\x1f", "\x7f", "\x85", "\u2028", "\u2029", "\ufeff", "\n", "\r", "\t"]),
)
STRINGS = st.one_of(
    st.text(CHARS, max_size=20),
    st.sampled_from(["Apple hired Tim Cook in London .", "Angela Merkel visited Paris .", "", " "]),
)
INTEGERS = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**40]),
)
SCALARS = st.one_of(st.none(), st.booleans(), INTEGERS, st.floats(), STRINGS)
JSON_VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(STRINGS, inner, max_size=3), max_leaves=6
)
IDS = st.one_of(
    STRINGS,
    INTEGERS,
    st.floats(),
    st.booleans(),
    st.none(),
    st.lists(SCALARS, max_size=2),
    st.dictionaries(STRINGS, SCALARS, max_size=2),
)
TEXTS = st.one_of(STRINGS, STRINGS, st.text(max_size=MAX_CHARS + 5, min_size=MAX_CHARS - 5), SCALARS)
# A record: an object with an id and a text (sometimes missing, sometimes with other fields)...
RECORDS = st.builds(
    lambda id_, text, extra, drop: {k: v for k, v in {**extra, "id": id_, "text": text}.items() if k not in drop},
    IDS,
    TEXTS,
    st.dictionaries(STRINGS, SCALARS, max_size=2),
    st.sets(st.sampled_from(["id", "text"]), max_size=1) | st.just(set()) | st.just(set()),
)


def _dumps(value, ascii_only: bool) -> bytes:
    text = json.dumps(value, ensure_ascii=ascii_only)  # NaN and Infinity as Python writes them
    return text.encode("utf8", "surrogatepass")  # ensure_ascii=False: a lone surrogate as CESU bytes


# ... or any JSON value, or a line that is not JSON, not UTF-8, or blank.
LINES = st.one_of(
    st.tuples(RECORDS, st.booleans()).map(lambda t: _dumps(t[0], t[1])),
    st.tuples(RECORDS, st.booleans()).map(lambda t: _dumps(t[0], t[1])),
    st.tuples(JSON_VALUES, st.booleans()).map(lambda t: _dumps(t[0], t[1])),
    st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")),
    st.sampled_from(
        [
            b"",
            b"  \t",
            b"\xef\xbb\xbf{}",
            b"[" * 100_000 + b"]" * 100_000,
            b'{"id": 1' + b"0" * 5000 + b', "text": "Apple"}',
            b'{"id": NaN, "text": "x"}',
        ]
    ),
)


def _has_surrogate(value: str) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for c in value)


def expected_record(raw: bytes, number: int = 2, max_chars: int = MAX_CHARS):
    """The oracle: "blank", "reject", or (id, text) of a valid record, from the spec alone:
    an object with an integer (not boolean) or string id and a string text, both storable
    as UTF-8, the text at most max_chars characters; a byte order mark starting line 1 is
    not part of the record."""
    try:
        line = raw.rstrip(b"\r").decode("utf8")
    except UnicodeDecodeError:
        return "reject"
    if number == 1 and line.startswith("\ufeff"):
        line = line[1:]
    if not line.strip(" \t\r\n"):
        return "blank"
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):
        return "reject"
    if not isinstance(value, dict) or "id" not in value or "text" not in value:
        return "reject"
    id_, text = value["id"], value["text"]
    valid_id = (isinstance(id_, int) and not isinstance(id_, bool)) or (
        isinstance(id_, str) and not _has_surrogate(id_)
    )
    valid_text = isinstance(text, str) and not _has_surrogate(text) and len(text) <= max_chars
    return (id_, text) if valid_id and valid_text else "reject"


def typed(id_):
    """An id with its type, so 1 and "1" (and True) differ when ids are compared."""
    return type(id_).__name__, id_


def _batch(lines):
    return {"line": list(range(1, len(lines) + 1)), "raw": list(lines), "path": ["in.jsonl"] * len(lines)}


@pytest.fixture(scope="module")
def blank_nlp():
    return spacy.blank("en")  # the tokenizer of the trained pipeline, without its model


@PROPERTY
@given(lines=st.lists(LINES, max_size=6))
def test_every_line_is_one_record_or_one_reject(blank_nlp, lines, tmp_path_factory):
    rows, rejects = parse_batch(_batch(lines), SETTINGS)
    oracle = {i + 1: expected_record(raw, i + 1) for i, raw in enumerate(lines)}
    assert sorted([r.line for r in rows] + [r["line"] for r in rejects]) == [
        n for n, want in oracle.items() if want != "blank"
    ], "each non-blank line exactly once"
    for row in rows:
        assert isinstance(oracle[row.line], tuple), (row, lines[row.line - 1])
        want_id, want_text = oracle[row.line]
        assert typed(row.id) == typed(want_id) and row.text == want_text
    for reject in rejects:
        assert oracle[reject["line"]] == "reject", (reject, lines[reject["line"] - 1])
        assert reject["reason"] and reject["source"] == "in.jsonl"
        assert reject["id"] is None or (isinstance(reject["id"], (str, int)) and not isinstance(reject["id"], bool))
    # Whatever passed the checks can be tokenized and written in every format, ids as given.
    records = [output_record(row, blank_nlp(row.text), RecordSettings("jsonl", include_text=True)) for row in rows]
    result = {"records": records, "docs": [blank_nlp(r.text) for r in rows], "rejects": rejects, "n_words": 0}
    jsonl = [json.loads(line) for line in encode_batch(result, "jsonl", True).decode("utf8").splitlines()]
    assert [typed(r["id"]) for r in jsonl] == [typed(r.id) for r in rows]
    assert [r["text"] for r in jsonl] == [r.text for r in rows]
    table = records_table(records, include_text=True)
    assert [typed(id_from_columns(r["id"], r["id_type"])) for r in table.to_pylist()] == [typed(r.id) for r in rows]
    assert docbin_bytes(result["docs"], [r.id for r in rows])
    # The rejects file is valid JSON Lines, naming each rejected record by its line.
    path = tmp_path_factory.mktemp("rejects") / "r.jsonl"
    write_rejects(path, rejects)
    written = [json.loads(line) for line in path.read_bytes().decode("utf8").splitlines()]
    assert sorted(r["line"] for r in written) == sorted(r["line"] for r in rejects)


# Parquet columns of any type: each (Arrow type, values of it or null, kind the spec expects).
PARQUET_COLUMNS = st.one_of(
    st.tuples(st.sampled_from([pa.int64(), pa.int32()]), st.lists(st.none() | st.integers(-(2**31), 2**31 - 1))),
    st.tuples(st.just(pa.uint64()), st.lists(st.none() | st.integers(0, 2**64 - 1))),
    st.tuples(st.sampled_from([pa.string(), pa.large_string()]), st.lists(st.none() | st.text(max_size=MAX_CHARS + 3))),
    st.tuples(st.just(pa.float64()), st.lists(st.none() | st.floats())),
    st.tuples(st.just(pa.bool_()), st.lists(st.none() | st.booleans())),
    st.tuples(st.just(pa.binary()), st.lists(st.none() | st.binary(max_size=4))),
)


@settings(derandomize=True, deadline=None, max_examples=100, database=None, suppress_health_check=list(HealthCheck))
@given(id_column=PARQUET_COLUMNS, text_column=PARQUET_COLUMNS)
def test_parquet_rows_are_records_or_rejects(id_column, text_column, tmp_path_factory):
    """The Parquet path, from a file: id and text columns of any type, nulls included; the
    reader gives one schema whatever the file's types (Ray Data batches mix files)."""
    (id_type, ids), (text_type, texts) = id_column, text_column
    n = min(len(ids), len(texts))
    path = tmp_path_factory.mktemp("parquet") / "in.parquet"
    pq.write_table(pa.table({"id": pa.array(ids[:n], id_type), "text": pa.array(texts[:n], text_type)}), path)
    settings_ = RecordSettings("parquet", max_chars=MAX_CHARS)
    tables = list(read_parquet_batches(str(path), settings_, rows_per_batch=4))
    assert len({t.schema for t in tables}) <= 1
    batches = [t.to_pydict() for t in tables]
    parsed = [parse_batch(b, settings_) for b in batches]
    valid = [row for rows, _ in parsed for row in rows]
    rejects = [r for _, rej in parsed for r in rej]
    assert sorted([r.line for r in valid] + [r["line"] for r in rejects]) == list(range(1, n + 1))
    for row in valid:
        id_, text = ids[row.line - 1], texts[row.line - 1]
        assert isinstance(text, str) and len(text) <= MAX_CHARS and isinstance(id_, (int, str))
        assert not isinstance(id_, bool) and typed(row.id) == typed(id_) and row.text == text
    for reject in rejects:
        id_, text = ids[reject["line"] - 1], texts[reject["line"] - 1]
        assert reject["reason"]
        assert (
            id_ is None
            or text is None
            or not isinstance(text, str)
            or len(text) > MAX_CHARS
            or not (isinstance(id_, (int, str)) and not isinstance(id_, bool))
        )


def draw_sample(strategy, n: int, seed_examples=()):
    """A fixed sample of ``strategy`` (derandomized: the same on every machine and run)."""
    drawn = list(seed_examples)

    @settings(
        derandomize=True,
        max_examples=n,
        database=None,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(value):
        drawn.append(value)

    collect()
    return drawn


# The reported cases, always in the sample: lone surrogates in a text and in an id (JSON
# escapes), integer ids of 2**63 and more mixed with string ids, a duplicate id, ids of
# every other JSON type, a line nested too deep for Python, and valid records around them.
HOSTILE_LINES = [
    b'{"id": "s1", "text": "Apple hired Tim Cook in London ."}',
    b'{"id": 1, "text": "Angela Merkel visited Paris ."}',
    b'{"id": 9223372036854775808, "text": "Barack Obama visited Kenya ."}',
    b'{"id": 18446744073709551616, "text": "Microsoft opened an office in Paris ."}',
    b'{"id": -9223372036854775809, "text": "Tim Cook visited Berlin ."}',
    b'{"id": "bad-text", "text": "Apple \\ud800 hired"}',
    b'{"id": "\\udc00", "text": "Apple hired Tim Cook ."}',
    b'{"id": "s1", "text": "The weather was nice today ."}',
    b'{"id": "ctl\\u0000\\u2028", "text": "Apple\\u0000 hired \\u001f Tim\\u2028Cook\\r."}',
    b'{"id": 1.5, "text": "x"}',
    b'{"id": true, "text": "x"}',
    b'{"id": null, "text": "x"}',
    b'{"id": [1], "text": "x"}',
    b'{"id": {"a": 1}, "text": "x"}',
    b'{"id": NaN, "text": "x"}',
    b"[" * 50_000 + b"]" * 50_000,
    b"\xff\xfe not utf-8",
    b"\x0c",
    b"",
]


@pytest.fixture(scope="module")
def hostile_input(tmp_path_factory):
    """The fixed sample as a JSON Lines file, with its expected records and rejects."""
    lines = draw_sample(LINES, 40, HOSTILE_LINES)
    path = tmp_path_factory.mktemp("hostile") / "hostile.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    oracle = [expected_record(raw, i + 1) for i, raw in enumerate(lines)]
    valid = [want for want in oracle if isinstance(want, tuple)]
    n_rejects = sum(want == "reject" for want in oracle)
    assert n_rejects >= 10 and len(valid) >= 8
    return path, valid, n_rejects


def check_hostile_run(summary, output, valid, n_rejects):
    """Each valid record exactly once with its id as given; each bad one a reject with a
    reason and a line; the counts in the summary and the manifest."""
    records = read_output(output)
    assert sorted(map(typed, (r["id"] for r in records)), key=repr) == sorted((typed(i) for i, _ in valid), key=repr)
    assert summary.annotated == len(valid) and summary.rejected == n_rejects
    assert summary.read == len(valid) + n_rejects and summary.exit_code == EXIT_REJECTS
    ids = [typed(i) for i, _ in valid]
    assert summary.duplicate_ids == len(ids) - len(set(ids)) >= 1
    rejects = [json.loads(line) for line in Path(summary.rejects).read_text(encoding="utf8").splitlines()]
    assert len(rejects) == n_rejects and all(r["reason"] and r["line"] for r in rejects)
    assert any("lone surrogate U+D800" in r["reason"] and r["id"] == "bad-text" for r in rejects)
    assert any("lone surrogate U+DC00" in r["reason"] and r["id"] == "\udc00" for r in rejects)
    assert any("recursion" in r["reason"] for r in rejects)
    manifest = json.loads(Path(summary.manifest).read_text(encoding="utf8"))
    assert manifest["complete"] is True
    assert (manifest["annotated"], manifest["rejected"], manifest["duplicate_ids"]) == (
        summary.annotated,
        summary.rejected,
        summary.duplicate_ids,
    )
    assert not any(p.name.endswith("._temporary") for p in Path(output).parent.iterdir())
    return records


@pytest.mark.parametrize("out_name,workers", [("out.jsonl", 1), ("out.parquet", 1), ("shards", 1), ("out.parquet", 2)])
def test_local_engine_hostile_sample(model_dir, hostile_input, tmp_path, out_name, workers):
    path, valid, n_rejects = hostile_input
    output = tmp_path / out_name
    summary = annotate(
        str(model_dir),
        str(path),
        output,
        workers=workers,
        batch_size=4,
        max_chars=MAX_CHARS,
        output_format="docbin" if out_name == "shards" else None,
        progress=False,
        echo=lambda _: None,
    )
    records = check_hostile_run(summary, output, valid, n_rejects)
    assert sum(len(r["ents"]) for r in records) > 0
    if out_name.endswith(".jsonl"):  # ids as given, huge integers as JSON integers
        assert '"id": 18446744073709551616' in output.read_text(encoding="utf8")


def test_outputs_have_their_own_rejects_and_are_never_overwritten(model_dir, hostile_input, tmp_path):
    path, valid, n_rejects = hostile_input
    kwargs = {"max_chars": MAX_CHARS, "progress": False, "echo": lambda _: None}
    jsonl = annotate(str(model_dir), str(path), tmp_path / "out.jsonl", **kwargs)
    parquet = annotate(str(model_dir), str(path), tmp_path / "out.parquet", **kwargs)
    assert jsonl.rejects != parquet.rejects
    assert Path(jsonl.rejects) == default_rejects_path(tmp_path / "out.jsonl") == tmp_path / "out.jsonl.rejects.jsonl"
    assert Path(parquet.manifest) == manifest_path(tmp_path / "out.parquet")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(AnnotateInputError, match="out.jsonl.rejects.jsonl already exists.*--overwrite"):
        annotate(str(model_dir), str(path), tmp_path / "new.jsonl", rejects_path=Path(jsonl.rejects), **kwargs)
    with pytest.raises(
        AnnotateInputError, match="out.jsonl, .*out.jsonl.rejects.jsonl, .*manifest.json already exist: remove them"
    ):
        annotate(str(model_dir), str(path), tmp_path / "out.jsonl", **kwargs)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before, "nothing was touched"
    again = annotate(str(model_dir), str(path), tmp_path / "out.jsonl", overwrite=True, **kwargs)
    assert again.annotated == len(valid) and len(read_output(tmp_path / "out.jsonl")) == len(valid)


def test_failed_model_load_leaves_nothing(hostile_input, tmp_path):
    path, _, _ = hostile_input
    with pytest.raises(AnnotateInputError, match="cannot load the pipeline"):
        annotate(
            str(tmp_path / "no-such-model"), str(path), tmp_path / "out.jsonl", progress=False, echo=lambda _: None
        )
    assert list(tmp_path.iterdir()) == [], "no empty output, rejects file or temporary to block the rerun"


def test_leftover_temporaries_need_overwrite(model_dir, hostile_input, tmp_path):
    """A run killed outright (SIGKILL) leaves its temporaries: the rerun names them and
    asks for --overwrite, which removes them and completes."""
    path, valid, _ = hostile_input
    output = tmp_path / "out"
    temporary = temporary_path(output)
    temporary.mkdir()
    (temporary / "part-00000.spacy").write_bytes(b"half a shard")
    with pytest.raises(AnnotateInputError, match=r"\.out\._temporary already exists: .*killed.*--overwrite"):
        annotate(str(model_dir), str(path), output, output_format="docbin", progress=False, echo=lambda _: None)
    summary = annotate(
        str(model_dir),
        str(path),
        output,
        output_format="docbin",
        overwrite=True,
        max_chars=MAX_CHARS,
        progress=False,
        echo=lambda _: None,
    )
    assert not temporary.exists() and (output / "_SUCCESS").exists()
    assert len(read_output(output)) == summary.annotated == len(valid)


def test_oracle_sees_the_reported_cases():
    """The oracle itself on the cases of the issue (so the property tests test something)."""
    assert expected_record(HOSTILE_LINES[2]) == (2**63, "Barack Obama visited Kenya .")
    assert expected_record(HOSTILE_LINES[5]) == expected_record(HOSTILE_LINES[6]) == "reject"
    assert expected_record(b'{"id": NaN, "text": "x"}') == "reject" and math.isnan(json.loads("NaN"))
    assert expected_record(b'\xef\xbb\xbf{"id": 1, "text": "x"}', 1) == (1, "x")
