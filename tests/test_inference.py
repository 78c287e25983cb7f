"""Inference settings for transformer pipelines (``hybrid_inference``, ``optimize``): int8
and ONNX Runtime on tiny trained pipelines, loaded in fresh processes, against float32."""

import json
import sys

import pytest
import spacy
import srsly
import torch
from spacy.util import load_config, load_model_from_config
from thinc.api import fix_random_seed
from typer.testing import CliRunner

from spacy_hybridner.cli import app
from spacy_hybridner.inference import apply_inference, load_float32, optimize
from spacy_hybridner.inference.component import InferenceSettings
from spacy_hybridner.inference.onnx_encoder import require_onnxruntime
from spacy_hybridner.inference.quantize import is_quantized, quantize_linear
from spacy_hybridner.inference.stand_in import InferenceEncoder, torch_encode

from conftest import ROOT_CONFIG, TRAIN_DATA, make_examples, run_python, write_corpus

TRF_CONFIG = ROOT_CONFIG.parent / "hybrid_trf.cfg"

# A small corpus: the training sentences and recombinations of their parts.
TEXTS = [text for text, _ in TRAIN_DATA] + [
    f"{a.split(' ', 2)[0]} {a.split(' ', 2)[1]} met {b.split(' ')[0]} in {c.split(' ')[-2]} ."
    for a in ("Michael Jordan x", "Tim Cook x", "Angela Merkel x", "Barack Obama x")
    for b in ("Apple", "Google", "Microsoft")
    for c in ("born in Brooklyn .", "office in Paris .", "visited Kenya .")
]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def train_trf(config_path, tiny_bert, path, steps=40):
    """A shipped transformer config on the tiny BERT, trained on TRAIN_DATA, saved to
    ``path / "fp32"``."""
    write_corpus(path / "train.spacy")
    config = load_config(
        config_path,
        overrides={"variables.transformer": str(tiny_bert), "paths.train": str(path / "train.spacy")},
        interpolate=True,
    )
    fix_random_seed(0)
    nlp = load_model_from_config(config, auto_fill=True, validate=True)
    examples = make_examples(nlp)
    optimizer = nlp.initialize(lambda: examples)
    optimizer.learn_rate = 0.01
    for _ in range(steps):
        nlp.update(examples, sgd=optimizer)
    nlp.to_disk(path / "fp32")
    return path / "fp32"


@pytest.fixture(scope="module")
def trf_dir(tiny_bert, tmp_path_factory):
    """A tiny hybrid_trf pipeline (the shipped config on the tiny BERT), trained and saved."""
    return train_trf(TRF_CONFIG, tiny_bert, tmp_path_factory.mktemp("trf"))


def entities_in_fresh_process(*model_dirs, texts=TEXTS):
    """For each pipeline, loaded with spacy.load in one new interpreter (no import of this
    package first): its entities and whether its transformer runs int8 / in a stand-in."""
    code = f"""
import json, spacy
from spacy_hybridner.inference.quantize import is_quantized
found = []
for path in {[str(p) for p in model_dirs]!r}:
    nlp = spacy.load(path)
    shim = nlp.get_pipe("transformer").model.layers[0].shims[0]
    ents = [[(e.start_char, e.end_char, e.label_, e._.confidence) for e in doc.ents] for doc in nlp.pipe({texts!r})]
    found.append({{"ents": ents, "runs": type(shim._model).__name__, "int8": is_quantized(shim._hfmodel.transformer)}})
print(json.dumps(found))
"""
    return json.loads(run_python(code).stdout.strip().splitlines()[-1])


def share_identical(got, expected):
    return sum([e[:3] for e in g] == [e[:3] for e in x] for g, x in zip(got, expected)) / len(expected)


SETTINGS = [("int8", "torch"), ("fp32", "onnxruntime"), ("int8", "onnxruntime")]


