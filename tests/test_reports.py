"""report and benchmark commands end to end on tiny data."""

import json
from pathlib import Path

import pytest
import spacy
from spacy.training import Example
from typer.testing import CliRunner

from spacy_hybridner.cli import app
from spacy_hybridner.extensions import install_extensions
from spacy_hybridner.tools.benchmark import update_benchmark_doc
from spacy_hybridner.tools.report import calibration, confusion_counts

from conftest import TRAIN_DATA, write_corpus
from test_cli import spacy_cli

ROOT = Path(__file__).parent.parent


def example(text, gold, pred, confidences=None):
    install_extensions()  # Span._.confidence, as a hybrid_ner component registers it
    nlp = spacy.blank("en")
    ref = nlp.make_doc(text)
    ref.ents = [ref.char_span(s, e, label) for s, e, label in gold]
    doc = nlp.make_doc(text)
    doc.ents = [doc.char_span(s, e, label) for s, e, label in pred]
    for ent, c in zip(doc.ents, confidences or []):
        ent._.confidence = c
    return Example(doc, ref)


def test_confusion_counts_missed_and_spurious():
    eg = example(
        "Anna met Bob in Paris today",
        gold=[(0, 4, "PER"), (9, 12, "PER"), (16, 21, "LOC")],
        pred=[(0, 4, "PER"), (9, 12, "ORG"), (22, 27, "DATE")],
    )
    labels, counts = confusion_counts([eg])
    assert labels == ["DATE", "LOC", "ORG", "PER"]
    assert counts == {"PER": {"PER": 1, "ORG": 1}, "LOC": {"(missed)": 1}, "(spurious)": {"DATE": 1}}


def test_calibration_error():
    # Two entities at 0.9 (one right), two at 0.3 (one right): ECE = 0.5*0.4 + 0.5*0.2.
    eg = example(
        "Anna met Bob and Carl and Dave",
        gold=[(0, 4, "PER"), (17, 21, "PER")],
        pred=[(0, 4, "PER"), (9, 12, "PER"), (17, 21, "PER"), (26, 30, "PER")],
        confidences=[0.9, 0.9, 0.3, 0.3],
    )
    calib = calibration([eg])
    assert calib["n_entities"] == 4
    assert calib["ece"] == pytest.approx(0.5 * 0.4 + 0.5 * 0.2)


@pytest.fixture(scope="module")
def trained_with_log(tmp_path_factory):
    path = tmp_path_factory.mktemp("trained")
    corpus = write_corpus(path / "train.spacy")
    spacy_cli(
        "train",
        ROOT / "configs" / "hybrid_cpu.cfg",
        "--paths.train",
        corpus,
        "--paths.dev",
        corpus,
        "--output",
        path / "out",
        "--paths.log",
        path / "out" / "log.jsonl",
        "--training.max_steps",
        20,
        "--training.eval_frequency",
        5,
    )
    return path


def test_report_command(trained_with_log):
    path = trained_with_log
    out = path / "report"
    result = CliRunner().invoke(
        app,
        [
            "report",
            str(path / "out" / "model-best"),
            str(path / "train.spacy"),
            str(out),
            "--training-dir",
            str(path / "out"),
        ],
    )
    assert result.exit_code == 0, result.output
    for name in ("scores.md", "report.json", "confusion.png", "reliability.png", "training.png", "worst.html"):
        assert (out / name).stat().st_size > 0, name
    report = json.loads((out / "report.json").read_text())
    expected = {}
    for _, ents in TRAIN_DATA:
        for _, _, label in ents:
            expected[label] = expected.get(label, 0) + 1
    assert report["support"] == expected
    assert len(report["training_log"]) == 5 and "seconds" in report["training_log"][0]
    assert "| **all** |" in (out / "scores.md").read_text()


def test_report_without_training_log_is_explained(trained_with_log, tmp_path):
    path = trained_with_log
    result = CliRunner().invoke(
        app,
        [
            "report",
            str(path / "out" / "model-best"),
            str(path / "train.spacy"),
            str(tmp_path),
            "--training-dir",
            str(tmp_path),
        ],
    )
    assert result.exit_code != 0
    assert "No training log" in str(result.exception)


