"""Distillation: unlabeled text from corpora, a teacher's annotations as silver data, the
gold + silver corpus reader, weighted losses, and a student trained through `spacy train`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy
import pytest
import spacy
from spacy.tokens import DocBin
from spacy.training import Example
from spacy.util import registry
from typer.testing import CliRunner

from spacy_hybridner.cli import app
from spacy_hybridner.distill import WEIGHT_KEY, example_weight
from spacy_hybridner.readers import GoldSilverCorpus

from conftest import TRAIN_DATA, make_examples, run_python, write_corpus

ROOT = Path(__file__).parent.parent

SILVER_TEXTS = [
    "Sundar Pichai visited Tokyo .",
    "Amazon opened an office in Madrid .",
    "Nothing happened here .",
    "Emmanuel Macron met Siemens managers in Munich .",
    "Toyota hired Ana Lopez in Lima .",
    "Rain fell all day .",
    "Olaf Scholz flew to Oslo .",
    "Netflix left Rome .",
]


def write_silver(path: Path, teacher, texts=SILVER_TEXTS) -> Path:
    """The teacher's annotations of texts as a .spacy file (as `annotate` writes them)."""
    db = DocBin(store_user_data=True)
    for i, doc in enumerate(teacher.pipe(texts)):
        doc.user_data["id"] = i
        db.add(doc)
    db.to_disk(path)
    return path


@pytest.fixture()
def corpora(tmp_path, trained_nlp):
    return write_corpus(tmp_path / "gold.spacy"), write_silver(tmp_path / "silver.spacy", trained_nlp)


def texts_of(examples):
    return [eg.reference.text for eg in examples]


def test_reader_is_registered_and_mixes_all_gold_and_silver(corpora):
    gold, silver = corpora
    make = registry.readers.get("spacy-hybridner.GoldSilverCorpus.v1")
    nlp = spacy.blank("en")
    examples = list(make(gold=gold, silver=silver)(nlp))
    assert sorted(texts_of(examples)) == sorted([t for t, _ in TRAIN_DATA] + SILVER_TEXTS)
    assert all(example_weight(eg) == 1.0 for eg in examples)
    # Shuffled together: not the gold documents first.
    assert texts_of(examples)[: len(TRAIN_DATA)] != [t for t, _ in TRAIN_DATA]


def test_silver_fraction_takes_nested_fixed_subsets(corpora):
    gold, silver = corpora
    nlp = spacy.blank("en")

    def silver_texts(fraction, seed):
        examples = GoldSilverCorpus(gold, silver, silver_fraction=fraction, seed=seed)(nlp)
        return {t for t in texts_of(examples) if t in SILVER_TEXTS}

    quarter, half, whole = silver_texts(0.25, 0), silver_texts(0.5, 0), silver_texts(1.0, 0)
    assert (len(quarter), len(half), len(whole)) == (2, 4, 8)
    assert quarter < half < whole
    assert silver_texts(0.5, 7) == half  # the subset does not follow the training seed
    only_gold = list(GoldSilverCorpus(gold, silver, silver_fraction=0.0)(nlp))
    assert sorted(texts_of(only_gold)) == sorted(t for t, _ in TRAIN_DATA)


def test_silver_ratio_draws_words_in_proportion_to_gold(corpora):
    gold, silver = corpora
    nlp = spacy.blank("en")
    gold_words = sum(len(nlp.make_doc(t)) for t, _ in TRAIN_DATA)
    longest = max(len(nlp.make_doc(t)) for t in SILVER_TEXTS)
    for ratio in (0.5, 1.0, 3.0):  # 3.0 needs the silver documents more than once
        examples = list(GoldSilverCorpus(gold, silver, silver_ratio=ratio)(nlp))
        silver_words = sum(len(eg.reference) for eg in examples if eg.reference.text in SILVER_TEXTS)
        assert ratio * gold_words <= silver_words < ratio * gold_words + longest
    # A new draw on every call (the streaming training loop calls once per epoch).
    reader = GoldSilverCorpus(gold, silver, silver_ratio=0.5, seed=1)
    draws = [tuple(t for t in texts_of(reader(nlp)) if t in SILVER_TEXTS) for _ in range(5)]
    assert len(set(draws)) > 1