def test_optimized_pipelines_load_in_a_fresh_process_with_the_same_entities(trf_dir, tmp_path):
    for precision, runtime in SETTINGS:
        out = tmp_path / f"{precision}-{runtime}"
        lines = optimize(trf_dir, out, precision=precision, runtime=runtime)
        engine = "ONNX Runtime" if runtime == "onnxruntime" else "PyTorch"
        assert lines == [f"transformer: {engine} at {precision}, windows grouped by length"]
        config = load_config(out / "config.cfg")
        assert config["nlp"]["pipeline"][-1] == "inference"
        assert config["components"]["inference"] == {
            "factory": "hybrid_inference",
            "precision": precision,
            "runtime": runtime,
            "by_length": True,
        }
        assert (out / "inference" / "transformer.onnx").exists() == (runtime == "onnxruntime")
    fp32, *optimized = entities_in_fresh_process(trf_dir, *(tmp_path / f"{p}-{r}" for p, r in SETTINGS))
    assert fp32["runs"] != "InferenceEncoder" and not fp32["int8"]
    assert sum(len(doc) for doc in fp32["ents"]) >= len(TEXTS)  # the tiny model does find entities
    for (precision, runtime), found in zip(SETTINGS, optimized):
        assert found["runs"] == "InferenceEncoder"
        assert found["int8"] == (precision == "int8" and runtime == "torch")
        assert share_identical(found["ents"], fp32["ents"]) >= 0.95, (precision, runtime)


def test_spacy_ner_on_the_same_transformer_runs_at_int8_too(tiny_bert, tmp_path):
    """spaCy's own ner head (configs/spacy_ner_trf.cfg) listens to the same transformer
    component: the settings apply to it alike, so comparisons stay like with like."""
    fp32 = train_trf(ROOT_CONFIG.parent / "spacy_ner_trf.cfg", tiny_bert, tmp_path, steps=30)
    expected = [[(e.start_char, e.end_char, e.label_) for e in d.ents] for d in spacy.load(fp32).pipe(TEXTS)]
    assert sum(len(doc) for doc in expected) >= len(TRAIN_DATA)
    assert optimize(fp32, tmp_path / "int8", precision="int8") == [
        "transformer: PyTorch at int8, windows grouped by length"
    ]
    nlp = spacy.load(tmp_path / "int8")
    assert is_quantized(nlp.get_pipe("transformer").model.layers[0].shims[0]._hfmodel.transformer)
    got = [[(e.start_char, e.end_char, e.label_) for e in d.ents] for d in nlp.pipe(TEXTS)]
    assert sum(a == b for a, b in zip(got, expected)) / len(TEXTS) >= 0.95


def test_int8_pipeline_saves_the_float32_weights_it_was_loaded_from(trf_dir, tmp_path):
    optimize(trf_dir, tmp_path / "int8", precision="int8")
    nlp = spacy.load(tmp_path / "int8")
    hf_model = nlp.get_pipe("transformer").model.layers[0].shims[0]._hfmodel.transformer
    assert is_quantized(hf_model)
    nlp.to_disk(tmp_path / "again")
    reloaded = load_float32(tmp_path / "again")
    original = load_float32(trf_dir)
    state = reloaded.get_pipe("transformer").model.transformer.state_dict()
    expected = original.get_pipe("transformer").model.transformer.state_dict()
    assert sorted(state) == sorted(expected)
    for key, value in expected.items():
        assert torch.equal(state[key], value), key


def test_length_grouping_gives_the_same_hidden_states(tiny_bert):
    from transformers import BertModel

    model = BertModel.from_pretrained(tiny_bert).eval()
    torch.manual_seed(0)
    lengths = [9, 3, 12, 1, 7, 12, 5]
    ids = torch.randint(5, 40, (len(lengths), 12))
    mask = (torch.arange(12)[None, :] < torch.tensor(lengths)[:, None]).long()
    types = torch.zeros_like(ids)
    with torch.no_grad():
        whole = model(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        grouped = InferenceEncoder(torch_encode(model), model, cost_per_bucket=1)(ids, mask, types).last_hidden_state
    real = mask.bool()
    assert torch.allclose(grouped[real], whole[real], atol=1e-5)
    assert torch.equal(grouped[~real], torch.zeros_like(grouped[~real]))


def test_quantized_linear_layers_keep_their_float32_state():
    layers = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)).eval()
    before = {k: v.clone() for k, v in layers.state_dict().items()}
    x = torch.randn(5, 8)
    expected = layers(x)
    assert quantize_linear(layers) == ["0", "2"]
    assert is_quantized(layers)
    assert torch.allclose(layers(x), expected, atol=0.05)
    after = layers.state_dict()
    assert sorted(after) == sorted(before) and all(torch.equal(after[k], before[k]) for k in before)


