"""The plain functions that the commands' own logic moved into (tools/, calibration):
what each command printed or checked, now callable without the command line."""

import json
from pathlib import Path

import pytest

from spacy_hybridner.tools.benchmark import benchmark_command, speed_baseline, write_results
from spacy_hybridner.tools.scoring import analysis_lines
from spacy_hybridner.tools.serve_benchmark import serve_benchmark_title


def test_speed_baseline_is_the_named_one_or_the_first():
    models = [("ner", Path("a")), ("hybrid", Path("b"))]
    assert speed_baseline(models) == "ner"
    assert speed_baseline(models, "hybrid") == "hybrid"
    with pytest.raises(ValueError, match="--baseline other is none of the pipelines' names"):
        speed_baseline(models, "other")


def test_write_results_writes_section_command_and_runs(tmp_path):
    path = tmp_path / "results" / "x.json"
    write_results(path, "tiny", "python -m spacy_hybridner speed a", [{"name": "a"}])
    assert json.loads(path.read_text()) == {
        "section": "tiny",
        "command": "python -m spacy_hybridner speed a",
        "runs": [{"name": "a"}],
    }


def test_benchmark_command_names_the_command(monkeypatch):
    monkeypatch.delenv("SPACY_CONFIG_OVERRIDES", raising=False)
    assert benchmark_command(["--corpus", "a b"]) == "python -m spacy_hybridner benchmark --corpus 'a b'"
    assert benchmark_command(["m", "d.spacy"], "annotate-benchmark") == (
        "python -m spacy_hybridner annotate-benchmark m d.spacy"
    )


def test_serve_benchmark_title_names_folder_file_and_model_thread():
    assert serve_benchmark_title(Path("corpus/gmb/test.spacy")) == "serve (gmb test)"
    assert serve_benchmark_title(Path("corpus/gmb/test.spacy"), model_thread=True) == "serve (gmb test, model thread)"


def test_analysis_lines_of_a_result():
    scores = {"ents_p": 0.5, "ents_r": 0.25, "ents_f": 1 / 3}
    check = {"spacy": scores, "seqeval": scores, "max_difference": 0.0, "agree": True}
    lines = analysis_lines({"crosscheck": check, "calibration": {"ece": None, "n_entities": 0}})
    assert lines[0] == "   spacy: P 50.0000  R 25.0000  F 33.3333"
    assert lines[1] == " seqeval: P 50.0000  R 25.0000  F 33.3333"
    assert "they agree" in lines[2] and len(lines) == 3
    lines = analysis_lines({"crosscheck": check, "calibration": {"ece": 0.125, "n_entities": 8}})
    assert lines[3] == "Expected calibration error of ent._.confidence: 0.1250 (8 entities)"
