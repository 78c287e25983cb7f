"""annotate: both engines give nlp.pipe's entities for every input and output format,
reject bad records without stopping, fail clearly on unreadable input, and a Ray worker
that dies mid-run loses no record. The Ray engine's runs share one Ray session: those of
the hostile sample of test_annotate_records.py and an interrupted run are here too."""

import json
import os
import signal
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import spacy
from test_annotate_records import MAX_CHARS as HOSTILE_MAX_CHARS
from test_annotate_records import check_hostile_run, hostile_input  # noqa: F401 (a fixture)
from typer.testing import CliRunner

from spacy_hybridner.annotate import (
    EXIT_REJECTS,
    AnnotateInputError,
    RayAnnotator,
    annotate,
    read_output,
    temporary_path,
)
from spacy_hybridner.cli import app

from conftest import TRAIN_DATA

TEXTS = [text for text, _ in TRAIN_DATA] + [
    "Tim Cook visited Berlin and Paris .",
    "Angela Merkel met Apple executives in Zürich .",
    "Microsoft hired Barack Obama in London .",
]
MAX_CHARS = 200
LONG_TEXT = "Apple " * 60  # 360 characters: over MAX_CHARS
# (line, reason fragment) of the bad records of every JSON Lines input below.
BAD_JSONL = [
    ('{"id": "bad-int", "text": 5}', "text must be a string, got int"),
    ('{"id": "bad-missing", "body": "Apple"}', "no 'text' field"),
    (json.dumps({"id": "bad-long", "text": LONG_TEXT}), f"more than the limit of {MAX_CHARS}"),
    ("{not json", "not valid JSON"),
    ('{"text": "Apple hired Tim Cook ."}', "no 'id' field"),
]