def test_silver_weight_marks_silver_examples_only(corpora):
    gold, silver = corpora
    examples = list(GoldSilverCorpus(gold, silver, silver_weight=0.5)(spacy.blank("en")))
    weights = {eg.reference.text: example_weight(eg) for eg in examples}
    assert all(weights[t] == 1.0 for t, _ in TRAIN_DATA)
    assert all(weights[t] == 0.5 for t in SILVER_TEXTS)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"silver": "missing-folder"}, "annotate"),
        ({"silver_fraction": 1.5}, "silver_fraction"),
        ({"silver_ratio": -1.0}, "silver_ratio"),
        ({"silver_weight": 0.0}, "silver_weight"),
    ],
)
def test_reader_names_what_is_wrong(corpora, kwargs, message):
    """Bad settings are refused when the reader is made; missing data when training reads
    it (not before: `spacy debug config` resolves the reader without data)."""
    gold, silver = corpora
    with pytest.raises(ValueError, match=message):
        list(GoldSilverCorpus(gold, kwargs.pop("silver", silver), **kwargs)(spacy.blank("en")))


def test_empty_silver_folder_is_an_error(tmp_path, corpora):
    gold, _ = corpora
    (tmp_path / "empty").mkdir()
    # spaCy's reader warns first (W090: no .spacy files), then the corpus refuses to go on
    with pytest.raises(ValueError, match="no silver documents"), pytest.warns(UserWarning, match="W090"):
        list(GoldSilverCorpus(gold, tmp_path / "empty")(spacy.blank("en")))


def test_example_weights_scale_each_examples_loss_and_gradient(trained_nlp):
    ner = trained_nlp.get_pipe("ner")
    examples = make_examples(trained_nlp, TRAIN_DATA[:2])
    scores = ner.model.predict([eg.predicted for eg in examples])
    loss_a, grad_a = ner.get_loss(examples[:1], scores[:1])
    loss_b, grad_b = ner.get_loss(examples[1:], scores[1:])
    examples[1].reference.user_data[WEIGHT_KEY] = 0.25
    loss, grads = ner.get_loss(examples, scores)
    assert loss == pytest.approx(loss_a + 0.25 * loss_b, rel=1e-5)
    numpy.testing.assert_allclose(grads[0], grad_a[0], rtol=1e-5, atol=1e-7)
    numpy.testing.assert_allclose(grads[1], 0.25 * grad_b[0], rtol=1e-5, atol=1e-7)
    assert numpy.abs(grad_b[0]).max() > 0


def test_update_reports_the_weighted_loss(trained_nlp):
    """``update`` weighs the loss as ``get_loss`` does (no optimizer: nothing changes)."""

    def loss_at(weight):
        eg = make_examples(trained_nlp, TRAIN_DATA[:1])[0]
        if weight is not None:
            eg.reference.user_data[WEIGHT_KEY] = weight
        return trained_nlp.get_pipe("ner").update([eg], drop=0.0)["ner"]

    plain = loss_at(None)
    assert plain > 0
    assert loss_at(1.0) == pytest.approx(plain, rel=1e-5)
    assert loss_at(0.25) == pytest.approx(0.25 * plain, rel=1e-5)


def test_texts_command_writes_unlabeled_text_and_refuses_held_out_splits(tmp_path):
    train = write_corpus(tmp_path / "train.spacy")
    out = tmp_path / "text.jsonl"
    result = CliRunner().invoke(app, ["texts", str(train), "--output", str(out)])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["text"] for r in records] == [t for t, _ in TRAIN_DATA]
    assert set(records[0]) == {"id", "text"} and len({r["id"] for r in records}) == len(records)
    assert f"{len(TRAIN_DATA)} documents" in result.output
    test = write_corpus(tmp_path / "test.spacy")
    refused = CliRunner().invoke(app, ["texts", str(train), str(test), "--output", str(tmp_path / "x.jsonl")])
    assert refused.exit_code == 2 and "dev or test split" in refused.output
    assert not (tmp_path / "x.jsonl").exists()
    allowed = CliRunner().invoke(app, ["texts", str(test), "--output", str(tmp_path / "y.jsonl"), "--allow-held-out"])
    assert allowed.exit_code == 0, allowed.output


