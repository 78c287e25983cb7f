"""spaCy's own command line with the plugin: fill-config and train, in subprocesses."""

import json
import subprocess
import sys
from pathlib import Path

import spacy
from thinc.api import Config

from conftest import TINY_MODEL, TRAIN_DATA, assert_same_entities, ents_with_confidence, run_python, write_corpus

ROOT = Path(__file__).parent.parent
CONFIG = ROOT / "configs" / "hybrid_cpu.cfg"


def spacy_cli(*args, cwd=None):
    result = subprocess.run([sys.executable, "-m", "spacy", *map(str, args)], cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, f"spacy {args[0]} failed:\n{result.stdout}\n{result.stderr}"
    return result


def test_fill_config_completes_a_minimal_config(tmp_path):
    (tmp_path / "base.cfg").write_text(
        '[nlp]\nlang = "en"\npipeline = ["ner"]\n\n[components]\n\n[components.ner]\nfactory = "hybrid_ner"\n'
    )
    spacy_cli("init", "fill-config", tmp_path / "base.cfg", tmp_path / "full.cfg")
    full = Config().from_disk(tmp_path / "full.cfg")
    assert full["components"]["ner"]["model"]["@architectures"] == "spacy-hybridner.HybridNER.v2"
    assert full["components"]["ner"]["scorer"]["@scorers"] == "spacy.ner_scorer.v1"
    assert full["training"]["score_weights"]["ents_f"] == 1.0


def test_shipped_config_is_complete(tmp_path):
    """fill-config has nothing to add to configs/hybrid_cpu.cfg."""
    spacy_cli("init", "fill-config", CONFIG, tmp_path / "filled.cfg")
    original = Config().from_disk(CONFIG, interpolate=False)
    filled = Config().from_disk(tmp_path / "filled.cfg", interpolate=False)
    assert filled == original


def test_spacy_train_cli_and_load_without_import(tmp_path):
    """``spacy train`` with the plugin's component (the shipped config with the tiny model,
    which learns TRAIN_DATA in a few dozen steps), then ``spacy.load`` in a fresh interpreter
    that imports only spacy: the pipeline finds the entities it was trained on, with the
    confidences it has in this process."""
    train = write_corpus(tmp_path / "train.spacy")
    config = Config().from_disk(CONFIG, interpolate=False)
    config["components"]["ner"]["model"] = TINY_MODEL
    config.to_disk(tmp_path / "tiny.cfg")
    spacy_cli(
        "train",
        tmp_path / "tiny.cfg",
        "--paths.train",
        train,
        "--paths.dev",
        train,
        "--output",
        tmp_path / "out",
        "--training.max_steps",
        100,
        "--training.eval_frequency",
        10,
    )
    best = tmp_path / "out" / "model-best"
    assert (best / "ner" / "model").exists()
    assert json.loads((best / "meta.json").read_text())["performance"]["ents_f"] == 1.0  # dev is the train split
    code = (
        "import json, spacy\n"
        "nlp = spacy.load('out/model-best')\n"
        f"docs = nlp.pipe({[text for text, _ in TRAIN_DATA]!r})\n"
        "ents = [[(e.start_char, e.end_char, e.label_, e._.confidence) for e in d.ents] for d in docs]\n"
        "print(json.dumps({'pipes': nlp.pipe_names, 'labels': nlp.get_pipe('ner').labels, 'ents': ents}))\n"
    )
    out = json.loads(run_python(code, cwd=tmp_path).stdout.strip().splitlines()[-1])
    assert out["pipes"] == ["ner"] and out["labels"] == ["LOC", "ORG", "PER"]
    got = [[tuple(e) for e in doc] for doc in out["ents"]]
    assert [[e[:3] for e in doc] for doc in got] == [ents for _, ents in TRAIN_DATA]
    assert all(0.0 < e[3] <= 1.0 for doc in got for e in doc)
    in_process = spacy.load(best)
    assert_same_entities(got, ents_with_confidence(in_process.pipe(text for text, _ in TRAIN_DATA)))
