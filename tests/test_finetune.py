"""The CPU fine-tuning recipe of configs/hybrid_trf.cfg and configs/spacy_ner_trf.cfg: a
schedule sized in epochs of the training data and per-component learning rates."""

import os
import subprocess
import sys
from pathlib import Path

import numpy
import pytest
import spacy
import torch
from spacy.tokens import DocBin
from spacy.training.batchers import minibatch_by_padded_size
from spacy.util import load_config, registry
from test_transformer import offline, trf_nlp  # noqa: F401  (offline: a fixture)
from thinc.api import Adam

from spacy_hybridner.callbacks import ComponentLearnRates
from spacy_hybridner.schedules import steps_per_epoch, warmup_linear_epochs

from conftest import TRAIN_DATA, make_examples, write_corpus

ROOT = Path(__file__).parent.parent


def _batcher(size):
    # through registry.resolve, which fills spaCy's registry first (a bare registry.batchers.get
    # finds nothing when this test runs before any other has resolved a config)
    config = {"@batchers": "spacy.batch_by_padded.v1", "size": size, "buffer": 256, "discard_oversize": True}
    return registry.resolve({"b": config})["b"]


def test_steps_per_epoch_counts_the_batches_of_the_config_batcher(tmp_path):
    write_corpus(tmp_path / "train.spacy", TRAIN_DATA * 10)
    docs = list(DocBin().from_disk(tmp_path / "train.spacy").get_docs(spacy.blank("en").vocab))
    expected = len(list(minibatch_by_padded_size(docs, size=40, buffer=256, discard_oversize=True)))
    assert expected > 3
    assert steps_per_epoch(tmp_path / "train.spacy", _batcher(40)) == expected
    assert steps_per_epoch(tmp_path, _batcher(40)) == expected  # a folder of .spacy files
    with pytest.raises(ValueError, match="no training data at .*paths. train"):
        steps_per_epoch(tmp_path / "missing.spacy", _batcher(40))


@pytest.mark.parametrize("name", ["hybrid_trf", "spacy_ner_trf"])
def test_shipped_schedule_peaks_inside_the_configured_steps_and_ends_at_zero(name, tmp_path):
    """The schedule of both trf configs, resolved as ``spacy train`` resolves it: the
    rate rises to its peak within the first epoch and falls to 0 at the last step of
    ``max_epochs`` (not after 20,000 GPU-sized steps)."""
    write_corpus(tmp_path / "train.spacy", TRAIN_DATA * 30)
    config = load_config(
        ROOT / "configs" / f"{name}.cfg",
        overrides={"paths.train": str(tmp_path / "train.spacy"), "training.batcher.size": 100},
        interpolate=True,
    )
    training = config["training"]
    n = steps_per_epoch(tmp_path / "train.spacy", registry.resolve({"b": training["batcher"]})["b"])
    total = training["max_epochs"] * n
    assert training["max_steps"] == 0 and training["max_epochs"] >= 1
    optimizer = registry.resolve({"o": training["optimizer"]})["o"]
    rates = []
    for _ in range(total + 3):
        rates.append(optimizer.learn_rate)
        optimizer.step_schedules()
    peak = training["optimizer"]["learn_rate"]["initial_rate"]
    assert max(rates) == pytest.approx(peak)
    assert 0 < int(numpy.argmax(rates)) <= n  # warm-up within the first epoch
    assert rates[0] == 0 and rates[total] == 0 and rates[total - 1] > 0


def test_warmup_linear_epochs_needs_training_data_only_when_training():
    """The optimizer takes the first rate when the config is resolved, with no data; the
    data is read (and missing data named) when training asks for the second."""
    rates = warmup_linear_epochs(1e-3, 0.5, 4, None, _batcher(10))
    assert next(rates) == 0.0
    with pytest.raises(ValueError, match="paths. train"):
        next(rates)
    rates = warmup_linear_epochs(1e-3, 0.5, 4, "missing.spacy", _batcher(10))
    assert next(rates) == 0.0
    with pytest.raises(ValueError, match="no training data at 'missing.spacy'"):
        next(rates)
    with pytest.raises(ValueError, match="warmup_epochs"):
        warmup_linear_epochs(1e-3, 5, 4, "x.spacy", _batcher(10))


