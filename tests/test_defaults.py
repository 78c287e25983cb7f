"""One source of defaults: the factory's default model is the shipped CPU config, the
released v1 signature keeps its defaults, and the encoder's settings reach the module."""
import inspect
from pathlib import Path

import spacy
from thinc.api import Config

from spacy_hybridner.architectures import build_hybrid_ner
from spacy_hybridner.layers import torch_module
from spacy_hybridner.modules import EncoderSettings
from spacy_hybridner.pipeline_component import DEFAULT_MODEL

ROOT = Path(__file__).parent.parent


def test_factory_default_model_is_the_shipped_cpu_config():
    shipped = Config().from_disk(ROOT / "configs" / "hybrid_cpu.cfg", interpolate=False)
    assert dict(DEFAULT_MODEL) == dict(shipped["components"]["ner"]["model"])
    nlp = spacy.blank("en")
    nlp.add_pipe("hybrid_ner", name="ner")
    assert nlp.config["components"]["ner"]["model"] == shipped["components"]["ner"]["model"]


def test_released_v1_signature_keeps_its_defaults():
    """Configs and saved pipelines that leave a setting out keep meaning what they meant."""
    defaults = {
        name: p.default for name, p in inspect.signature(build_hybrid_ner).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    assert defaults == {
        "width": 128, "depth": 2, "n_heads": 4, "ffn_width": 256, "lstm_depth": 1,
        "uni_lstm_depth": 0, "dropout": 0.1, "token_dropout": 0.0, "window": 256,
        "stride": 192, "mixed_precision": False, "grad_scaler_config": {}, "nO": None,
        "attention_dropout": None,
    }


def test_builder_settings_reach_the_layer_and_the_module(trained_nlp):
    encoder = trained_nlp.get_pipe("ner").model.get_ref("encoder")
    settings = EncoderSettings(**encoder.attrs["hyper"])
    assert settings == EncoderSettings(
        width=32, depth=1, n_heads=2, ffn_width=64, lstm_depth=1, uni_lstm_depth=0, dropout=0.0, token_dropout=0.0,
        attention_dropout=None,
    )
    assert torch_module(encoder).settings == settings


def test_v2_builder_has_no_hyperparameter_defaults_and_is_the_default():
    """Defaults live in one place, the factory's default config (= configs/hybrid_cpu.cfg)."""
    from spacy_hybridner.architectures import build_hybrid_ner_v2

    defaults = {
        name for name, p in inspect.signature(build_hybrid_ner_v2).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    assert defaults == {"nO"}  # set by the component from its labels, as in spaCy's builders
    assert DEFAULT_MODEL["@architectures"] == "spacy-hybridner.HybridNER.v2"
    for path in (ROOT / "configs").glob("*.cfg"):
        assert "HybridNER.v1" not in path.read_text(encoding="utf8"), path.name