def test_distill_config_is_hybrid_cpu_but_for_its_training_corpus_and_max_steps():
    from thinc.api import Config

    base = Config().from_disk(ROOT / "configs" / "hybrid_cpu.cfg", interpolate=False)
    student = Config().from_disk(ROOT / "configs" / "hybrid_cpu_distill.cfg", interpolate=False)
    assert student["corpora"]["train"]["@readers"] == "spacy-hybridner.GoldSilverCorpus.v1"
    assert student["corpora"]["train"]["gold"] == "${paths.train}"
    assert student["corpora"]["train"]["silver"] == "${paths.silver}"
    # the student has more to learn: patience, not hybrid_cpu's 4000 steps, ends it
    assert (base["training"]["max_steps"], student["training"]["max_steps"]) == (4000, 20000)
    assert student["training"]["patience"] == base["training"]["patience"]
    for config in (base, student):
        del config["corpora"]["train"]
        del config["training"]["max_steps"]
        config["paths"].pop("silver", None)
    assert student == base


def test_teacher_annotates_student_trains_on_gold_and_silver_and_reloads(tmp_path, model_dir):
    """The whole path with the project's commands: texts -> annotate (DocBin) -> spacy
    train with the distillation config -> spacy.load in a fresh process, `import spacy` only."""
    train = write_corpus(tmp_path / "train.spacy")
    text = tmp_path / "text.jsonl"
    text.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(SILVER_TEXTS)))
    silver = tmp_path / "silver"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "spacy_hybridner",
            "annotate",
            str(model_dir),
            str(text),
            str(silver),
            "--output-format",
            "docbin",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    vocab = spacy.blank("en").vocab
    docs = [doc for f in sorted(silver.glob("*.spacy")) for doc in DocBin().from_disk(f).get_docs(vocab)]
    assert [d.text for d in docs] == SILVER_TEXTS
    assert any(d.ents for d in docs)
    out = tmp_path / "student"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "spacy",
            "train",
            str(ROOT / "configs" / "hybrid_cpu_distill.cfg"),
            "--output",
            str(out),
            "--paths.train",
            str(train),
            "--paths.silver",
            str(silver),
            "--paths.dev",
            str(train),
            "--training.max_steps",
            "12",
            "--training.eval_frequency",
            "6",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (out / "model-best" / "ner" / "model").exists()
    loaded = run_python(
        "import json, spacy\n"
        f"nlp = spacy.load({str(out / 'model-best')!r})\n"
        "doc = nlp('Angela Merkel visited Paris .')\n"
        "print(json.dumps([nlp.pipe_names, sorted(nlp.get_pipe('ner').labels)]))\n"
    )
    pipes, labels = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert pipes == ["ner"] and labels == ["LOC", "ORG", "PER"]


def test_docbin_output_leaves_out_transformer_activations():
    from spacy.tokens import Doc

    from spacy_hybridner.annotate.outputs import docbin_bytes

    nlp = spacy.blank("en")
    doc = nlp("Apple hired Tim Cook .")
    doc.ents = [doc.char_span(0, 5, "ORG")]
    if not Doc.has_extension("trf_data"):
        Doc.set_extension("trf_data", default=None)
    doc._.trf_data = [1.0] * 1000
    data = docbin_bytes([doc], ["a"])
    (restored,) = DocBin(store_user_data=True).from_bytes(data).get_docs(nlp.vocab)
    assert ("._.", "trf_data", None, None) not in restored.user_data
    assert restored.user_data["id"] == "a" and [e.text for e in restored.ents] == ["Apple"]
    assert Example(restored, restored).reference.ents[0].label_ == "ORG"


# --- soft targets: the teacher's marginals --------------------------------------------


def _biluo_crf(seed=0):
    import torch

    from spacy_hybridner.modules import CRF
    from spacy_hybridner.tag_scheme import biluo_constraints, biluo_tag_names

    torch.manual_seed(seed)
    tags = biluo_tag_names(["LOC", "PER"])
    crf = CRF(len(tags), **biluo_constraints(tags))
    with torch.no_grad():
        for p in crf.parameters():
            p.normal_()
    return crf, tags


