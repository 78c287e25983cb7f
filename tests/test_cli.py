"""spaCy's own command line with the plugin: fill-config and train, in subprocesses."""
import subprocess
import sys
from pathlib import Path

from thinc.api import Config

from conftest import run_python, write_corpus

ROOT = Path(__file__).parent.parent
CONFIG = ROOT / "configs" / "hybrid_cpu.cfg"


def spacy_cli(*args, cwd=None):
    result = subprocess.run(
        [sys.executable, "-m", "spacy", *map(str, args)], cwd=cwd, capture_output=True, text=True
    )
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
    train = write_corpus(tmp_path / "train.spacy")
    spacy_cli(
        "train", CONFIG, "--paths.train", train, "--paths.dev", train, "--output", tmp_path / "out",
        "--training.max_steps", 30, "--training.eval_frequency", 10,
    )
    assert (tmp_path / "out" / "model-best" / "ner" / "model").exists()
    code = (
        "import spacy\n"
        "nlp = spacy.load('out/model-best')\n"
        "doc = nlp('Michael Jeffery Jordan was born in Brooklyn, New York.')\n"
        "print(nlp.pipe_names, nlp.get_pipe('ner').labels)\n"
        "print(all(0 <= e._.confidence <= 1 for e in doc.ents))\n"
    )
    out = run_python(code, cwd=tmp_path).stdout.strip().splitlines()
    assert out[-2] == "['ner'] ('LOC', 'ORG', 'PER')"
    assert out[-1] == "True"
