"""The engine-neutral annotator: the same entities and confidences as nlp.pipe."""

import pickle

import pytest
import spacy

from spacy_hybridner.annotate.annotator import Annotator, doc_records, filter_records, surrogate_problem, text_problem

from conftest import TRAIN_DATA

TEXTS = [text for text, _ in TRAIN_DATA] + ["Tim Cook visited Berlin and Paris .", ""]


def test_records_match_nlp_pipe(model_dir):
    nlp = spacy.load(model_dir)
    expected = [
        [(e.start_char, e.end_char, e.label_, e.text, e._.confidence) for e in doc.ents] for doc in nlp.pipe(TEXTS)
    ]
    got = Annotator(str(model_dir), batch_size=2).annotate(TEXTS)
    # Same spans; confidences equal up to float32 rounding (a batch of other
    # lengths pads differently, which moves the last bits of the sums).
    assert [[tuple(r.values())[:4] for r in recs] for recs in got] == [[e[:4] for e in doc] for doc in expected]
    assert [[r["confidence"] for r in recs] for recs in got] == [
        [pytest.approx(e[4], rel=1e-5) for e in doc] for doc in expected
    ]
    assert any(got), "the tiny model should find entities"
    assert all(isinstance(r["confidence"], float) and 0.0 < r["confidence"] <= 1.0 for recs in got for r in recs)
    assert list(got[0][0]) == ["start_char", "end_char", "label", "text", "confidence"]


def test_pickled_annotator_carries_settings_not_the_pipeline(model_dir):
    annotator = Annotator(str(model_dir), batch_size=3)
    before = annotator(TEXTS)
    data = pickle.dumps(annotator)
    assert len(data) < 1000  # no weights inside
    clone = pickle.loads(data)
    assert clone.batch_size == 3  # and no pipeline: the pickle holds no weights
    assert clone(TEXTS) == before


def test_info_names_the_pipeline(model_dir):
    info = Annotator(str(model_dir)).info()
    assert info["pipeline"] == ["ner"]
    assert info["labels"] == ["LOC", "ORG", "PER"]
    assert info["lang"] == "en"
    assert info["spacy_version"] == spacy.__version__


def test_any_pipeline_works_without_confidence():
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns([{"label": "ORG", "pattern": "Apple"}])
    records = doc_records(nlp("Apple hired Tim Cook ."))
    assert records == [{"start_char": 0, "end_char": 5, "label": "ORG", "text": "Apple", "confidence": None}]


def test_text_problem_and_filter():
    assert text_problem("fine", max_chars=10) is None
    assert "string" in text_problem(3)
    assert "limit of 3" in text_problem("four", max_chars=3)
    # JSON allows a lone surrogate escape ("\ud800"); UTF-8 (and spaCy's string store) cannot hold it
    assert "lone surrogate U+D800 at character 2" in text_problem("ab\ud800c")
    assert "id holds a lone surrogate U+DFFF" in surrogate_problem("\udfff", "id")
    assert text_problem("control \x00\x1f and separators \u2028\u2029 are text") is None
    records = [{"confidence": 0.9}, {"confidence": 0.2}, {"confidence": None}]
    assert filter_records(records, None) == records
    assert filter_records(records, 0.5) == [{"confidence": 0.9}]


# --- the inference settings (--precision, --runtime) reach the Annotator of every engine -----


@pytest.fixture
def applied(monkeypatch):
    """``inference.apply_inference`` replaced by a recorder of the settings it was given."""
    import spacy_hybridner.inference

    calls = []
    monkeypatch.setattr(
        spacy_hybridner.inference, "apply_inference", lambda nlp, **settings: calls.append(settings) or []
    )
    return calls


def _plain(output):
    """A CLI's output with its error box and line wrapping taken out."""
    return " ".join(output.replace("│", " ").split())


@pytest.mark.parametrize(
    "option, value, valid", [("--precision", "fp16", "fp32, int8"), ("--runtime", "tensorrt", "torch, onnxruntime")]
)
@pytest.mark.parametrize("command", ["serve", "annotate"])
def test_cli_refuses_unknown_inference_settings(tmp_path, command, option, value, valid):
    from typer.testing import CliRunner

    from spacy_hybridner.cli import app

    args = [command, "some-model"]
    if command == "annotate":
        args += [str(tmp_path / "in.jsonl"), str(tmp_path / "out.jsonl")]
    result = CliRunner().invoke(app, args + [option, value])
    assert result.exit_code == 2, result.output
    assert f"{option} must be one of {valid}" in _plain(result.output) and repr(value) in _plain(result.output)