def test_soft_loss_with_one_hot_targets_is_the_negative_log_likelihood():
    import torch

    crf, tags = _biluo_crf()
    paths = [["B-PER", "L-PER", "O", "U-LOC"], ["O"], ["U-PER", "O", "B-LOC", "I-LOC", "L-LOC", "O"]]
    lengths = [len(p) for p in paths]
    gold = torch.tensor([tags.index(t) for p in paths for t in p])
    emissions = torch.randn(sum(lengths), len(tags), requires_grad=True)
    nll = crf(emissions, lengths, gold)
    (grad,) = torch.autograd.grad(nll.sum(), emissions)
    one_hot = torch.nn.functional.one_hot(gold, len(tags)).float()
    loss, soft_grad = crf.soft_loss(emissions.detach(), lengths, one_hot)
    numpy.testing.assert_allclose(loss.numpy(), nll.detach().numpy(), rtol=1e-4, atol=1e-4)
    numpy.testing.assert_allclose(soft_grad.numpy(), grad.numpy(), rtol=1e-4, atol=1e-5)


def test_soft_loss_gradient_is_marginals_minus_targets_and_matches_autograd():
    import torch

    crf, tags = _biluo_crf(1)
    lengths = [5, 1, 3]
    K = len(tags)
    emissions = torch.randn(sum(lengths), K, requires_grad=True)
    targets = torch.softmax(torch.randn(sum(lengths), K) * 2, dim=1)
    loss, grad = crf.soft_loss(emissions.detach(), lengths, targets)
    # The same cross-entropy written out with autograd, sequence by sequence.
    start, trans, end = crf.potentials(-1e4)
    zero = torch.zeros(())
    trans0 = torch.where(crf.allowed_transitions, trans, zero)
    start0 = torch.where(crf.allowed_start, start, zero)
    end0 = torch.where(crf.allowed_end, end, zero)
    expected_losses, offset = [], 0
    for n in lengths:
        em, q = emissions[offset : offset + n], targets[offset : offset + n]
        log_z = crf.log_partition(em[None], torch.ones(1, n, dtype=torch.bool))[0]
        score = (q * em).sum() + (q[:-1] @ trans0 * q[1:]).sum() + q[0] @ start0 + q[-1] @ end0
        expected_losses.append(log_z - score)
        offset += n
    expected = torch.stack(expected_losses)
    (expected_grad,) = torch.autograd.grad(expected.sum(), emissions)
    numpy.testing.assert_allclose(loss.numpy(), expected.detach().numpy(), rtol=1e-4, atol=1e-4)
    numpy.testing.assert_allclose(grad.numpy(), expected_grad.numpy(), rtol=1e-4, atol=1e-5)
    marginals = crf.marginals(emissions.detach(), lengths)
    numpy.testing.assert_allclose(grad.numpy(), (marginals - targets).numpy(), atol=1e-6)
    numpy.testing.assert_allclose(marginals.sum(dim=1).numpy(), 1.0, rtol=1e-5)


def test_teacher_stores_marginals_when_asked(trained_nlp):
    from spacy_hybridner.distill import MARGINAL_TAGS_KEY, MARGINALS_KEY

    ner = trained_nlp.get_pipe("ner")
    plain = trained_nlp("Apple hired Tim Cook in London .")
    assert MARGINALS_KEY not in plain.user_data
    ner.store_marginals = True
    try:
        docs = list(trained_nlp.pipe(["Apple hired Tim Cook in London .", "", "Paris ."]))
    finally:
        ner.store_marginals = False
    for doc in docs:
        marginals = doc.user_data[MARGINALS_KEY]
        assert marginals.shape == (len(doc), len(ner.tag_names))
        assert doc.user_data[MARGINAL_TAGS_KEY] == list(ner.tag_names)
        numpy.testing.assert_allclose(marginals.astype("float32").sum(axis=1), 1.0, atol=2e-3)
    # The entities are those of a plain run; the decoded tags carry most of the mass.
    assert [(e.text, e.label_) for e in docs[0].ents] == [(e.text, e.label_) for e in plain.ents]
    tag = ner.tag_names.index("U-LOC")
    assert docs[0].user_data[MARGINALS_KEY][5, tag] > 0.5  # "London"