def test_tiny_benchmark_end_to_end(tmp_path, monkeypatch):
    corpus = write_corpus(tmp_path / "train.spacy")
    monkeypatch.setenv("SPACY_CONFIG_OVERRIDES", "--training.max_steps 10 --training.eval_frequency 5")
    doc = tmp_path / "benchmarks.md"
    args = [
        "benchmark",
        str(corpus),
        str(corpus),
        str(corpus),
        "--corpus",
        "tiny",
        "--config",
        str(ROOT / "configs" / "spacy_ner.cfg"),
        "--config",
        str(ROOT / "configs" / "hybrid_cpu.cfg"),
        "--budget-minutes",
        "3",
        "--output-dir",
        str(tmp_path / "models"),
        "--doc-path",
        str(doc),
        "--speed-repeats",
        "1",
        "--speed-batch-size",
        "4",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    text = doc.read_text()
    assert "## tiny" in text and "| spacy_ner |" in text and "| hybrid_cpu |" in text
    command = "python -m spacy_hybridner benchmark"
    assert f"SPACY_CONFIG_OVERRIDES='--training.max_steps 10 --training.eval_frequency 5' {command}" in text
    rows = json.loads((tmp_path / "models" / "tiny" / "benchmark.json").read_text())
    assert [r["name"] for r in rows] == ["spacy_ner", "hybrid_cpu"]
    assert all(r["words_per_second"] > 0 and r["steps_to_best"] is not None for r in rows)
    # Progress was visible while it ran.
    assert "[hybrid_cpu]" in result.output and "== spacy_ner: training" in result.output
    # hybrid_cpu was calibrated on dev before the cross-check, which measured its test ECE;
    # spaCy's ner has no confidences to calibrate.
    spacy_ner, hybrid = rows
    assert hybrid["calibrated"] and (tmp_path / "models" / "tiny" / "hybrid_cpu" / "model-calibrated").exists()
    assert 0.0 <= hybrid["test_ece"] <= 1.0 and hybrid["n_confident_entities"] > 0
    assert not spacy_ner["calibrated"] and spacy_ner["test_ece"] is None
    assert "test ECE" in text and f"{hybrid['test_ece']:.4f}" in text
    # The training curve: every evaluation, in order, and its table in the document.
    steps = [p["step"] for p in hybrid["curve"]]
    assert steps == sorted(steps) and steps[-1] == hybrid["last_step"] and len(steps) >= 2
    assert all(0.0 <= p["dev_f"] <= 1.0 and p["minutes"] >= 0 for p in hybrid["curve"])
    assert "Training curves" in text and "| 5 min |" in text

    # The section again from the stored runs, without training (runs over several sittings).
    assert all(r["budget_minutes"] == 3 for r in rows)
    again = tmp_path / "again.md"
    result = CliRunner().invoke(
        app,
        [
            "benchmark-section",
            str(tmp_path / "models" / "tiny" / "benchmark.json"),
            "--corpus",
            "tiny again",
            "--doc-path",
            str(again),
            "--results-path",
            str(tmp_path / "again.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "## tiny again" in again.read_text() and "| hybrid_cpu |" in again.read_text()
    assert "at most 3.0 minutes" in again.read_text()
    assert json.loads((tmp_path / "again.json").read_text())["runs"] == rows

    # Their speed side by side in one run, with the ratio to the baseline.
    models = tmp_path / "models" / "tiny"
    speed_doc = tmp_path / "speed.md"
    result = CliRunner().invoke(
        app,
        [
            "speed",
            f"ner={models / 'spacy_ner' / 'model-best'}",
            f"hybrid={models / 'hybrid_cpu' / 'model-best'}",
            "--data",
            str(corpus),
            "--batch-size",
            "4",
            "--rounds",
            "2",
            "--baseline",
            "ner",
            "--title",
            "tiny speed",
            "--doc-path",
            str(speed_doc),
            "--results-path",
            str(tmp_path / "speed.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    speed = json.loads((tmp_path / "speed.json").read_text())
    assert [r["name"] for r in speed["runs"]] == ["ner", "hybrid"]
    assert all(len(r["runs"]) == 2 and r["min"] <= r["median"] <= r["max"] for r in speed["runs"])
    ratio = speed["runs"][1]["median"] / speed["runs"][0]["median"]
    assert "## tiny speed" in speed_doc.read_text() and f"| {ratio:.2f} |" in speed_doc.read_text()


def test_speed_names_a_missing_pipeline_and_an_unknown_baseline(tmp_path):
    result = CliRunner().invoke(app, ["speed", f"a={tmp_path / 'nothing'}", "--data", str(tmp_path)])
    assert result.exit_code == 2 and "pipeline not found" in result.output
    (tmp_path / "m").mkdir()
    result = CliRunner().invoke(app, ["speed", f"a={tmp_path / 'm'}", "--data", str(tmp_path), "--baseline", "b"])
    assert result.exit_code == 2 and "--baseline b" in result.output


def test_runs_of_later_sittings_are_added_and_replace_the_same_seed():
    from spacy_hybridner.tools.benchmark import merge_rows

    earlier = [{"name": "a", "seed": 0, "f": 1}, {"name": "b", "seed": 0, "f": 2}, {"name": "a", "seed": 1, "f": 3}]
    new = [{"name": "b", "seed": 1, "f": 4}, {"name": "a", "seed": 1, "f": 5}]
    merged = merge_rows(earlier, new)
    assert [(r["name"], r["seed"], r["f"]) for r in merged] == [("a", 0, 1), ("a", 1, 5), ("b", 0, 2), ("b", 1, 4)]


def test_curve_table_gives_the_best_dev_f_by_each_minute_mark():
    from spacy_hybridner.tools.benchmark import curve_table

    def run(points):
        return {"curve": [{"minutes": m, "step": i, "epoch": 0, "dev_f": f} for i, (m, f) in enumerate(points)]}

    summaries = [
        {"name": "x", "runs": [run([(1, 0.5), (6, 0.7), (9, 0.6)]), run([(2, 0.3), (7, 0.9)])]},
        {"name": "y", "runs": [run([(4, 0.4)])]},
    ]
    lines = curve_table(summaries)
    assert "| model | 5 min | 10 min |" in lines
    assert "| x | 40.00 | 80.00 |" in lines  # (0.5 + 0.3) / 2, then (0.7 + 0.9) / 2
    assert "| y | 40.00 | 40.00 |" in lines
    assert curve_table([{"name": "z", "runs": [{"curve": []}]}]) == []
    # A run whose evaluations all came within its first second (spaCy logs whole seconds,
    # so a fast machine gives minutes 0) still has its table.
    fast = curve_table([{"name": "z", "runs": [run([(0, 0.2), (0, 0.6)])]}])
    assert "| model | 5 min |" in fast and "| z | 60.00 |" in fast


def test_benchmark_rejects_bad_options_before_training(tmp_path):
    corpus = write_corpus(tmp_path / "train.spacy")
    args = [
        "benchmark",
        str(corpus),
        str(corpus),
        str(corpus),
        "--corpus",
        "tiny",
        "--output-dir",
        str(tmp_path / "models"),
        "--speed-batches",
        "10",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "--speed-batches" in result.output and "30" in result.output
    assert not (tmp_path / "models").exists()


def test_benchmark_document_sections_are_replaced(tmp_path):
    doc = tmp_path / "benchmarks.md"
    update_benchmark_doc(doc, "conll03", "## conll03\n\nold numbers\n")
    update_benchmark_doc(doc, "gmb", "## gmb\n\ngmb numbers\n")
    update_benchmark_doc(doc, "conll03", "## conll03\n\nnew numbers\n")
    text = doc.read_text()
    assert text.count("## conll03") == 1 and "new numbers" in text and "old numbers" not in text
    assert "gmb numbers" in text


def test_budget_stops_training_even_when_sigint_was_ignored():
    # `nohup python -m spacy_hybridner benchmark ... &` starts with SIGINT ignored, which
    # children inherit; the budget must still stop the training child.
    import signal
    import sys
    import time

    from spacy_hybridner.tools.benchmark import run_streaming

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        start = time.time()
        result = run_streaming(
            [sys.executable, "-c", "import time; print('training', flush=True); time.sleep(120)"],
            "child",
            lambda line: None,
            budget_s=1.0,
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    assert result["stopped"]
    assert time.time() - start < 60
    assert "training" in result["output"]
    assert "KeyboardInterrupt" in result["output"]
