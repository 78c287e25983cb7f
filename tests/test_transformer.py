"""HybridNER on a pretrained transformer through spacy-transformers, offline: the tests
build a tiny random BERT with its WordPiece vocabulary in a temporary folder."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import spacy
import torch
from spacy.util import load_config, load_model_from_config
from thinc.api import fix_random_seed

from spacy_hybridner.layers import torch_module

from conftest import (
    TRAIN_DATA,
    assert_same_entities,
    ents_with_confidence,
    make_examples,
    reload_and_predict,
    write_corpus,
)

ROOT = Path(__file__).parent.parent
CONFIG = ROOT / "configs" / "hybrid_trf.cfg"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def trf_nlp(model_path: Path, train_path: Path):
    """The shipped config with the tiny BERT, as ``spacy train`` resolves it: interpolated,
    with the training data that its schedule is sized by (epochs of that data)."""
    config = load_config(
        CONFIG, overrides={"variables.transformer": str(model_path), "paths.train": str(train_path)}, interpolate=True
    )
    return load_model_from_config(config, auto_fill=True, validate=True)


def test_trf_config_trains_saves_and_reloads(tiny_bert, tmp_path):
    fix_random_seed(0)
    write_corpus(tmp_path / "train.spacy")
    nlp = trf_nlp(tiny_bert, tmp_path / "train.spacy")
    examples = make_examples(nlp)
    optimizer = nlp.initialize(lambda: examples)
    optimizer.learn_rate = 0.01
    losses = [nlp.update(examples, sgd=optimizer)["ner"] for _ in range(40)]
    assert losses[-1] < losses[0] / 2
    texts = [text for text, _ in TRAIN_DATA]
    assert_same_entities(reload_and_predict(nlp, texts, tmp_path), ents_with_confidence(nlp.pipe(texts)))


def test_frozen_backbone_trains_only_the_head(tiny_bert, tmp_path):
    """spaCy's frozen_components + annotating_components: the transformer's weights stay
    exactly those of the pretrained model while the head learns."""
    write_corpus(tmp_path / "train.spacy")
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "spacy",
            "train",
            str(CONFIG),
            "--output",
            str(tmp_path / "out"),
            "--paths.train",
            str(tmp_path / "train.spacy"),
            "--paths.dev",
            str(tmp_path / "train.spacy"),
            "--variables.transformer",
            str(tiny_bert),
            "--training.max_steps",
            "12",
            "--training.eval_frequency",
            "6",
            "--training.frozen_components",
            '["transformer"]',
            "--training.annotating_components",
            '["transformer"]',
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    trained = spacy.load(tmp_path / "out" / "model-last")
    hf_model = trained.get_pipe("transformer").model.transformer
    from transformers import BertModel

    original = BertModel.from_pretrained(tiny_bert).state_dict()
    for name, value in hf_model.state_dict().items():
        if name in original:
            assert torch.equal(value.cpu(), original[name]), name
    ner = trained.get_pipe("ner")
    transitions = torch_module(ner.model.get_ref("crf")).transitions
    assert transitions.abs().sum() > 0  # the head did train