@pytest.fixture(scope="module")
def expected(model_dir):
    """text -> nlp.pipe's entities (start, end, label, text, confidence)."""
    nlp = spacy.load(model_dir)
    return {
        doc.text: [(e.start_char, e.end_char, e.label_, e.text, e._.confidence) for e in doc.ents]
        for doc in nlp.pipe(TEXTS)
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The same documents as JSON Lines (one file; a folder of two), plain text (one file;
    a glob of two) and Parquet (a glob of two), each with bad records mixed in."""
    root = tmp_path_factory.mktemp("corpus")
    records = [{"id": f"doc-{i}", "text": t} for i, t in enumerate(TEXTS)]
    lines = [json.dumps(r) for r in records]
    (root / "docs.jsonl").write_text("\n".join(lines[:3] + [b for b, _ in BAD_JSONL] + [""] + lines[3:]) + "\n")
    (root / "parts").mkdir()
    (root / "parts" / "a.jsonl").write_text("\n".join(lines[:4] + [BAD_JSONL[0][0]]) + "\n")
    (root / "parts" / "b.jsonl").write_text("\n".join(lines[4:] + [BAD_JSONL[3][0]]) + "\n")
    (root / "docs.txt").write_text("\n".join(TEXTS[:2] + ["", LONG_TEXT] + TEXTS[2:]) + "\n")
    (root / "txt").mkdir()
    (root / "txt" / "a.txt").write_text("\n".join(TEXTS[:5]) + "\n")
    (root / "txt" / "b.txt").write_text("\n".join(TEXTS[5:] + [LONG_TEXT]))
    (root / "pq").mkdir()
    for name, part in (("a", records[:4]), ("b", records[4:] + [{"id": "bad-null", "text": None}])):
        pq.write_table(pa.Table.from_pylist(part), root / "pq" / f"{name}.parquet")
    return root


# input, input format's expected ids -> texts, expected rejects (id, reason fragment)
def _cases(corpus):
    by_id = {f"doc-{i}": t for i, t in enumerate(TEXTS)}
    txt_ids = {i + 1: t for i, t in enumerate(TEXTS[:2])}
    txt_ids.update({i + 5: t for i, t in enumerate(TEXTS[2:])})
    txt_glob_ids = {f"a.txt:{i + 1}": t for i, t in enumerate(TEXTS[:5])}
    txt_glob_ids.update({f"b.txt:{i + 1}": t for i, t in enumerate(TEXTS[5:])})
    return {
        "jsonl-file": (
            str(corpus / "docs.jsonl"),
            by_id,
            [(None if b.startswith("{not") or '"id"' not in b else json.loads(b)["id"], r) for b, r in BAD_JSONL],
        ),
        "jsonl-folder": (str(corpus / "parts"), by_id, [("bad-int", BAD_JSONL[0][1]), (None, "not valid JSON")]),
        "txt-file": (str(corpus / "docs.txt"), txt_ids, [(4, f"more than the limit of {MAX_CHARS}")]),
        "txt-glob": (
            str(corpus / "txt" / "*.txt"),
            txt_glob_ids,
            [(f"b.txt:{len(TEXTS) - 4}", f"more than the limit of {MAX_CHARS}")],
        ),
        "parquet-glob": (str(corpus / "pq" / "*.parquet"), by_id, [("bad-null", "text is null")]),
    }


def check_output(records, ids_to_texts, expected):
    """Every valid input record exactly once, with nlp.pipe's spans and confidences."""
    ids = [r["id"] for r in records]
    assert sorted(ids, key=str) == sorted(ids_to_texts, key=str), "each valid id exactly once"
    for record in records:
        want = expected[ids_to_texts[record["id"]]]
        got = [(e["start_char"], e["end_char"], e["label"], e["text"]) for e in record["ents"]]
        assert got == [w[:4] for w in want], record["id"]
        assert [e["confidence"] for e in record["ents"]] == [pytest.approx(w[4], rel=1e-5) for w in want]
    assert sum(len(r["ents"]) for r in records) > 0, "the tiny model should find entities"


def check_rejects(summary, want):
    rejects = [json.loads(line) for line in Path(summary.rejects).read_text().splitlines()]
    assert len(rejects) == len(want) == summary.rejected
    for id_, fragment in want:
        assert any(r["id"] == id_ and fragment in r["reason"] for r in rejects), (id_, fragment, rejects)
    assert all(r["source"] for r in rejects)


@pytest.mark.parametrize(
    "case,out_name,workers",
    [
        ("jsonl-file", "out.jsonl", 1),
        ("jsonl-folder", "out.parquet", 1),
        ("txt-file", "shards", 1),
        ("txt-glob", "out.jsonl", 1),
        ("parquet-glob", "out.jsonl", 2),
    ],
)
def test_local_engine_matches_nlp_pipe(model_dir, corpus, expected, tmp_path, case, out_name, workers):
    input_path, ids_to_texts, want_rejects = _cases(corpus)[case]
    output = tmp_path / out_name
    summary = annotate(
        str(model_dir),
        input_path,
        output,
        engine="local",
        workers=workers,
        batch_size=3,
        max_chars=MAX_CHARS,
        output_format="docbin" if out_name == "shards" else None,
        include_text=True,
        progress=False,
    )
    records = read_output(output)
    check_output(records, ids_to_texts, expected)
    if out_name != "shards":
        assert all(r["text"] == ids_to_texts[r["id"]] for r in records)
    check_rejects(summary, want_rejects)
    assert summary.annotated == len(ids_to_texts) and summary.read == len(ids_to_texts) + len(want_rejects)
    assert summary.words > 0 and summary.exit_code == EXIT_REJECTS


@pytest.fixture(scope="module")
def ray_session():
    import ray  # the `ray` extra, part of the `test` extra

    ray.init(num_cpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()


@pytest.mark.parametrize(
    "case,output_format",
    [
        ("jsonl-file", "parquet"),  # with batch_size 3, lines 4-6 are a batch of rejects only
        ("txt-glob", "jsonl"),  # ids name the files, as in the local engine
        ("parquet-glob", "docbin"),
    ],
)
def test_ray_engine_matches_nlp_pipe(ray_session, model_dir, corpus, expected, tmp_path, case, output_format):
    input_path, ids_to_texts, want_rejects = _cases(corpus)[case]
    output = tmp_path / "out"
    summary = annotate(
        str(model_dir),
        input_path,
        output,
        engine="ray",
        workers=2,
        batch_size=3,
        max_chars=MAX_CHARS,
        output_format=output_format,
        progress=False,
    )
    assert output.is_dir() and len(list(output.iterdir())) >= 1
    check_output(read_output(output), ids_to_texts, expected)
    check_rejects(summary, want_rejects)
    assert summary.annotated == len(ids_to_texts) and summary.words > 0


def test_ray_worker_killed_mid_run_output_complete(ray_session, model_dir, corpus, expected, tmp_path):
    marker = tmp_path / "killed"

    class KillOnce(RayAnnotator):
        """Kills its own worker process (SIGKILL) the first time it sees doc-5."""

        def __call__(self, table):
            if any(b'"doc-5"' in raw for raw in table.column("raw").to_pylist()) and not marker.exists():
                marker.write_text(str(os.getpid()))
                os.kill(os.getpid(), signal.SIGKILL)
            return super().__call__(table)

    input_path, ids_to_texts, want_rejects = _cases(corpus)["jsonl-file"]
    output = tmp_path / "out"
    summary = annotate(
        str(model_dir),
        input_path,
        output,
        engine="ray",
        workers=2,
        batch_size=2,
        max_chars=MAX_CHARS,
        max_restarts=2,
        max_task_retries=2,
        actor_class=KillOnce,
        progress=False,
    )
    assert marker.exists(), "the fault was injected"
    records = read_output(output)
    check_output(records, ids_to_texts, expected)
    assert len({r["id"] for r in records}) == len(records)
    assert summary.annotated == len(ids_to_texts) and summary.rejected == len(want_rejects)


def test_cli_exit_status_and_rejects(model_dir, corpus, tmp_path):
    runner = CliRunner()
    clean = tmp_path / "clean.jsonl"
    clean.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(TEXTS)))
    result = runner.invoke(app, ["annotate", str(model_dir), str(clean), str(tmp_path / "a.jsonl")])
    assert result.exit_code == 0, result.output
    assert f"{len(TEXTS)} documents read, {len(TEXTS)} annotated, 0 rejected" in result.output
    result = runner.invoke(
        app,
        [
            "annotate",
            str(model_dir),
            str(corpus / "docs.jsonl"),
            str(tmp_path / "b.jsonl"),
            "--max-chars",
            str(MAX_CHARS),
        ],
    )
    assert result.exit_code == EXIT_REJECTS, result.output
    assert f"{len(BAD_JSONL)} rejected" in result.output
    rejects = (tmp_path / "b.jsonl.rejects.jsonl").read_text().splitlines()
    assert len(rejects) == len(BAD_JSONL) and "line" in json.loads(rejects[0])
    assert len(read_output(tmp_path / "b.jsonl")) == len(TEXTS)


