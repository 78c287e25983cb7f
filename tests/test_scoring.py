"""The seqeval cross-check of spaCy's entity scores, recall on unseen names, and the
multi-seed benchmark table."""

import json
from pathlib import Path

import pytest
import spacy
from spacy.training import Example
from typer.testing import CliRunner

from spacy_hybridner.cli import app
from spacy_hybridner.tools.benchmark import benchmark_markdown, check_seed_follows_system, summarize_runs
from spacy_hybridner.tools.report import write_report
from spacy_hybridner.tools.scoring import crosscheck_scores, predict_examples, recall_breakdown, training_words

from conftest import write_corpus

ROOT = Path(__file__).parent.parent

# Sentences the tiny model never saw: some names from TRAIN_DATA in new contexts, some new.
HELD_OUT = [
    ("Tim Cook visited Berlin .", [(0, 8, "PER"), (17, 23, "LOC")]),
    ("Google opened an office in Kenya .", [(0, 6, "ORG"), (27, 32, "LOC")]),
    ("Angela Merkel was born in Paris .", [(0, 13, "PER"), (26, 31, "LOC")]),
    ("Zorblax hired Quentin Vance in Lagos .", [(0, 7, "ORG"), (14, 27, "PER"), (31, 36, "LOC")]),
    ("Nothing happened here .", []),
]


def example(text, gold, pred, missing_gold=False):
    nlp = spacy.blank("en")
    ref = nlp.make_doc(text)
    gold_spans = [ref.char_span(s, e, label) for s, e, label in gold]
    ref.set_ents(gold_spans, default="missing" if missing_gold else "outside")
    doc = nlp.make_doc(text)
    doc.ents = [doc.char_span(s, e, label) for s, e, label in pred]
    return Example(doc, ref)


def test_both_scorers_give_the_hand_computed_scores():
    text = "Anna met Bob Smith in Paris and Rome with Acme Corp today"
    eg = example(
        text,
        gold=[(0, 4, "PER"), (9, 18, "PER"), (22, 27, "LOC"), (32, 36, "LOC"), (42, 51, "ORG")],
        pred=[
            (0, 4, "PER"),  # right
            (9, 12, "PER"),  # boundary error: "Bob" for "Bob Smith"
            (22, 27, "ORG"),  # type error
            (32, 36, "LOC"),  # right
            (52, 57, "DATE"),  # spurious
            (37, 41, "MISC"),  # spurious; "Acme Corp" is missed
        ],
    )
    empty = example("Nothing here", gold=[], pred=[(0, 7, "MISC")])  # one more spurious entity
    check = crosscheck_scores([eg, empty])
    # 2 right of 7 predicted and 5 gold: P 2/7, R 2/5, F 2PR/(P+R) = 1/3.
    for name in ("spacy", "seqeval"):
        scores = check[name]
        assert scores["ents_p"] == pytest.approx(2 / 7, abs=1e-12), name
        assert scores["ents_r"] == pytest.approx(2 / 5, abs=1e-12), name
        assert scores["ents_f"] == pytest.approx(1 / 3, abs=1e-12), name
        per_type = scores["ents_per_type"]
        assert (per_type["PER"]["p"], per_type["PER"]["r"]) == pytest.approx((0.5, 0.5)), name
        assert (per_type["LOC"]["p"], per_type["LOC"]["r"]) == pytest.approx((1.0, 0.5)), name
        assert (per_type["ORG"]["p"], per_type["ORG"]["r"]) == pytest.approx((0.0, 0.0)), name
    assert check["agree"] and check["max_difference"] <= 1e-9


def test_a_disagreement_is_reported():
    # Where the gold annotation is missing, spaCy's scorer ignores a prediction; the IOB2
    # tags make those tokens O, so seqeval counts it as spurious: the check must say so.
    eg = example("Anna met Bob", gold=[(0, 4, "PER")], pred=[(0, 4, "PER"), (9, 12, "PER")], missing_gold=True)
    check = crosscheck_scores([eg])
    assert check["spacy"]["ents_p"] == pytest.approx(1.0)
    assert check["seqeval"]["ents_p"] == pytest.approx(0.5)
    assert not check["agree"]


def test_recall_on_unseen_names(tmp_path):
    seen = training_words(write_corpus(tmp_path / "train.spacy"))
    assert "Paris" in seen and "PARIS" not in seen  # token texts, case-sensitive
    eg = example(
        "Michael Jordan visited PARIS and Zorblax Inc",
        gold=[(0, 14, "PER"), (23, 28, "LOC"), (33, 44, "ORG")],
        pred=[(0, 14, "PER"), (23, 28, "LOC"), (33, 40, "ORG")],  # "Zorblax" for "Zorblax Inc"
    )
    breakdown = recall_breakdown([eg], seen)
    assert breakdown["seen"] == {"gold": 1, "found": 1, "recall": 1.0}  # Michael Jordan
    assert breakdown["unseen"] == {"gold": 2, "found": 1, "recall": 0.5}  # PARIS found, Zorblax Inc not
    assert breakdown["per_type"] == {
        "LOC": {"gold": 1, "found": 1, "recall": 1.0},
        "ORG": {"gold": 1, "found": 0, "recall": 0.0},
        "PER": {"gold": 1, "found": 1, "recall": 1.0},
    }


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    path = tmp_path_factory.mktemp("scoring")
    return {"train": write_corpus(path / "train.spacy"), "test": write_corpus(path / "test.spacy", HELD_OUT)}


