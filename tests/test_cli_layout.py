"""The command line as a package (spaCy's cli/ layout): one module per command, each a
thin ``<name>_cli`` over a plain function; the defaults of the options are the plain
functions' own; one GPU set-up and one recorded command line for every command."""

import inspect
import json
import sys

import pytest
import spacy
import typer.main
from typer.testing import CliRunner

from spacy_hybridner.annotate import annotate
from spacy_hybridner.annotate.annotator import Annotator
from spacy_hybridner.cli import app, main
from spacy_hybridner.cli._util import defaults_of, load_pipeline, recorded_command
from spacy_hybridner.gpu import setup_gpu
from spacy_hybridner.serve.settings import ServeSettings
from spacy_hybridner.tools.annotate_benchmark import run_annotate_benchmark
from spacy_hybridner.tools.benchmark import compare_speed, run_benchmark
from spacy_hybridner.tools.corpora import convert_corpus
from spacy_hybridner.tools.serve_benchmark import serve_benchmark

from conftest import write_corpus

COMMANDS = [
    "convert",
    "texts",
    "showcase",
    "calibrate",
    "optimize",
    "report",
    "benchmark",
    "benchmark-section",
    "speed",
    "inference-benchmark",
    "visualize",
    "serve",
    "serve-benchmark",
    "annotate",
    "annotate-benchmark",
    "crosscheck",
]


def _params(name):
    """A command's click parameters by name."""
    return {p.name: p for p in typer.main.get_command(app).commands[name].params}


def test_commands_in_order_each_in_its_module():
    group = typer.main.get_command(app)
    assert list(group.commands) == COMMANDS
    for name, command in group.commands.items():
        func = command.callback
        module = name.replace("-", "_") if name != "benchmark-section" else "benchmark"
        assert func.__module__ == f"spacy_hybridner.cli.{module}", name
        assert func.__name__ == f"{name.replace('-', '_')}_cli", name
    assert main.__module__ == "spacy_hybridner.cli"


@pytest.mark.parametrize(
    "command, option, plain, parameter",
    [
        ("convert", "limit", convert_corpus, "limit"),
        ("convert", "dev", convert_corpus, "dev"),
        ("benchmark", "speed_batches", run_benchmark, "speed_batches"),
        ("benchmark", "seed_start", run_benchmark, "seed_start"),
        ("speed", "rounds", compare_speed, "rounds"),
        ("serve-benchmark", "clients", serve_benchmark, "clients"),
        ("annotate-benchmark", "synthetic_factor", run_annotate_benchmark, "synthetic_factor"),
        ("annotate", "batch_size", annotate, "batch_size"),
        ("annotate", "max_chars", annotate, "max_chars"),
        ("annotate", "rejects", annotate, "rejects_path"),
        ("serve", "port", ServeSettings, "port"),
        ("serve", "queue_size", ServeSettings, "queue_size"),
        ("serve", "receive_timeout", ServeSettings, "receive_timeout_s"),
        ("serve", "shutdown_timeout", ServeSettings, "shutdown_timeout_s"),
    ],
)
def test_option_defaults_are_the_plain_functions(command, option, plain, parameter):
    assert _params(command)[option].default == inspect.signature(plain).parameters[parameter].default


def test_every_serve_setting_with_an_option_has_its_default():
    params = _params("serve")
    renamed = {"receive_timeout_s": "receive_timeout", "shutdown_timeout_s": "shutdown_timeout"}
    for name, default in defaults_of(ServeSettings).items():
        if name != "retry_after_s":  # not an option
            assert params[renamed.get(name, name)].default == default, name
    assert _params("annotate")["engine"].default.value == inspect.signature(annotate).parameters["engine"].default


def test_defaults_of_reads_functions_and_dataclasses():
    def plain(a, b=2, *, c=None):
        pass

    assert defaults_of(plain) == {"b": 2, "c": None}
    assert defaults_of(ServeSettings)["host"] == "127.0.0.1"


@pytest.fixture
def gpu_calls(monkeypatch):
    """spacy.require_gpu replaced by a recorder: the ids it was asked for."""
    calls = []
    monkeypatch.setattr(spacy, "require_gpu", lambda gpu_id=0: calls.append(gpu_id) or True)
    return calls


def test_one_gpu_setup_for_the_cli_and_the_annotator(gpu_calls, tmp_path):
    spacy.blank("en").to_disk(tmp_path / "blank")
    setup_gpu(-1)
    assert gpu_calls == []
    setup_gpu(1)
    assert gpu_calls == [1]
    load_pipeline(str(tmp_path / "blank"), 2)
    Annotator(str(tmp_path / "blank"), gpu_id=3).load()
    Annotator(str(tmp_path / "blank")).load()
    assert gpu_calls == [1, 2, 3]


def test_commands_set_up_the_gpu_they_are_given(gpu_calls, tmp_path):
    spacy.blank("en").to_disk(tmp_path / "blank")
    write_corpus(tmp_path / "dev.spacy")
    result = CliRunner().invoke(app, ["visualize", str(tmp_path / "blank"), "A text.", "-o", str(tmp_path / "v.html")])
    assert result.exit_code == 0, result.output
    assert gpu_calls == []  # visualize runs on the CPU
    args = ["calibrate", str(tmp_path / "blank"), str(tmp_path / "dev.spacy"), str(tmp_path / "out"), "--gpu-id", "0"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "nothing to calibrate" in result.output and (tmp_path / "out" / "config.cfg").exists()
    assert gpu_calls == [0]


def test_recorded_command_quotes_the_arguments_after_the_command(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["spacy-hybridner", "speed", "a=my model", "--data", "t.spacy"])
    monkeypatch.setenv("SPACY_CONFIG_OVERRIDES", "--training.max_epochs 1")
    assert recorded_command("speed") == "python -m spacy_hybridner speed 'a=my model' --data t.spacy"
    # benchmark trains with spacy train, which reads the overrides: its line carries them
    assert recorded_command("benchmark") == (
        "SPACY_CONFIG_OVERRIDES='--training.max_epochs 1' python -m spacy_hybridner benchmark 'a=my model' "
        "--data t.spacy"
    )


def test_serve_without_its_extra_names_the_extra(monkeypatch):
    # Neither FastAPI nor uvicorn importable: the modules that import them cannot be imported.
    monkeypatch.setitem(sys.modules, "spacy_hybridner.serve.runner", None)
    monkeypatch.setitem(sys.modules, "spacy_hybridner.serve.app", None)
    result = CliRunner().invoke(app, ["serve", "some-model"])
    assert result.exit_code == 1
    assert "pip install 'spacy-hybridner[serve]'" in str(result.exception)


def test_bad_serve_settings_are_bad_parameters():
    result = CliRunner().invoke(app, ["serve", "some-model", "--api-key", " "])
    assert result.exit_code == 2 and "the API key is empty" in result.output


def test_benchmark_section_of_no_runs_is_a_bad_parameter(tmp_path):
    rows = tmp_path / "benchmark.json"
    rows.write_text(json.dumps([]), encoding="utf8")
    result = CliRunner().invoke(app, ["benchmark-section", str(rows), "--corpus", "x"])
    assert result.exit_code == 2 and "holds no runs" in result.output
