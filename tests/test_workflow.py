"""The spaCy project workflow end to end on a slice of the shipped data, and the package
it builds installed into a fresh virtual environment."""

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import numpy
import pytest

from conftest import assert_same_entities

ROOT = Path(__file__).parent.parent
# spaCy's own way to override config values from the environment.
SMOKE_TRAINING = {"SPACY_CONFIG_OVERRIDES": "--training.max_steps 30 --training.eval_frequency 10"}


def run(cmd, cwd, timeout=900, env=None):
    result = subprocess.run(
        [str(c) for c in cmd],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, OMP_NUM_THREADS="1", **(env or {})),
    )
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A copy of the project files after `spacy project run all` on 400 sentences."""
    path = tmp_path_factory.mktemp("project")
    shutil.copy(ROOT / "project.yml", path)
    for folder in ("configs", "assets"):
        shutil.copytree(ROOT / folder, path / folder)
    args = ["--vars.limit", "400", "--vars.showcase_docs", "3"]
    result = run([sys.executable, "-m", "spacy", "project", "run", "all", ".", *args], cwd=path, env=SMOKE_TRAINING)
    return path, result.stdout, args


def test_workflow_all_runs_end_to_end(project):
    path, stdout, _ = project
    assert (path / "corpus" / "gmb" / "test.spacy").exists()
    assert (path / "training" / "gmb" / "hybrid_cpu" / "model-best" / "ner" / "model").exists()
    assert (path / "training" / "gmb" / "hybrid_cpu" / "model-calibrated" / "ner" / "model").exists()
    assert "temperature" in stdout
    metrics = json.loads((path / "metrics" / "gmb" / "hybrid_cpu.json").read_text())
    assert set(metrics) >= {"ents_p", "ents_r", "ents_f", "ents_per_type"}
    assert "NER (per type)" in stdout  # spacy evaluate printed P/R/F per type
    html = (path / "metrics" / "gmb" / "hybrid_cpu_showcase.html").read_text()
    assert "<title>displaCy</title>" in html and html.count("<figure") == 3
    assert list((path / "packages").glob("en_hybridner_gmb-0.1.0/dist/*.tar.gz"))


def test_rerun_skips_unchanged_steps(project):
    path, _, args = project
    result = run([sys.executable, "-m", "spacy", "project", "run", "all", ".", *args], cwd=path, env=SMOKE_TRAINING)
    for step in ("convert-gmb", "train-gmb", "calibrate-gmb", "evaluate-gmb", "showcase-gmb"):
        assert f"Skipping '{step}': nothing changed" in result.stdout


def test_package_installs_into_a_fresh_venv_and_predicts_the_same(project, tmp_path):
    path, _, _ = project
    sdist = next((path / "packages").glob("en_hybridner_gmb-0.1.0/dist/*.tar.gz"))
    meta = json.loads((path / "packages" / "en_hybridner_gmb-0.1.0" / "meta.json").read_text())
    assert any(req.startswith("spacy-hybridner") for req in meta["requirements"])
    texts = [
        "Thousands of demonstrators have marched through London to protest the war in Iraq .",
        "President Bush met Prime Minister Tony Blair in Washington on Tuesday .",
    ]
    code = (
        "import json, sys, spacy\n"
        "nlp = spacy.load(sys.argv[1])\n"
        "texts = json.loads(sys.argv[2])\n"
        "scores = nlp.get_pipe('ner').model.predict([nlp.make_doc(t) for t in texts])\n"
        "ents = [[(e.start_char, e.end_char, e.label_, e._.confidence) for e in d.ents]\n"
        "        for d in nlp.pipe(texts)]\n"
        "print(json.dumps({'ents': ents, 'scores': [s.tolist() for s in scores]}))\n"
    )
    model_dir = path / "training" / "gmb" / "hybrid_cpu" / "model-calibrated"
    expected = run([sys.executable, "-c", code, model_dir, json.dumps(texts)], cwd=tmp_path).stdout
    env_dir = tmp_path / "fresh-venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    install = [python, "-m", "pip", "install", "--quiet", "-c", ROOT / "constraints.txt", ROOT, sdist]
    run(install, cwd=tmp_path, timeout=1200)
    got = run([python, "-c", code, "en_hybridner_gmb", json.dumps(texts)], cwd=tmp_path).stdout
    got, expected = json.loads(got.splitlines()[-1]), json.loads(expected.splitlines()[-1])
    assert_same_entities(got["ents"], expected["ents"])  # another venv: the same up to rounding
    assert len(got["scores"]) == len(expected["scores"])
    for a, b in zip(got["scores"], expected["scores"]):
        numpy.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_workflow_finetune_runs_end_to_end(tmp_path, tiny_bert):
    """``spacy project run finetune`` with --vars.config hybrid_trf and a transformer folder:
    convert, fine-tune (the CPU recipe), calibrate, evaluate, showcase, package."""
    for folder in ("configs", "assets"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    shutil.copy(ROOT / "project.yml", tmp_path)
    args = [
        "--vars.limit",
        "200",
        "--vars.showcase_docs",
        "2",
        "--vars.config",
        "hybrid_trf",
        "--vars.transformer",
        str(tiny_bert),
    ]
    env = {**SMOKE_TRAINING, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = run([sys.executable, "-m", "spacy", "project", "run", "finetune", ".", *args], cwd=tmp_path, env=env)
    assert "temperature" in result.stdout
    model = tmp_path / "training" / "gmb" / "hybrid_trf" / "model-calibrated"
    assert (model / "transformer" / "model").exists() and (model / "ner" / "model").exists()
    metrics = json.loads((tmp_path / "metrics" / "gmb" / "hybrid_trf.json").read_text())
    assert "ents_f" in metrics
    assert list((tmp_path / "packages").glob("en_hybridner_gmb-0.1.0/dist/*.tar.gz"))


def test_workflow_distill_runs_end_to_end(project):
    """``spacy project run distill`` with the pipeline trained by ``all`` as the teacher:
    unlabeled text (train split + GMB), the teacher's silver DocBins, the student on gold +
    silver, calibration, evaluation, showcase, package; the student loads with `import
    spacy` alone. (Last in this file: it adds to the shared project folder.)"""
    path, _, args = project
    teacher = "training/gmb/hybrid_cpu/model-calibrated"
    distill = [*args, "--vars.config", "hybrid_cpu_distill", "--vars.teacher", teacher]
    result = run(
        [sys.executable, "-m", "spacy", "project", "run", "distill", ".", *distill], cwd=path, env=SMOKE_TRAINING
    )
    texts = [json.loads(line) for line in (path / "corpus" / "unlabeled" / "text.jsonl").read_text().splitlines()]
    assert len(texts) > 0 and all(set(r) == {"id", "text"} for r in texts)
    silver = path / "corpus" / "gmb" / "silver"
    assert (silver / "_SUCCESS").exists() and list(silver.glob("*.spacy"))
    student = path / "training" / "gmb" / "hybrid_cpu_distill"
    assert (student / "model-calibrated" / "ner" / "model").exists()
    assert "temperature" in result.stdout
    metrics = json.loads((path / "metrics" / "gmb" / "hybrid_cpu_distill.json").read_text())
    assert "ents_f" in metrics
    code = (
        "import json, spacy\n"
        "nlp = spacy.load('training/gmb/hybrid_cpu_distill/model-calibrated')\n"
        "doc = nlp('Angela Merkel visited Paris on Monday .')\n"
        "print(json.dumps([nlp.pipe_names, [e._.confidence for e in doc.ents]]))\n"
    )
    out = run([sys.executable, "-c", code], cwd=path).stdout.strip().splitlines()[-1]
    pipes, confidences = json.loads(out)
    assert pipes == ["ner"] and all(0.0 <= c <= 1.0 for c in confidences)
