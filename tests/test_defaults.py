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
        name: p.default
        for name, p in inspect.signature(build_hybrid_ner).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    assert defaults == {
        "width": 128,
        "depth": 2,
        "n_heads": 4,
        "ffn_width": 256,
        "lstm_depth": 1,
        "uni_lstm_depth": 0,
        "dropout": 0.1,
        "token_dropout": 0.0,
        "window": 256,
        "stride": 192,
        "mixed_precision": False,
        "grad_scaler_config": {},
        "nO": None,
    }


def test_builder_settings_reach_the_layer_and_the_module(trained_nlp):
    encoder = trained_nlp.get_pipe("ner").model.get_ref("encoder")
    settings = EncoderSettings(**encoder.attrs["hyper"])
    assert settings == EncoderSettings(
        width=32,
        depth=1,
        n_heads=2,
        ffn_width=64,
        lstm_depth=1,
        uni_lstm_depth=0,
        dropout=0.0,
        token_dropout=0.0,
        attention_dropout=None,
    )
    assert torch_module(encoder).settings == settings


def test_v2_builder_has_no_hyperparameter_defaults_and_is_the_default():
    """Defaults live in one place, the factory's default config (= configs/hybrid_cpu.cfg)."""
    from spacy_hybridner.architectures import build_hybrid_ner_v2

    defaults = {
        name
        for name, p in inspect.signature(build_hybrid_ner_v2).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    assert defaults == {"nO"}  # set by the component from its labels, as in spaCy's builders
    assert DEFAULT_MODEL["@architectures"] == "spacy-hybridner.HybridNER.v2"
    for path in (ROOT / "configs").glob("*.cfg"):
        assert "HybridNER.v1" not in path.read_text(encoding="utf8"), path.name


# Every name the package registers, with its parameters as released (name=default): a
# released name never changes; a change is a new version. Add new names here, never edit.
RELEASED = {
    "architectures:spacy-hybridner.CharMultiHashEmbed.v1": [
        "width",
        "attrs",
        "rows",
        "include_static_vectors",
        "nM=16",
        "nC=8",
        "char_feature='LOWER'",
        "char_rows=5000",
    ],
    "architectures:spacy-hybridner.CharMultiHashEmbed.v2": [
        "width",
        "attrs",
        "rows",
        "include_static_vectors",
        "nM=16",
        "nC=8",
        "word_dropout_rate=0.0",
        "char_cnn_width=0",
    ],
    "architectures:spacy-hybridner.CharMultiHashEmbed.v3": [
        "width",
        "attrs",
        "rows",
        "include_static_vectors",
        "nM=16",
        "nC=8",
        "word_dropout_rate=0.0",
        "char_cnn_width=0",
    ],
    "architectures:spacy-hybridner.HybridNER.v1": [
        "tok2vec",
        "width=128",
        "depth=2",
        "n_heads=4",
        "ffn_width=256",
        "lstm_depth=1",
        "uni_lstm_depth=0",
        "dropout=0.1",
        "token_dropout=0.0",
        "window=256",
        "stride=192",
        "mixed_precision=False",
        "grad_scaler_config={}",
        "nO=None",
    ],
    "architectures:spacy-hybridner.HybridNER.v2": [
        "tok2vec",
        "width",
        "depth",
        "n_heads",
        "ffn_width",
        "lstm_depth",
        "uni_lstm_depth",
        "dropout",
        "token_dropout",
        "attention_dropout",
        "window",
        "stride",
        "mixed_precision",
        "grad_scaler_config",
        "encoder_batch_tokens",
        "crf_batch_tokens",
        "nO=None",
    ],
    "callbacks:spacy-hybridner.component_learn_rates.v1": ["scales", "frozen_steps"],
    "callbacks:spacy-hybridner.initialize_frozen.v1": [],
    "factories:hybrid_inference": ["nlp", "name", "precision", "runtime", "by_length"],
    "factories:hybrid_ner": ["nlp", "name", "model", "scorer", "max_predict_words"],
    "loggers:spacy-hybridner.TensorBoardLogger.v1": ["log_dir='tensorboard'", "console_logger=None"],
    "loggers:spacy-hybridner.TrainingLogger.v1": ["path=None", "progress_bar=None"],
    "readers:spacy-hybridner.GoldSilverCorpus.v1": [
        "gold",
        "silver",
        "silver_fraction=1.0",
        "silver_ratio=None",
        "silver_weight=1.0",
        "soft_weight=0.0",
        "soft_temperature=1.0",
        "max_length=0",
        "seed=0",
    ],
    "schedules:spacy-hybridner.warmup_linear_epochs.v1": [
        "initial_rate",
        "warmup_epochs",
        "total_epochs",
        "train_path",
        "batcher",
    ],
    "tokenizers:spacy-hybridner.BoundedTokenizer.v1": ["max_run_chars=256"],
}


def test_every_registered_name_keeps_its_released_signature():
    """A released thinc/spaCy name never changes (a saved config means what it meant):
    the parameters and defaults of every registered function are the ones released."""
    from spacy.util import registry

    found = {}
    for registry_name in registry.get_registry_names():
        for name, func in getattr(registry, registry_name).get_all().items():
            if getattr(func, "__module__", "").startswith("spacy_hybridner"):
                found[f"{registry_name}:{name}"] = [
                    p.name if p.default is inspect.Parameter.empty else f"{p.name}={p.default!r}"
                    for p in inspect.signature(func).parameters.values()
                ]
    assert found == RELEASED


def test_shipped_configs_name_the_newest_versions():
    for path in sorted((Path(__file__).parent.parent / "configs").glob("*.cfg")):
        text = path.read_text(encoding="utf8")
        assert "CharMultiHashEmbed.v2" not in text and "CharMultiHashEmbed.v1" not in text, path.name


def test_a_pipeline_saved_with_char_multi_hash_embed_v2_loads(tmp_path):
    """Pipelines saved by 0.2.0 name CharMultiHashEmbed.v2 with char_cnn_width: they load,
    and v2 builds the same layers as v3 (the same weights load into either)."""
    import copy

    from conftest import TINY_MODEL, assert_same_entities, ents_with_confidence, train_tiny

    model = copy.deepcopy(TINY_MODEL)
    model["tok2vec"]["embed"] = {
        "@architectures": "spacy-hybridner.CharMultiHashEmbed.v2",
        "width": 32,
        "attrs": ["NORM", "PREFIX", "SUFFIX", "SHAPE"],
        "rows": [500, 100, 200, 200],
        "include_static_vectors": False,
        "nM": 8,
        "nC": 4,
        "char_cnn_width": 16,
    }
    nlp = train_tiny(n_iter=30, model=model)
    nlp.to_disk(tmp_path / "v2")
    texts = ["Tim Cook visited Berlin .", "Apple hired Angela Merkel ."]
    loaded = spacy.load(tmp_path / "v2")
    assert loaded.config["components"]["ner"]["model"]["tok2vec"]["embed"]["char_cnn_width"] == 16
    assert_same_entities(ents_with_confidence(loaded.pipe(texts)), ents_with_confidence(nlp.pipe(texts)))
