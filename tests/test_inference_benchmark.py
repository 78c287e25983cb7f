"""``inference-benchmark``: each pipeline measured in a child process, compared with its
twin, words/s read from ``speed``'s JSON, and the section, rows and plot it writes."""

import inspect
import json

import pytest
import spacy
import typer.main
from spacy.training import Corpus, Example
from typer.testing import CliRunner

from spacy_hybridner.calibration import confidence_pairs, expected_calibration_error
from spacy_hybridner.cli import app
from spacy_hybridner.tools.benchmark import update_benchmark_doc, write_results
from spacy_hybridner.tools.benchmark.runner import dir_size_mb
from spacy_hybridner.tools.inference_benchmark import (
    check_plot,
    inference_markdown,
    latency_text,
    parse_twins,
    plot_frontier,
    read_speed_results,
    run_inference_benchmark,
)

from conftest import TRAIN_DATA, write_corpus

SPEED_COMMAND = "python -m spacy_hybridner speed fp32=model int8=model --data test.spacy"


def write_speed_json(path, words_per_second):
    """A JSON as ``speed --results-path`` writes it (``compare_speed``'s rows)."""
    rows = [
        {"name": name, "model": "model", "runs": [wps, wps], "median": wps, "min": wps, "max": wps}
        for name, wps in words_per_second.items()
    ]
    write_results(path, "speed", SPEED_COMMAND, rows)
    return path


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    path = tmp_path_factory.mktemp("inference-corpora")
    return write_corpus(path / "dev.spacy", TRAIN_DATA[:3]), write_corpus(path / "test.spacy", TRAIN_DATA)


@pytest.fixture(scope="module")
def measured(model_dir, corpora, tmp_path_factory):
    """One run on two names of the same pipeline, ``int8`` the twin of ``fp32``."""
    dev, test = corpora
    speed = write_speed_json(tmp_path_factory.mktemp("speed") / "speed.json", {"fp32": 2000.0, "int8": 5000.0})
    lines = []
    rows = run_inference_benchmark(
        [("fp32", model_dir), ("int8", model_dir)],
        dev,
        test,
        echo=lines.append,
        twins={"int8": "fp32"},
        speed_results=speed,
        latency_calls=5,
        warmup=1,
    )
    return rows, lines


def test_a_twin_of_the_same_pipeline_agrees_everywhere(measured, model_dir, corpora):
    rows, lines = measured
    fp32, int8 = rows
    assert [r["name"] for r in rows] == ["fp32", "int8"]
    assert (fp32["twin"], int8["twin"]) == (None, "fp32")
    assert int8["identical_docs_vs_twin"] == 1.0 and int8["delta_f_vs_twin"] == 0.0
    assert fp32["identical_docs_vs_twin"] is None and fp32["delta_f_vs_twin"] is None
    assert int8["test_docs"] == len(TRAIN_DATA)
    assert any(line.startswith("== fp32 (1/2)") for line in lines)

    nlp = spacy.load(model_dir)
    dev, test = corpora
    assert fp32["dev_f"] == int8["dev_f"] == nlp.evaluate(list(Corpus(str(dev))(nlp)))["ents_f"]
    assert fp32["test_f"] == int8["test_f"] == nlp.evaluate(list(Corpus(str(test))(nlp)))["ents_f"]
    examples = list(Corpus(str(test))(nlp))
    predicted = [Example(doc, eg.reference) for eg, doc in zip(examples, nlp.pipe(eg.predicted for eg in examples))]
    pairs = confidence_pairs(predicted)
    assert pairs and fp32["n_confidences"] == len(pairs)
    assert fp32["test_ece"] == pytest.approx(expected_calibration_error(*zip(*pairs)), abs=1e-6)