def test_inference_settings_default_to_the_pipeline_as_saved():
    import typer.main

    from spacy_hybridner.annotate import annotate
    from spacy_hybridner.cli import app
    from spacy_hybridner.cli._util import defaults_of
    from spacy_hybridner.serve.settings import ServeSettings

    commands = typer.main.get_command(app).commands
    for command, plain in (("annotate", annotate), ("serve", ServeSettings)):
        params = {p.name: p for p in commands[command].params}
        for name in ("precision", "runtime"):
            assert params[name].default is None and defaults_of(plain)[name] is None, (command, name)
    with pytest.raises(ValueError, match="--precision must be one of fp32, int8"):
        ServeSettings(precision="fp16")
    assert ServeSettings(precision="int8", runtime="onnxruntime").runtime == "onnxruntime"


def test_local_engine_in_this_process_applies_them(model_dir, tmp_path, applied):
    from spacy_hybridner.annotate import AnnotateInputError, annotate

    (tmp_path / "in.txt").write_text("\n".join(TEXTS[:3]) + "\n")
    with pytest.raises(AnnotateInputError, match="--runtime must be one of torch, onnxruntime"):
        annotate(str(model_dir), str(tmp_path / "in.txt"), tmp_path / "bad.jsonl", runtime="onnx", progress=False)
    assert applied == [] and not (tmp_path / "bad.jsonl").exists()
    kwargs = dict(progress=False, echo=lambda line: None)
    annotate(str(model_dir), str(tmp_path / "in.txt"), tmp_path / "a.jsonl", **kwargs)
    assert applied == []  # neither given: the pipeline as saved
    annotate(str(model_dir), str(tmp_path / "in.txt"), tmp_path / "b.jsonl", precision="int8", **kwargs)
    annotate(str(model_dir), str(tmp_path / "in.txt"), tmp_path / "c.jsonl", runtime="onnxruntime", **kwargs)
    assert [(c["precision"], c["runtime"]) for c in applied] == [("int8", "torch"), ("fp32", "onnxruntime")]


class _Stop(Exception):
    """Raised by a stand-in to stop a run once it has what the test checks."""


def _stop(*args, **kwargs):
    raise _Stop


def test_local_engine_workers_and_ray_actors_get_them(monkeypatch, tmp_path):
    from spacy_hybridner.annotate import BatchAnnotator, RayAnnotator, annotate, local, ray_engine

    (tmp_path / "in.txt").write_text("One text .\n")
    pools, jobs = [], []
    monkeypatch.setattr(local, "_pool_results", lambda *args: pools.append(args[-1]) or (o for o in ()))
    monkeypatch.setattr("spacy_hybridner.annotate.run.run_ray", lambda job, **kwargs: jobs.append(job) or _stop())
    settings = dict(precision="int8", runtime="onnxruntime", progress=False, echo=lambda line: None)
    annotate("some-model", str(tmp_path / "in.txt"), tmp_path / "out.jsonl", workers=2, **settings)
    with pytest.raises(_Stop):
        annotate("some-model", str(tmp_path / "in.txt"), tmp_path / "out", engine="ray", **settings)
    # What each worker process builds (spawned with these arguments), and each actor
    worker = BatchAnnotator(**pools[0], torch_threads=1)
    monkeypatch.setattr(ray_engine, "die_with_parent", lambda *args, **kwargs: None)
    monkeypatch.setattr(Annotator, "load", lambda self: self)
    actor = RayAnnotator(**ray_engine._actor_kwargs(jobs[0], jobs[0].settings, None))
    for annotator in (worker.annotator, actor.annotator):
        assert (annotator.model, annotator.precision, annotator.runtime) == ("some-model", "int8", "onnxruntime")
        assert pickle.loads(pickle.dumps(annotator)).runtime == "onnxruntime"  # as shipped to its process


def test_serve_model_processes_get_them(monkeypatch, tmp_path):
    from spacy_hybridner.serve import ServeSettings, runner
    from spacy_hybridner.serve.model_process import ProcessAnnotator

    annotators, built = runner._annotators, []
    monkeypatch.setattr(runner, "bind_socket", lambda host, port: None)
    monkeypatch.setattr(runner, "_annotators", lambda *args, **kwargs: built.append((args, kwargs)) or _stop())
    with pytest.raises(_Stop):
        runner.serve(str(tmp_path), ServeSettings(precision="int8", runtime="onnxruntime"), model_workers=2)
    ((args, kwargs),) = built
    processes = annotators(*args, **kwargs)  # started only when the app starts
    assert len(processes) == 2 and all(isinstance(p, ProcessAnnotator) for p in processes)
    for process in processes:
        assert (process.annotator.precision, process.annotator.runtime) == ("int8", "onnxruntime")
    thread = annotators(*args, **{**kwargs, "model_process": False})
    assert (thread.precision, thread.runtime) == ("int8", "onnxruntime")
