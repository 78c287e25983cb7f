"""The TensorBoard logger: what spaCy's training loop hands it ends up in the event file."""
import io

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
        "epoch": 1, "step": step, "score": f, "losses": {"ner": loss}, "checkpoints": [], "seconds": seconds,
        "words": words,
        "other_scores": {"ents_f": f, "ents_p": 0.5, "speed": 1000.0, "ents_per_type": {"PER": {"f": f}}},
    }


def test_losses_scores_and_words_per_second_are_written(tmp_path):
    nlp = train_tiny(n_iter=1)
    chained = io.StringIO()
    console = registry.loggers.get("spacy.ConsoleLogger.v3")(progress_bar=None)
    logger = registry.loggers.get("spacy-hybridner.TensorBoardLogger.v1")(
        log_dir=str(tmp_path / "tb"), console_logger=console,
    )
    log_step, finalize = logger(nlp, stdout=chained, stderr=io.StringIO())
    log_step(info(10, 4.5, 0.25, 500, 1))
    log_step(None)  # a step without evaluation
    log_step(info(20, 2.0, 0.75, 1000, 2))
    finalize()
    scalars = read_scalars(tmp_path / "tb")
    assert scalars["loss/ner"] == [(10, 4.5), (20, 2.0)]
    assert scalars["score"] == [(10, 0.25), (20, 0.75)]
    assert scalars["dev/ents_f"] == [(10, 0.25), (20, 0.75)]
    assert scalars["dev/ents_per_type/PER/f"] == [(10, 0.25), (20, 0.75)]
    assert scalars["words"] == [(10, 500.0), (20, 1000.0)]
    assert [step for step, _ in scalars["words_per_second"]] == [10, 20]
    assert all(rate > 0 for _, rate in scalars["words_per_second"])
    assert "ents_f" not in scalars and "dev/speed" in scalars
    assert "20" in chained.getvalue()  # the chained console logger printed its table


def test_spacy_train_writes_an_event_file(tmp_path):
    corpus = write_corpus(tmp_path / "train.spacy")
    config = Config().from_disk(ROOT_CONFIG, interpolate=False)
    config["training"]["logger"] = {
        "@loggers": "spacy-hybridner.TensorBoardLogger.v1", "log_dir": str(tmp_path / "tb"),
    }
    config.to_disk(tmp_path / "config.cfg")
    train(tmp_path / "config.cfg", tmp_path / "out", overrides={
        "paths.train": str(corpus), "paths.dev": str(corpus),
        "training.max_steps": 10, "training.eval_frequency": 5,
    })
    scalars = read_scalars(tmp_path / "tb")
    assert [step for step, _ in scalars["loss/ner"]] == [0, 5, 10]
    assert {"score", "dev/ents_f", "dev/ents_p", "dev/ents_r", "words", "words_per_second"} <= set(scalars)
    assert all(0.0 <= value <= 1.0 for _, value in scalars["dev/ents_f"])