@pytest.mark.parametrize("warmup_epochs", [0.0, 0.5, 1.0])
def test_warmup_linear_epochs_is_thincs_warmup_linear_in_epochs(tmp_path, warmup_epochs):
    from thinc.api import warmup_linear

    write_corpus(tmp_path / "train.spacy", TRAIN_DATA * 30)
    n = steps_per_epoch(tmp_path / "train.spacy", _batcher(40))
    ours = warmup_linear_epochs(1e-3, warmup_epochs, 3, str(tmp_path / "train.spacy"), _batcher(40))
    thincs = warmup_linear(1e-3, warmup_steps=round(warmup_epochs * n), total_steps=3 * n)
    assert [next(ours) for _ in range(3 * n + 2)] == pytest.approx([next(thincs) for _ in range(3 * n + 2)])


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "configs").glob("*.cfg")))
def test_spacy_debug_config_validates_every_shipped_config_without_data(name, tmp_path):
    """spaCy's readers and schedules touch no data until training starts, and neither do
    ours: `spacy debug config` validates every shipped config with paths to data that is
    not there yet (as before a project's `convert` step)."""
    from spacy.cli.debug_config import debug_config

    missing = str(tmp_path / "not-yet.spacy")
    overrides = {"paths.train": missing, "paths.dev": missing}
    text = (ROOT / "configs" / f"{name}.cfg").read_text(encoding="utf8")
    if "paths.silver" in text or "silver = " in text:
        overrides["paths.silver"] = str(tmp_path / "silver")
    debug_config(ROOT / "configs" / f"{name}.cfg", overrides=overrides)  # raises or exits non-zero on a problem


class RecordingAdam:
    """Adam that records the ``lr_scale`` it was called with for each parameter key."""

    def __init__(self):
        self.optimizer = Adam(0.01)
        self.scales = {}

    def __call__(self, key, weights, gradient, *, lr_scale=1.0):
        self.scales[key] = lr_scale
        return self.optimizer(key, weights, gradient, lr_scale=lr_scale)

    def __getattr__(self, name):
        return getattr(self.optimizer, name)


def _update(nlp, examples, optimizer, callback, step):
    callback(nlp, {"step": step, "epoch": 0})
    nlp.update(examples, sgd=False)
    for _, pipe in nlp.pipeline:
        pipe.finish_update(optimizer)


def test_component_learn_rates_hold_then_scale_the_transformer(tiny_bert, tmp_path):
    write_corpus(tmp_path / "train.spacy")
    nlp = trf_nlp(tiny_bert, tmp_path / "train.spacy")
    examples = make_examples(nlp)
    nlp.initialize(lambda: examples)
    hf = nlp.get_pipe("transformer").model.transformer
    before = {k: v.clone() for k, v in hf.state_dict().items()}
    callback = ComponentLearnRates({"transformer": 0.05}, {"transformer": 2})
    optimizer = RecordingAdam()
    transformer_keys = {id(s) for node in nlp.get_pipe("transformer").model.walk() for s in node.shims}
    transformer_keys |= {s.id for node in nlp.get_pipe("transformer").model.walk() for s in node.shims}

    def scales_of(transformer: bool):
        return {v for (owner, _), v in optimizer.scales.items() if (owner in transformer_keys) == transformer}

    for step in range(2):
        _update(nlp, examples, optimizer, callback, step)
        assert scales_of(True) == {0.0} and scales_of(False) == {1.0}
    after_hold = hf.state_dict()
    assert all(torch.equal(after_hold[k], v) for k, v in before.items())  # held still
    optimizer.scales.clear()
    _update(nlp, examples, optimizer, callback, 2)
    assert scales_of(True) == {0.05} and scales_of(False) == {1.0}
    assert any(not torch.equal(hf.state_dict()[k], v) for k, v in before.items())  # moves now


def test_component_learn_rates_explain_their_errors(tiny_bert):
    nlp = spacy.blank("en")
    nlp.add_pipe("ner")
    with pytest.raises(ValueError, match="no component 'transformer'"):
        ComponentLearnRates({"transformer": 0.1}, {})(nlp, {"step": 0, "epoch": 0})
    with pytest.raises(ValueError, match="Cython class"):
        ComponentLearnRates({"ner": 2.0}, {})(nlp, {"step": 0, "epoch": 0})
    with pytest.raises(ValueError, match="must not be negative"):
        ComponentLearnRates({"ner": -1.0}, {})


@pytest.mark.parametrize("name", ["hybrid_trf", "spacy_ner_trf"])
def test_recipe_fine_tunes_with_spacy_train(name, tiny_bert, tmp_path):
    """``spacy train`` with the shipped recipe: a few epochs on a tiny random BERT, the
    transformer fine-tuned (its weights move) and the best model loads with spaCy alone."""
    write_corpus(tmp_path / "train.spacy", TRAIN_DATA * 4)
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "spacy",
            "train",
            str(ROOT / "configs" / f"{name}.cfg"),
            "--output",
            str(tmp_path / "out"),
            "--paths.train",
            str(tmp_path / "train.spacy"),
            "--paths.dev",
            str(tmp_path / "train.spacy"),
            "--variables.transformer",
            str(tiny_bert),
            "--variables.epochs",
            "3",
            "--training.batcher.size",
            "60",
            "--training.eval_frequency",
            "2",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    from transformers import BertModel

    original = BertModel.from_pretrained(tiny_bert).state_dict()
    trained = spacy.load(tmp_path / "out" / "model-last")
    tuned = trained.get_pipe("transformer").model.transformer.state_dict()
    assert any(not torch.equal(tuned[k].cpu(), v) for k, v in original.items() if k in tuned)
    best = spacy.load(tmp_path / "out" / "model-best")
    assert best("Michael Jordan was born in Brooklyn .") is not None