def test_unreadable_input_is_a_clear_error(model_dir, corpus, tmp_path):
    runner = CliRunner()
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"this is not parquet")
    result = runner.invoke(
        app, ["annotate", str(model_dir), str(broken), str(tmp_path / "o.jsonl")], env={"COLUMNS": "1000"}
    )
    assert result.exit_code == 2
    assert f"{broken} is not a readable Parquet file" in result.output
    assert not (tmp_path / "o.jsonl").exists()
    with pytest.raises(AnnotateInputError, match="does not exist"):
        annotate(str(model_dir), str(tmp_path / "missing.jsonl"), tmp_path / "o.jsonl")
    with pytest.raises(AnnotateInputError, match="no column 'body' for the text"):
        annotate(str(model_dir), str(corpus / "pq"), tmp_path / "o.jsonl", text_field="body")
    with pytest.raises(AnnotateInputError, match="no files match"):
        annotate(str(model_dir), str(tmp_path / "*.jsonl"), tmp_path / "o.jsonl")
    existing = tmp_path / "exists.jsonl"
    existing.write_text("keep me")
    with pytest.raises(AnnotateInputError, match="exists"):
        annotate(str(model_dir), str(corpus / "docs.jsonl"), existing)
    assert existing.read_text() == "keep me"


def test_benchmark_section_and_cluster_estimate(tmp_path):
    from spacy_hybridner.tools.annotate_benchmark import cluster_estimate, write_benchmark

    estimate = cluster_estimate(100.0, 0.5)  # 100 docs/s per actor at 50% efficiency
    assert estimate["cores"] == pytest.approx(1e8 / 86_400 / 50.0)
    assert estimate["nodes_32"] == pytest.approx(estimate["cores"] / 32)
    seconds = {
        "nlp.pipe (this process)": [10.0],
        "local, 1 process": [12.0],
        "local, 2 processes": [7.0],
        "ray, 1 actor": [40.0, 44.0, 42.0],
        "ray, 2 actors": [26.0, 25.0, 27.0],
    }
    results = {
        "model": "m",
        "data": "d.spacy",
        "ray_init_s": 4.0,
        "ray_first_batch_s": 10.0,
        "corpora": {"base": {"docs": 1000, "words": 20000, "seconds": seconds}},
    }
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## other\n\nkept\n")
    write_benchmark(results, doc, "python -m spacy_hybridner annotate-benchmark m d.spacy", machine="test machine")
    write_benchmark(results, doc, "python -m spacy_hybridner annotate-benchmark m d.spacy", machine="test machine")
    text = doc.read_text()
    assert text.count("## annotate: local engine and Ray Data") == 1 and "## other\n\nkept" in text
    assert "| ray, 2 actors | 26.0 | 38.5 | 769 | 0.38 |" in text  # medians: 1000 docs / 26 s
    # steady: (42 - 10) / (26 - 10) = 2.00x; one actor 1000 / 32 s = 31.25 docs/s at 100% efficiency
    assert "1.62× in wall time, 2.00× after subtracting" in text
    assert f"about {1e8 / 86_400 / 31.25:,.0f} cores" in text