def test_soft_targets_of_one_hot_marginals_train_as_the_gold_tags(trained_nlp):
    from spacy_hybridner.distill import MARGINAL_TAGS_KEY, MARGINALS_KEY, SOFT_WEIGHT_KEY, teacher_marginals

    ner = trained_nlp.get_pipe("ner")
    examples = make_examples(trained_nlp, TRAIN_DATA[:2])
    scores = ner.model.predict([eg.predicted for eg in examples])
    hard_loss, hard_grads = ner.get_loss(examples, scores)
    names = list(reversed(ner.tag_names))  # another column order: mapped by tag name
    for eg in examples:
        gold = [ner.tag_names.index(t) for t in eg.get_aligned_ner()]
        one_hot = numpy.zeros((len(gold), len(names)), dtype="float16")
        one_hot[numpy.arange(len(gold)), [names.index(ner.tag_names[g]) for g in gold]] = 1
        eg.reference.user_data.update({MARGINALS_KEY: one_hot, MARGINAL_TAGS_KEY: names, SOFT_WEIGHT_KEY: 1.0})
    soft_loss, soft_grads = ner.get_loss(examples, scores)
    assert soft_loss == pytest.approx(hard_loss, rel=1e-4)
    for a, b in zip(soft_grads, hard_grads):
        numpy.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # Tokens that differ from the reference's: the soft targets are not used.
    reference = examples[0].reference
    assert teacher_marginals(Example(trained_nlp.make_doc(reference.text), reference), ner.tag_names) is not None
    other = Example(trained_nlp.make_doc(reference.text.replace("Michael Jordan", "MichaelJordan")), reference)
    assert len(other.predicted) == len(reference) - 1 and teacher_marginals(other, ner.tag_names) is None


def test_reader_sets_soft_weight_and_temperature_and_needs_marginals(tmp_path, trained_nlp):
    from spacy_hybridner.distill import MARGINALS_KEY, SOFT_WEIGHT_KEY, soft_weight

    gold = write_corpus(tmp_path / "gold.spacy")
    hard_silver = write_silver(tmp_path / "hard.spacy", trained_nlp)
    with pytest.raises(ValueError, match="--marginals"):
        list(GoldSilverCorpus(gold, hard_silver, soft_weight=0.5)(spacy.blank("en")))
    ner = trained_nlp.get_pipe("ner")
    ner.store_marginals = True
    try:
        soft_silver = write_silver(tmp_path / "soft.spacy", trained_nlp)
    finally:
        ner.store_marginals = False
    plain = {eg.reference.text: eg for eg in GoldSilverCorpus(gold, soft_silver)(spacy.blank("en"))}
    flat = {
        eg.reference.text: eg
        for eg in GoldSilverCorpus(gold, soft_silver, soft_weight=0.5, soft_temperature=3.0)(spacy.blank("en"))
    }
    for text in SILVER_TEXTS:
        assert soft_weight(plain[text]) == 0.0 and soft_weight(flat[text]) == 0.5
        assert flat[text].reference.user_data[SOFT_WEIGHT_KEY] == 0.5
        q0 = plain[text].reference.user_data[MARGINALS_KEY].astype("float32")
        q3 = flat[text].reference.user_data[MARGINALS_KEY]
        numpy.testing.assert_allclose(q3.sum(axis=1), 1.0, atol=1e-5)
        assert (q3.max(axis=1) <= q0.max(axis=1) + 1e-3).all()  # flatter
    assert all(soft_weight(flat[t]) == 0.0 for t, _ in TRAIN_DATA)  # gold: hard labels


def test_annotate_marginals_needs_docbin_and_a_hybrid_ner_teacher(tmp_path, model_dir):
    from spacy_hybridner.annotate import AnnotateInputError, annotate
    from spacy_hybridner.distill import MARGINALS_KEY

    text = tmp_path / "text.jsonl"
    text.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(SILVER_TEXTS[:3])))
    with pytest.raises(AnnotateInputError, match="DocBin"):
        annotate(str(model_dir), str(text), tmp_path / "out.jsonl", marginals=True, progress=False)
    annotate(str(model_dir), str(text), tmp_path / "silver", output_format="docbin", marginals=True, progress=False)
    vocab = spacy.blank("en").vocab
    docs = [d for f in sorted((tmp_path / "silver").glob("*.spacy")) for d in DocBin().from_disk(f).get_docs(vocab)]
    assert len(docs) == 3 and all(d.user_data[MARGINALS_KEY].shape[0] == len(d) for d in docs)
    no_ner = tmp_path / "blank"
    spacy.blank("en").to_disk(no_ner)
    with pytest.raises(AnnotateInputError, match="no hybrid_ner"):
        annotate(str(no_ner), str(text), tmp_path / "x", output_format="docbin", marginals=True, progress=False)
