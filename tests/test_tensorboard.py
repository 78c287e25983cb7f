"""The TensorBoard logger: what spaCy's training loop hands it ends up in the event file."""

import io
import time

import pytest
from spacy.cli.train import train
from spacy.util import registry
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from thinc.api import Config

from conftest import ROOT_CONFIG, train_tiny, write_corpus


def read_scalars(log_dir):
    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def info(step, loss, f, words, seconds):
    """An info dict as spaCy's training loop gives a logger at an evaluation step."""
    return {
        "epoch": 1,
        "step": step,
        "score": f,
        "losses": {"ner": loss},
        "checkpoints": [],
        "seconds": seconds,
        "words": words,
        "other_scores": {
            "ents_f": f,
            "ents_p": 0.5,
            "ents_r": 0.4,
            "speed": 1000.0,
            "ents_per_type": {"PER": {"f": f}},
        },
    }


def test_losses_scores_and_words_per_second_are_written(tmp_path, monkeypatch):
    nlp = train_tiny(n_iter=1)
    clock = [100.0]
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])  # wall time, advanced by hand below
    chained = io.StringIO()
    console = registry.loggers.get("spacy.ConsoleLogger.v3")(progress_bar=None)
    logger = registry.loggers.get("spacy-hybridner.TensorBoardLogger.v1")(
        log_dir=str(tmp_path / "tb"), console_logger=console
    )
    log_step, finalize = logger(nlp, stdout=chained, stderr=io.StringIO())
    clock[0] = 102.0
    log_step(info(10, 4.5, 0.25, 500, 1))  # 500 words in 2 s
    log_step(None)  # a step without evaluation
    clock[0] = 106.0
    log_step(info(20, 2.0, 0.75, 1000, 2))  # 500 more in 4 s
    finalize()
    scalars = read_scalars(tmp_path / "tb")
    assert scalars == {
        "loss/ner": [(10, 4.5), (20, 2.0)],
        "score": [(10, 0.25), (20, 0.75)],
        "dev/ents_f": [(10, 0.25), (20, 0.75)],
        "dev/ents_p": [(10, 0.5), (20, 0.5)],
        "dev/ents_r": [(10, pytest.approx(0.4)), (20, pytest.approx(0.4))],  # stored as float32
        "dev/speed": [(10, 1000.0), (20, 1000.0)],
        "dev/ents_per_type/PER/f": [(10, 0.25), (20, 0.75)],
        "words": [(10, 500.0), (20, 1000.0)],
        "words_per_second": [(10, 250.0), (20, 125.0)],
    }
    # The chained console logger printed its table: a header and a row per evaluation.
    table = [line.split() for line in chained.getvalue().splitlines()]
    assert table[0] == ["E", "#", "LOSS", "NER", "ENTS_F", "ENTS_P", "ENTS_R", "SCORE"]
    assert table[2:] == [
        ["1", "10", "4.50", "25.00", "50.00", "40.00", "0.25"],
        ["1", "20", "2.00", "75.00", "50.00", "40.00", "0.75"],
    ]


def test_spacy_train_writes_an_event_file(tmp_path):
    corpus = write_corpus(tmp_path / "train.spacy")
    config = Config().from_disk(ROOT_CONFIG, interpolate=False)
    config["training"]["logger"] = {"@loggers": "spacy-hybridner.TensorBoardLogger.v1", "log_dir": str(tmp_path / "tb")}
    config.to_disk(tmp_path / "config.cfg")
    train(
        tmp_path / "config.cfg",
        tmp_path / "out",
        overrides={
            "paths.train": str(corpus),
            "paths.dev": str(corpus),
            "training.max_steps": 10,
            "training.eval_frequency": 5,
        },
    )
    scalars = read_scalars(tmp_path / "tb")
    assert [step for step, _ in scalars["loss/ner"]] == [0, 5, 10]
    assert {"score", "dev/ents_f", "dev/ents_p", "dev/ents_r", "words", "words_per_second"} <= set(scalars)
    assert all(0.0 <= value <= 1.0 for _, value in scalars["dev/ents_f"])