def test_rows_carry_latency_memory_and_speed(measured, model_dir):
    rows, _ = measured
    for r in rows:
        assert r["latency_median_ms"] > 0 and r["latency_p95_ms"] >= r["latency_median_ms"]
        assert r["latency_words"] == 30 and r["latency_calls"] == 5
        assert r["peak_rss_mb"] > 0 and r["model_mb"] == dir_size_mb(model_dir)
        assert isinstance(r["torch_threads"], int) and r["torch_threads"] >= 1
        assert r["speed_command"] == SPEED_COMMAND and r["baseline"] == "fp32"
        assert "entities" not in r
    assert [r["words_per_second"] for r in rows] == [2000.0, 5000.0]
    assert [r["speed_ratio"] for r in rows] == [1.0, 2.5]


def test_section_rows_and_plot_are_written(measured, tmp_path):
    rows, _ = measured
    section = inference_markdown(
        rows, title="tiny-inference", command="python -m spacy_hybridner inference-benchmark x"
    )
    assert section.startswith("## tiny-inference\n")
    assert "python -m spacy_hybridner inference-benchmark x\n" + SPEED_COMMAND in section
    assert "| int8 | fp32 |" in section and "| +0.00 | 100.0 |" in section and "| 5,000 | 2.50 |" in section
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## tiny-inference\n\nstale numbers\n\n## other\n\nkept\n")
    update_benchmark_doc(doc, "tiny-inference", section)
    text = doc.read_text()
    assert "stale numbers" not in text and section in text and "## other\n\nkept" in text
    write_results(tmp_path / "rows.json", "tiny-inference", "cmd", rows)
    assert json.loads((tmp_path / "rows.json").read_text())["runs"] == json.loads(json.dumps(rows))
    plot_frontier(rows, tmp_path / "plots" / "frontier.png")
    assert (tmp_path / "plots" / "frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_pipeline_that_fails_is_named(corpora, tmp_path):
    (tmp_path / "broken").mkdir()
    with pytest.raises(RuntimeError, match="broken_one: the measurement of"):
        run_inference_benchmark([("broken_one", tmp_path / "broken")], *corpora, echo=lambda _: None, latency_calls=1)


def test_twins_and_speed_results_are_checked(tmp_path, model_dir):
    assert parse_twins(["b=a"], ["a", "b"]) == {"b": "a"}
    for items, message in [
        (["b=c"], "c is none of"),
        (["c=a"], "c is none of"),
        (["a=a"], "its own twin"),
        (["a"], "NAME=TWIN"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_twins(items, ["a", "b"])
    (tmp_path / "other.json").write_text(json.dumps({"rows": []}))
    with pytest.raises(ValueError, match="speed --results-path"):
        read_speed_results(tmp_path / "other.json")
    speed = write_speed_json(tmp_path / "speed.json", {"x": 1.0})
    assert read_speed_results(speed) == {"command": SPEED_COMMAND, "words_per_second": {"x": 1.0}}
    with pytest.raises(ValueError, match="none of the pipelines' names"):
        check_plot([("a", model_dir)], speed)
    with pytest.raises(ValueError, match="--speed-results"):
        check_plot([("a", model_dir)], None)


def test_latency_text_takes_the_first_words_across_documents():
    assert latency_text(["a b c", "d e", "f"], n_words=4) == "a b c d"
    assert latency_text(["a b"], n_words=4) == "a b"


def test_cli_refuses_a_twin_that_names_no_pipeline(model_dir, corpora):
    dev, test = corpora
    args = ["inference-benchmark", f"fp32={model_dir}", "--dev", str(dev), "--test", str(test)]
    result = CliRunner().invoke(app, [*args, "--twin", "int8=fp32"])
    assert result.exit_code == 2
    assert "int8 is none of the pipelines' names" in result.output


def test_cli_option_defaults_are_the_plain_function():
    params = {p.name: p for p in typer.main.get_command(app).commands["inference-benchmark"].params}
    for name in ("latency_calls", "warmup"):
        assert params[name].default == inspect.signature(run_inference_benchmark).parameters[name].default