@pytest.mark.parametrize("output_format", ["parquet", "jsonl"])
def test_ray_engine_hostile_sample(ray_session, model_dir, hostile_input, tmp_path, output_format):  # noqa: F811
    """Lone surrogates, ids of every type, integers of 2**63 and more mixed with strings:
    rejects with reasons, every valid id once and as given, in Parquet and JSON Lines."""
    path, valid, n_rejects = hostile_input
    output = tmp_path / "out"
    summary = annotate(
        str(model_dir),
        str(path),
        output,
        engine="ray",
        workers=2,
        batch_size=4,
        max_chars=HOSTILE_MAX_CHARS,
        output_format=output_format,
        progress=False,
        echo=lambda _: None,
    )
    check_hostile_run(summary, output, valid, n_rejects)
    assert (output / "_SUCCESS").exists()
    if output_format == "jsonl":
        assert '"id": 18446744073709551616' in "".join(p.read_text(encoding="utf8") for p in output.glob("*.jsonl"))
    else:
        assert pq.read_schema(next(output.glob("*.parquet"))).field("id").type == pa.string()


def test_parquet_files_with_different_id_types(ray_session, model_dir, tmp_path):
    """Parquet files whose id columns differ (int64, string, uint64 beyond 2**63, float):
    one batch of Ray Data may hold rows of several files, so the reader gives them one
    schema; ids come out as given, the float column's rows are rejects naming its type."""
    folder = tmp_path / "pq"
    folder.mkdir()
    columns = {
        "a": pa.array([1, 2], pa.int64()),
        "b": pa.array(["x", "y"], pa.string()),
        "c": pa.array([2**64 - 1], pa.uint64()),
        "d": pa.array([1.5], pa.float64()),
    }
    for name, ids in columns.items():
        texts = pa.array(TEXTS[: len(ids)], pa.large_string() if name == "b" else pa.string())
        pq.write_table(pa.table({"id": ids, "text": texts}), folder / f"{name}.parquet")
    want = [1, 2, "x", "y", 2**64 - 1]
    for engine, output in (("local", tmp_path / "local.jsonl"), ("ray", tmp_path / "ray")):
        summary = annotate(
            str(model_dir),
            str(folder),
            output,
            engine=engine,
            workers=1,
            batch_size=5,
            progress=False,
            echo=lambda _: None,
        )
        assert sorted(map(repr, (r["id"] for r in read_output(output)))) == sorted(map(repr, want)), engine
        rejects = [json.loads(line) for line in Path(summary.rejects).read_text().splitlines()]
        assert [(r["source"], r["line"]) for r in rejects] == [("d.parquet", 1)]
        assert "got a column of double" in rejects[0]["reason"]


def test_ray_interrupted_run_publishes_nothing(ray_session, model_dir, corpus, tmp_path):
    """Ctrl-C in the driver mid-run (an actor sends SIGINT to it on its second batch, then
    waits until the driver has cleaned up): no output, no rejects, no manifest, no
    temporaries; then the rerun completes. Last in this module: it stops an actor pool."""
    driver, output = os.getpid(), tmp_path / "out"
    temporary, sent = temporary_path(output), tmp_path / "sent"

    class InterruptDriver(RayAnnotator):
        calls = 0

        def __call__(self, table):
            self.calls += 1
            if self.calls == 2 and not sent.exists():
                sent.write_text("")
                os.kill(driver, signal.SIGINT)
                deadline = time.monotonic() + 120
                while temporary.exists() and time.monotonic() < deadline:
                    time.sleep(0.05)
            return super().__call__(table)

    input_path, ids_to_texts, _ = _cases(corpus)["jsonl-file"]
    # SIGINT as an interactive start handles it: a test run started in the background by a
    # non-interactive shell (`nohup make test &`) inherits SIGINT ignored, and Python then
    # installs no handler, so the actor's SIGINT would be discarded.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            annotate(
                str(model_dir),
                input_path,
                output,
                engine="ray",
                workers=2,
                batch_size=1,
                max_chars=MAX_CHARS,
                actor_class=InterruptDriver,
                progress=False,
                echo=lambda _: None,
            )
    finally:
        signal.signal(signal.SIGINT, previous)
    assert sent.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sent"], "nothing published, no temporaries"
    summary = annotate(
        str(model_dir),
        input_path,
        output,
        engine="ray",
        workers=2,
        batch_size=3,
        max_chars=MAX_CHARS,
        overwrite=True,
        progress=False,
        echo=lambda _: None,
    )
    assert sorted(r["id"] for r in read_output(output)) == sorted(ids_to_texts)
    assert summary.manifest and (output / "_SUCCESS").exists()