def test_trained_model_scores_agree_with_nlp_evaluate(trained_nlp, held_out):
    examples = predict_examples(trained_nlp, held_out["test"])
    check = crosscheck_scores(examples)
    assert check["agree"], check
    evaluated = trained_nlp.evaluate(examples)
    assert check["seqeval"]["ents_f"] == pytest.approx(evaluated["ents_f"], abs=1e-9)
    assert check["seqeval"]["ents_p"] == pytest.approx(evaluated["ents_p"], abs=1e-9)


def test_report_and_crosscheck_command_with_training_data(trained_nlp, held_out, tmp_path):
    report = write_report(trained_nlp, held_out["test"], tmp_path / "report", plots=False, train_path=held_out["train"])
    assert report["crosscheck"]["agree"]
    breakdown = report["breakdown"]
    assert breakdown["unseen"]["gold"] + breakdown["seen"]["gold"] == sum(report["support"].values()) == 9
    assert breakdown["unseen"]["gold"] == 3  # Zorblax, Quentin Vance, Lagos
    scores_md = (tmp_path / "report" / "scores.md").read_text()
    assert "seqeval" in scores_md and "with a word never seen in training" in scores_md

    trained_nlp.to_disk(tmp_path / "model")
    out = tmp_path / "crosscheck.json"
    result = CliRunner().invoke(
        app,
        [
            "crosscheck",
            str(tmp_path / "model"),
            str(held_out["test"]),
            "--train-data",
            str(held_out["train"]),
            "--output",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "they agree" in result.output
    saved = json.loads(out.read_text())
    assert saved["breakdown"] == breakdown
    assert saved["crosscheck"]["spacy"]["ents_f"] == pytest.approx(report["scores"]["ents_f"], abs=1e-9)


def test_missing_training_data_is_explained(tmp_path):
    result = CliRunner().invoke(
        app, ["crosscheck", "unused-model", str(tmp_path / "test.spacy"), "--train-data", str(tmp_path / "none.spacy")]
    )
    assert result.exit_code == 2 and "none.spacy" in result.output and "does not exist" in result.output


# --- the multi-seed benchmark table -------------------------------------------------------------
def run(name, seed, f, dev_f, wps):
    return {
        "name": name,
        "seed": seed,
        "p": f,
        "r": f,
        "f": f,
        "per_type_f": {"PER": f},
        "words_per_second": wps,
        "best_dev_f": dev_f,
        "seconds_to_best": 60.0,
        "steps_to_best": 100 * (seed + 1),
        "peak_rss_mb": 1000.0 + seed,
        "model_mb": 5.0,
        "train_command": f"python -m spacy train {name} --system.seed {seed}",
        "seqeval_f": f,
        "scorers_agree": True,
        "recall_per_type": {"PER": 0.5},
        "recall_unseen": 0.25,
        "recall_seen": 0.75,
        "n_unseen": 4,
        "n_seen": 8,
    }


def test_multi_seed_table_reports_mean_and_sd_with_each_run():
    rows = [
        run("spacy_ner", 0, 0.80, 0.90, 1000.0),
        run("spacy_ner", 1, 0.82, 0.88, 1200.0),
        run("hybrid_cpu", 0, 0.83, 0.91, 550.0),
        run("hybrid_cpu", 1, 0.83, 0.93, 550.0),
    ]
    summary = summarize_runs(rows)
    assert [s["name"] for s in summary] == ["spacy_ner", "hybrid_cpu"]
    assert summary[0]["f"]["mean"] == pytest.approx(0.81) and summary[0]["f"]["sd"] == pytest.approx(0.02**0.5 / 10)
    section = benchmark_markdown(rows, corpus="tiny", command="cmd", budget_s=60, baseline="spacy_ner", gpu_id=-1)
    # Mean ± sample sd (n - 1) of test F, dev F and words/s; the speed ratio of the means.
    assert "| spacy_ner | 2 | **81.00 ± 1.41** |" in section
    assert "| hybrid_cpu | 2 | **83.00 ± 0.00** |" in section
    assert "| 1,100 ± 141 | 1.00 | 89.00 ± 1.41 |" in section
    assert "| 550 ± 0 | 0.50 | 92.00 ± 1.41 |" in section
    assert "| spacy_ner | 1 | 82.00 | 88.00 | 1,200 | 200 | 1.0 |" in section  # each run beneath
    assert "seed` 0, 1" in section
    assert "| hybrid_cpu | 25.00 ± 0.00 | 75.00 ± 0.00 | 50.00 | 83.00 | 2 of 2 |" in section


def test_single_runs_keep_the_one_row_table():
    rows = [run("spacy_ner", 0, 0.80, 0.90, 1000.0), run("hybrid_cpu", 0, 0.83, 0.91, 550.0)]
    section = benchmark_markdown(rows, corpus="tiny", command="cmd", budget_s=60, baseline="spacy_ner", gpu_id=-1)
    assert "| model | test P | test R | test F | F PER | words/s | × spacy_ner |" in section
    assert "| hybrid_cpu | 83.00 | 83.00 | **83.00** | 83.00 | 550 | 0.55 |" in section
    assert "±" not in section and "Each run" not in section


def test_seeds_need_training_seed_to_follow_system_seed(tmp_path):
    config = tmp_path / "fixed_seed.cfg"
    text = (ROOT / "configs" / "spacy_ner.cfg").read_text()
    config.write_text(text.replace("seed = ${system.seed}", "seed = 7"))
    for shipped in sorted((ROOT / "configs").glob("*.cfg")):
        check_seed_follows_system(shipped)
    with pytest.raises(ValueError, match="seed = \\$\\{system.seed\\}"):
        check_seed_follows_system(config)
    corpus = write_corpus(tmp_path / "train.spacy")
    result = CliRunner().invoke(
        app,
        [
            "benchmark",
            str(corpus),
            str(corpus),
            str(corpus),
            "--corpus",
            "tiny",
            "--config",
            str(config),
            "--seeds",
            "2",
            "--output-dir",
            str(tmp_path / "models"),
            "--doc-path",
            str(tmp_path / "b.md"),
        ],
    )
    assert result.exit_code == 2 and "fixed_seed.cfg" in result.output
    assert not (tmp_path / "models").exists()


def test_tiny_benchmark_with_seeds(tmp_path, monkeypatch):
    from thinc.api import Config

    corpus = write_corpus(tmp_path / "train.spacy")
    monkeypatch.setenv("SPACY_CONFIG_OVERRIDES", "--training.max_steps 10 --training.eval_frequency 5")
    doc = tmp_path / "benchmarks.md"
    result = CliRunner().invoke(
        app,
        [
            "benchmark",
            str(corpus),
            str(corpus),
            str(corpus),
            "--corpus",
            "tiny",
            "--config",
            str(ROOT / "configs" / "spacy_ner.cfg"),
            "--seeds",
            "2",
            "--seed-start",
            "3",
            "--budget-minutes",
            "3",
            "--output-dir",
            str(tmp_path / "models"),
            "--doc-path",
            str(doc),
            "--speed-repeats",
            "1",
            "--speed-batch-size",
            "4",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "models" / "tiny" / "benchmark.json").read_text())
    assert [(r["name"], r["seed"]) for r in rows] == [("spacy_ner", 3), ("spacy_ner", 4)]
    for r in rows:
        best = Path(r["run_dir"]) / "model-best"
        assert best.parent.name == f"seed{r['seed']}"
        saved = Config().from_disk(best / "config.cfg")
        assert saved["system"]["seed"] == saved["training"]["seed"] == r["seed"]
        assert f"--system.seed {r['seed']}" in r["train_command"]
        # The overrides spaCy applied to the training are part of its recorded command.
        overrides = "SPACY_CONFIG_OVERRIDES='--training.max_steps 10 --training.eval_frequency 5'"
        assert r["train_command"].startswith(f"{overrides} python -m spacy train ")
        assert r["scorers_agree"] and r["seqeval_f"] == pytest.approx(r["f"], abs=1e-9)
        assert r["n_unseen"] == 0 and r["n_seen"] == 13  # the test split is the training split here
    text = doc.read_text()
    assert "| spacy_ner | 2 | **" in text and "Each run:" in text and "| spacy_ner | 4 |" in text


def test_benchmark_without_seqeval_stops_before_training(tmp_path, monkeypatch):
    import sys

    from spacy_hybridner.tools.benchmark import run_benchmark

    for name in ("seqeval", "seqeval.metrics", "seqeval.metrics.sequence_labeling"):
        monkeypatch.setitem(sys.modules, name, None)  # importing seqeval now raises ImportError
    corpus = write_corpus(tmp_path / "train.spacy")
    with pytest.raises(ImportError, match="--no-crosscheck"):
        run_benchmark(
            corpus,
            corpus,
            corpus,
            [ROOT / "configs" / "spacy_ner.cfg"],
            corpus="tiny",
            budget_s=60,
            output_dir=tmp_path / "models",
            doc_path=tmp_path / "b.md",
            baseline="spacy_ner",
            command="cmd",
            echo=print,
        )
    assert not (tmp_path / "models").exists()