def test_settings_are_checked(trf_dir):
    nlp = load_float32(trf_dir)
    with pytest.raises(ValueError, match="precision must be one of"):
        nlp.add_pipe("hybrid_inference", config={"precision": "fp16"})
    with pytest.raises(ValueError, match="runtime must be one of"):
        nlp.add_pipe("hybrid_inference", config={"runtime": "tensorrt"})
    settings = nlp.add_pipe("hybrid_inference", config={"runtime": "onnxruntime"})
    with pytest.raises(ValueError, match="holds no ONNX graph.*optimize MODEL OUTPUT --runtime onnxruntime"):
        settings.apply()
    nlp.remove_pipe("hybrid_inference")
    settings = nlp.add_pipe("hybrid_inference", first=True, config={"precision": "int8"})
    with pytest.raises(ValueError, match="comes before \\['transformer'\\].*Put it last"):
        settings.apply()


def test_graph_exported_at_another_precision_is_refused(trf_dir, tmp_path):
    optimize(trf_dir, tmp_path / "out", precision="int8", runtime="onnxruntime")
    with pytest.raises(ValueError, match="exported at int8, but precision = 'fp32'.*--precision fp32"):
        spacy.load(tmp_path / "out", config={"components": {"inference": {"precision": "fp32"}}})


def test_a_pipeline_without_a_transformer_is_refused(model_dir, tmp_path):
    with pytest.raises(ValueError, match="has no spacy-transformers component"):
        optimize(model_dir, tmp_path / "out")


def test_on_a_gpu_the_settings_are_ignored_with_a_warning(trf_dir, monkeypatch):
    from spacy_hybridner.inference import component

    monkeypatch.setattr(component, "_device_type", lambda model: "cuda")
    nlp = load_float32(trf_dir)
    with pytest.warns(UserWarning, match="CPU inference settings; \\['transformer'\\] run on a GPU"):
        assert apply_inference(nlp, precision="int8", runtime="torch") == []
    shim = nlp.get_pipe("transformer").model.layers[0].shims[0]
    assert not is_quantized(shim._hfmodel.transformer) and type(shim._model).__name__ == "BertModel"


def test_missing_onnx_extra_is_named(trf_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with pytest.raises(ImportError, match=r"pip install 'spacy-hybridner\[onnx\]'"):
        require_onnxruntime()
    result = CliRunner().invoke(app, ["optimize", str(trf_dir), str(tmp_path / "out"), "--runtime", "onnxruntime"])
    assert result.exit_code == 2
    message = "".join(result.output.replace("│", "").split())  # typer's box wraps the lines
    assert "pipinstall'spacy-hybridner[onnx]'" in message and "notinstalled" in message


def test_optimize_command_changes_the_windows(trf_dir, tmp_path):
    result = CliRunner().invoke(
        app,
        ["optimize", str(trf_dir), str(tmp_path / "out"), "--precision", "int8", "--window", "64", "--stride", "64"],
    )
    assert result.exit_code == 0, result.output
    assert "transformer: PyTorch at int8, windows grouped by length" in result.output
    spans = load_config(tmp_path / "out" / "config.cfg")["components"]["transformer"]["model"]["get_spans"]
    assert (spans["window"], spans["stride"]) == (64, 64)
    assert srsly.read_json(tmp_path / "out" / "inference" / "cfg.json") == {"graphs": [], "graph_precision": None}
    nlp = spacy.load(tmp_path / "out")
    assert isinstance(nlp.get_pipe("inference"), InferenceSettings)
    assert [d.ents for d in nlp.pipe(TEXTS[:2])]


def test_calibrate_runs_at_the_precision_the_pipeline_is_used_at(trf_dir, tmp_path):
    """``calibrate`` on an int8 pipeline fits the temperature on int8 predictions (the
    transformer is quantized while it does) and saves it in place, still int8 when loaded."""
    from spacy_hybridner.calibration import calibrate_and_save

    optimize(trf_dir, tmp_path / "int8", precision="int8")
    write_corpus(tmp_path / "dev.spacy")
    nlp = spacy.load(tmp_path / "int8")
    seen = []
    ner = nlp.get_pipe("ner")
    original_calibrate = ner.calibrate

    def calibrate(examples, temperatures=None):
        seen.append(is_quantized(nlp.get_pipe("transformer").model.layers[0].shims[0]._hfmodel.transformer))
        return original_calibrate(examples, temperatures=temperatures)

    ner.calibrate = calibrate
    results = calibrate_and_save(nlp, tmp_path / "dev.spacy", tmp_path / "int8")
    assert seen == [True] and set(results) == {"ner"}
    (found,) = entities_in_fresh_process(tmp_path / "int8")
    assert found["int8"] and found["runs"] == "InferenceEncoder"
    saved = srsly.read_json(tmp_path / "int8" / "ner" / "cfg")
    assert saved["temperature"] == pytest.approx(results["ner"]["temperature"])
