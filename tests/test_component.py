"""The hybrid_ner component, in the style of spaCy's own pipeline tests."""

import copy
import math
import pickle

import numpy
import pytest
import spacy
import srsly
from spacy.lang.en import English
from spacy.tokens import DocBin
from spacy.training import Example
from thinc.api import Adam, Model, fix_random_seed
from typer.testing import CliRunner

from spacy_hybridner.cli import app
from spacy_hybridner.layers import torch_module
from spacy_hybridner.tag_scheme import gold_tag_ids

from conftest import (
    TINY_MODEL,
    TRAIN_DATA,
    assert_same_entities,
    ents_of,
    ents_with_confidence,
    make_examples,
    reload_and_predict,
    run_python,
    train_tiny,
    write_corpus,
)


def test_overfitting_IO(trained_nlp, tmp_path):
    """Learns a handful of sentences perfectly, saves, and reloads in a new process with
    only `import spacy` to the same entities and confidences."""
    nlp = trained_nlp
    scores = nlp.evaluate(make_examples(nlp))
    assert scores["ents_f"] == 1.0
    texts = [text for text, _ in TRAIN_DATA] + ["Tim Cook visited Berlin ."]
    before = ents_with_confidence(nlp.pipe(texts))
    for doc, (_, ents) in zip(nlp.pipe(texts), TRAIN_DATA):
        assert ents_of(doc) == ents
        assert all(0.0 <= e._.confidence <= 1.0 for e in doc.ents)
        assert all(e._.confidence > 0.5 for e in doc.ents)
    assert_same_entities(reload_and_predict(nlp, texts, tmp_path), before)


def test_to_from_bytes_and_disk_give_same_predictions(trained_nlp, tmp_path):
    text = "Angela Merkel met Tim Cook in Paris ."
    doc = trained_nlp(text)
    expected = [(e.start, e.end, e.label_, e._.confidence) for e in doc.ents]
    assert expected
    ner_bytes = trained_nlp.get_pipe("ner").to_bytes()
    nlp2 = spacy.blank("en")
    nlp2.add_pipe("hybrid_ner", name="ner", config={"model": TINY_MODEL})
    nlp2.get_pipe("ner").from_bytes(ner_bytes)
    assert nlp2.get_pipe("ner").labels == trained_nlp.get_pipe("ner").labels
    assert [(e.start, e.end, e.label_, e._.confidence) for e in nlp2(text).ents] == expected
    trained_nlp.to_disk(tmp_path)
    nlp3 = spacy.load(tmp_path)
    assert [(e.start, e.end, e.label_, e._.confidence) for e in nlp3(text).ents] == expected
    # The whole pipeline round-trips through bytes too, and pickles.
    nlp4 = spacy.blank("en").from_config(trained_nlp.config).from_bytes(trained_nlp.to_bytes())
    assert [(e.start, e.end, e.label_) for e in nlp4(text).ents] == [x[:3] for x in expected]
    nlp5 = pickle.loads(pickle.dumps(trained_nlp))
    assert [(e.start, e.end, e.label_) for e in nlp5(text).ents] == [x[:3] for x in expected]


def test_initialize_gathers_sorted_labels_from_data():
    nlp = English()
    ner = nlp.add_pipe("hybrid_ner", config={"model": TINY_MODEL})
    nlp.initialize(lambda: make_examples(nlp))
    assert ner.labels == ("LOC", "ORG", "PER")
    assert ner.tag_names[:5] == ["O", "B-LOC", "I-LOC", "L-LOC", "U-LOC"]


def test_initialize_with_labels():
    nlp = English()
    ner = nlp.add_pipe("hybrid_ner", config={"model": TINY_MODEL})
    nlp.config["initialize"]["components"]["hybrid_ner"] = {"labels": ["PER", "LOC", "ORG", "MISC"]}
    nlp.initialize(lambda: make_examples(nlp))
    assert ner.labels == ("PER", "LOC", "ORG", "MISC")
    assert ner.model.get_dim("nO") == 1 + 4 * 4


def test_initialize_examples():
    nlp = English()
    nlp.add_pipe("hybrid_ner", config={"model": TINY_MODEL})
    examples = make_examples(nlp)
    nlp.initialize(get_examples=lambda: examples)
    # spaCy's contract: get_examples must be a callable returning examples.
    with pytest.raises(TypeError):
        nlp.initialize(get_examples=lambda: None)
    with pytest.raises(TypeError):
        nlp.initialize(get_examples=examples)


def test_no_label():
    nlp = English()
    nlp.add_pipe("hybrid_ner", config={"model": TINY_MODEL})
    with pytest.raises(ValueError, match="Labels for component"):
        nlp.initialize()
    with pytest.raises(ValueError, match="Labels for component"):
        nlp.initialize(lambda: make_examples(nlp, [("No entities here .", [])]))


def test_use_before_initialize_raises_E109():
    nlp = English()
    nlp.add_pipe("hybrid_ner", name="ner", config={"model": TINY_MODEL})
    with pytest.raises(ValueError, match=r"\[E109\].*initialize"):
        nlp("Michael Jordan")


def test_update_with_unknown_label_names_label_and_fix_and_changes_nothing(trained_nlp):
    nlp = trained_nlp
    ner = nlp.get_pipe("ner")
    before = ner.model.to_bytes()
    example = Example.from_dict(nlp.make_doc("Python is a language ."), {"entities": [(0, 6, "LANGUAGE")]})
    with pytest.raises(ValueError, match=r"'LANGUAGE'.*(add_label|initialize)"):
        nlp.update([example], sgd=nlp.create_optimizer())
    assert ner.model.to_bytes() == before


def test_add_label_after_initialize_is_explained(trained_nlp):
    with pytest.raises(ValueError, match="'MISC'.*initialize"):
        trained_nlp.get_pipe("ner").add_label("MISC")
    assert trained_nlp.get_pipe("ner").add_label("PER") == 0


def test_misaligned_entities_warn_and_are_skipped():
    nlp = English()
    ner = nlp.add_pipe("hybrid_ner", name="ner", config={"model": TINY_MODEL})
    with pytest.warns(UserWarning, match="W030"):
        bad = Example.from_dict(
            nlp.make_doc("Hello Jordanx and Paris ."), {"entities": [(6, 12, "PER"), (18, 23, "LOC")]}
        )
    examples = make_examples(nlp) + [bad]
    optimizer = nlp.initialize(lambda: examples)
    for _ in range(3):
        losses = nlp.update(examples, sgd=optimizer)
    assert numpy.isfinite(losses["ner"])
    gold = gold_tag_ids(bad, {tag: i for i, tag in enumerate(ner.tag_names)}, ner.labels, ner.name)
    assert list(gold[:2]) == [0, -1]  # "Hello" is O, the cut-off "Jordanx" is skipped
    assert ner.tag_names[gold[3]] == "U-LOC"


@pytest.mark.parametrize(
    "text", ["", "   ", "\n\t ", "?!... ,;", "🙂 🚀🚀 👍🏽", "\x00\x07 ctrl \x1b[0m text", "a" * 3000]
)
def test_odd_texts_give_valid_entities(trained_nlp, text):
    doc = trained_nlp(text)
    assert all(0 <= e.start < e.end <= len(doc) for e in doc.ents)
    assert all(t.ent_iob_ in ("B", "I", "O") for t in doc)


def test_batch_with_empty_docs(trained_nlp):
    texts = ["", "Michael Jordan was born in Brooklyn , New York .", "  ", "Apple"]
    docs = list(trained_nlp.pipe(texts))
    assert ents_of(docs[1]) == TRAIN_DATA[0][1]
    assert docs[0].ents == () and docs[2].ents == ()


def test_prediction_in_parts_of_bounded_words_gives_the_same_entities(trained_nlp, monkeypatch):
    """``predict`` runs at most ``max_predict_words`` words at once (bounded memory
    whatever the batch size): cut into parts, a batch gets the same entities and
    confidences."""
    from spacy_hybridner import pipeline_component

    texts = [text for text, _ in TRAIN_DATA] * 3 + ["", "Apple"]
    whole = ents_with_confidence(list(trained_nlp.pipe(texts, batch_size=len(texts))))
    calls = []
    decode = pipeline_component.crf_decode

    def counting_decode(model, scores, *args):
        calls.append(len(scores))
        return decode(model, scores, *args)

    monkeypatch.setattr(pipeline_component, "crf_decode", counting_decode)
    monkeypatch.setattr(trained_nlp.get_pipe("ner"), "max_predict_words", 12)
    parts = ents_with_confidence(list(trained_nlp.pipe(texts, batch_size=len(texts))))
    assert len(calls) > 3 and sum(calls) == len(texts)
    assert len(parts) == len(whole)
    for a, b in zip(parts, whole):
        assert [e[:3] for e in a] == [e[:3] for e in b]
        assert [e[3] for e in a] == pytest.approx([e[3] for e in b], abs=1e-5)
    assert list(trained_nlp.pipe([])) == []


def test_entities_never_begin_or_end_on_whitespace(trained_nlp, monkeypatch):
    """As spaCy's own ``ner``: whitespace tokens may be inside an entity, never at its
    edges. Random emission scores make the unconstrained CRF put edges on whitespace
    often (checked), the constrained one never."""
    from spacy_hybridner import pipeline_component

    ner = trained_nlp.get_pipe("ner")
    texts = ["Angela Merkel \t visited Paris.", "\n" * 40, "New \n\n York  \t Times \n", " \t Apple"]
    docs = [trained_nlp.make_doc(t) for t in texts]
    assert all(any(t.is_space for t in doc) for doc in docs)
    rng = numpy.random.default_rng(0)
    n_tags = len(ner.tag_names)
    edges_unconstrained = 0
    for _trial in range(30):
        scores = [rng.normal(scale=4.0, size=(len(d), n_tags)).astype("float32") for d in docs]
        monkeypatch.setattr(ner, "_scores", lambda docs, scores=scores: scores)
        for doc in ner.pipe([d.copy() for d in docs]):
            assert all(not e[0].is_space and not e[-1].is_space for e in doc.ents), doc.ents
        monkeypatch.setattr(ner, "_tag_mask", lambda doc: None)
        tags, _ = ner._decode(docs, scores)
        names = [ner.tag_names[i] for seq in tags for i in seq]
        space = [t.is_space for d in docs for t in d]
        edges_unconstrained += sum(sp and n[:2] in ("B-", "L-", "U-") for sp, n in zip(space, names))
        monkeypatch.undo()
    assert edges_unconstrained > 0
    # the text of the issue: a trained model's entity stops before the whitespace
    doc = trained_nlp("Michael Jordan \t was born in Brooklyn , New York .")
    assert all(e.text == e.text.strip() for e in doc.ents)
    del pipeline_component


def test_preset_entities_are_kept_and_never_overlapped(trained_nlp):
    """Policy: entities already on a Doc stay; predictions fill the rest around them."""
    nlp = trained_nlp
    text = "Michael Jordan was born in Brooklyn , New York ."
    doc = nlp.make_doc(text)
    # 'Jordan was' as a preset ORG cuts through the PER the model would predict, and a
    # label the model does not know sits on 'New York'.
    doc.ents = [doc.char_span(8, 18, "ORG"), doc.char_span(38, 46, "GPE")]
    doc = nlp.get_pipe("ner")(doc)
    assert (8, 18, "ORG") in ents_of(doc) and (38, 46, "GPE") in ents_of(doc)
    assert (27, 35, "LOC") in ents_of(doc)
    assert not any(e.start_char == 0 and e.end_char == 14 for e in doc.ents)
    preset = [e for e in doc.ents if (e.start_char, e.end_char) in ((8, 18), (38, 46))]
    assert len(preset) == 2 and all(e._.confidence is None for e in preset)


def test_entity_ruler_before_hybrid_ner(trained_nlp, tmp_path):
    trained_nlp.to_disk(tmp_path)
    nlp = spacy.load(tmp_path)
    ruler = nlp.add_pipe("entity_ruler", before="ner")
    ruler.add_patterns([{"label": "ORG", "pattern": "Brooklyn"}])
    doc = nlp("Michael Jordan was born in Brooklyn , New York .")
    assert ents_of(doc) == [(0, 14, "PER"), (27, 35, "ORG"), (38, 46, "LOC")]


def test_n_process_2_matches_n_process_1(trained_nlp):
    texts = [text for text, _ in TRAIN_DATA] * 4 + ["Tim Cook and Angela Merkel in Kenya ."]
    single = [ents_of(d) for d in trained_nlp.pipe(texts)]
    multi = [ents_of(d) for d in trained_nlp.pipe(texts, n_process=2, batch_size=5)]
    assert multi == single


def test_confidences_survive_docbin(trained_nlp):
    doc = trained_nlp("Barack Obama visited Kenya .")
    db = DocBin(store_user_data=True, docs=[doc])
    (doc2,) = DocBin(store_user_data=True).from_bytes(db.to_bytes()).get_docs(trained_nlp.vocab)
    assert [e._.confidence for e in doc2.ents] == [e._.confidence for e in doc.ents]


def test_same_seed_same_weights_and_entities():
    a = train_tiny(n_iter=8, seed=7)
    b = train_tiny(n_iter=8, seed=7)
    assert a.get_pipe("ner").model.to_bytes() == b.get_pipe("ner").model.to_bytes()
    text = "Michael Jordan met Tim Cook in Paris ."
    assert [(e.start, e.end, e.label_, e._.confidence) for e in a(text).ents] == [
        (e.start, e.end, e.label_, e._.confidence) for e in b(text).ents
    ]
    c = train_tiny(n_iter=8, seed=8)
    assert c.get_pipe("ner").model.to_bytes() != a.get_pipe("ner").model.to_bytes()


def test_every_parameter_is_trained_and_saved(trained_nlp):
    """CRF transitions included: walked by the model, changed by training, saved."""
    ner = trained_nlp.get_pipe("ner")
    crf_module = torch_module(ner.model.get_ref("crf"))
    assert crf_module.transitions.abs().sum() > 0  # initialised at zero, so it learned
    shims = [shim for node in ner.model.walk() for shim in node.shims]
    assert len(shims) == 2
    fresh = spacy.blank("en")
    fresh.add_pipe("hybrid_ner", name="ner", config={"model": TINY_MODEL}).from_bytes(ner.to_bytes())
    crf2 = torch_module(fresh.get_pipe("ner").model.get_ref("crf"))
    assert (crf2.transitions == crf_module.transitions).all()


def test_parameter_averages_reach_the_pytorch_modules(tmp_path):
    """With ``use_averages``, spaCy evaluates and saves under ``nlp.use_params(averages)``:
    the encoder's and the CRF's weights must switch to their averages there (thinc's stock
    PyTorch shim misses the optimizer's keys) and come back afterwards."""
    fix_random_seed(0)
    nlp = spacy.blank("en")
    nlp.add_pipe("hybrid_ner", name="ner", config={"model": TINY_MODEL})
    examples = make_examples(nlp)
    optimizer = nlp.initialize(lambda: examples, sgd=Adam(0.001, use_averages=True))
    for _ in range(5):
        nlp.update(examples, sgd=optimizer)
    shims = [shim for node in nlp.get_pipe("ner").model.walk() for shim in node.shims]
    last = {(s.id, n): p.detach().clone() for s in shims for n, p in s.module.named_parameters()}
    assert set(last) <= set(optimizer.averages)
    text = "Angela Merkel visited Paris ."
    before = ents_with_confidence([nlp(text)])
    with nlp.use_params(optimizer.averages):
        for s in shims:
            for name, param in s.module.named_parameters():
                assert numpy.allclose(param.detach().numpy(), optimizer.averages[(s.id, name)])
        assert any(
            not numpy.allclose(p.detach().numpy(), last[(s.id, n)].numpy())
            for s in shims
            for n, p in s.module.named_parameters()
        )
        averaged = ents_with_confidence([nlp(text)])
        nlp.to_disk(tmp_path / "averaged")
    for s in shims:
        for name, param in s.module.named_parameters():
            assert param.detach().equal(last[(s.id, name)])
    assert ents_with_confidence([nlp(text)]) == before
    assert ents_with_confidence([spacy.load(tmp_path / "averaged")(text)]) == averaged


def test_shared_tok2vec_listener(tmp_path):
    fix_random_seed(0)
    nlp = English()
    nlp.add_pipe("tok2vec", config={"model": TINY_MODEL["tok2vec"]})
    model = dict(TINY_MODEL, tok2vec={"@architectures": "spacy.Tok2VecListener.v1", "width": 32, "upstream": "*"})
    nlp.add_pipe("hybrid_ner", name="ner", config={"model": model})
    examples = make_examples(nlp)
    optimizer = nlp.initialize(lambda: examples)
    for _ in range(60):
        nlp.update(examples, sgd=optimizer)
    assert nlp.evaluate(examples)["ents_f"] == 1.0
    nlp2 = spacy.blank("en").from_config(nlp.config).from_bytes(nlp.to_bytes())
    text = TRAIN_DATA[2][0]
    assert ents_of(nlp2(text)) == ents_of(nlp(text)) == TRAIN_DATA[2][1]
    # calibrate runs the shared tok2vec before the listening component.
    nlp.to_disk(tmp_path / "model")
    result = CliRunner().invoke(
        app,
        ["calibrate", str(tmp_path / "model"), str(write_corpus(tmp_path / "dev.spacy")), str(tmp_path / "calibrated")],
    )
    assert result.exit_code == 0, result.output
    assert "temperature" in result.output
    assert ents_of(spacy.load(tmp_path / "calibrated")(text)) == TRAIN_DATA[2][1]


def test_pipeline_saved_by_0_1_is_refused_naming_the_version(trained_nlp, tmp_path):
    """From 0.2.0 the model saves its own settings and rebuilds itself; a pipeline saved by
    0.1.x (no ``saved_by`` in the component's cfg) gets an error that says so."""
    trained_nlp.to_disk(tmp_path / "old")
    cfg_path = tmp_path / "old" / "ner" / "cfg"
    cfg = srsly.read_json(cfg_path)
    assert cfg["saved_by"].startswith("spacy-hybridner 0.2") and "nI" not in cfg
    del cfg["saved_by"]
    cfg["nI"] = 32
    srsly.write_json(cfg_path, cfg)
    with pytest.raises(ValueError, match=r"saved by spacy-hybridner 0\.1\.x.*Retrain"):
        spacy.load(tmp_path / "old")


def test_any_model_with_a_crf_ref_works_with_the_component(tmp_path):
    """The component knows the model only by its output (scores per BILUO tag) and its
    ``crf`` ref: a plain tok2vec + Linear model with a CRF trains, saves and reloads."""
    from thinc.api import Linear, chain, with_array

    from spacy_hybridner.layers import crf_layer
    from spacy_hybridner.pipeline_component import HybridEntityRecognizer

    def forward(model, docs, is_train):
        return model.layers[0](docs, is_train)

    def init(model, X=None, Y=None):
        model.get_ref("output").set_dim("nO", model.get_dim("nO"), force=True)
        model.get_ref("crf").set_dim("nO", model.get_dim("nO"), force=True)
        model.layers[0].initialize(X=X)
        model.get_ref("crf").initialize()

    def build():
        tok2vec = spacy.registry.resolve({"t": TINY_MODEL["tok2vec"]})["t"]
        crf, output = crf_layer(), Linear()
        return Model(
            "tagger_crf",
            forward,
            init=init,
            layers=[chain(tok2vec, with_array(output)), crf],
            refs={"crf": crf, "output": output},
            dims={"nO": None},
        )

    fix_random_seed(0)
    nlp = English()
    ner = HybridEntityRecognizer(nlp.vocab, build(), "ner")
    examples = make_examples(nlp)
    ner.initialize(lambda: examples)
    optimizer = Adam(0.01)
    for _ in range(60):
        ner.update(examples, sgd=optimizer)
    docs = list(ner.pipe(nlp.make_doc(text) for text, _ in TRAIN_DATA))
    assert sum(ents_of(doc) == ents for doc, (_, ents) in zip(docs, TRAIN_DATA)) >= 4
    loaded = HybridEntityRecognizer(nlp.vocab, build(), "ner").from_bytes(ner.to_bytes())
    again = list(loaded.pipe(nlp.make_doc(text) for text, _ in TRAIN_DATA))
    assert ents_with_confidence(again) == ents_with_confidence(docs)


def test_missing_weights_file_is_explained(trained_nlp, tmp_path):
    trained_nlp.to_disk(tmp_path)
    (tmp_path / "ner" / "model").unlink()
    with pytest.raises(ValueError, match=r"weights file .* is missing.*ner.model"):
        spacy.load(tmp_path)


def test_corrupted_weights_file_is_explained(trained_nlp, tmp_path):
    trained_nlp.to_disk(tmp_path)
    path = tmp_path / "ner" / "model"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"Could not load the weights.*damaged"):
        spacy.load(tmp_path)
    path.write_bytes(b"not a model at all")
    with pytest.raises(ValueError, match=r"Could not load the weights"):
        spacy.load(tmp_path)


def test_impossible_sizes_in_config_are_explained():
    nlp = English()
    with pytest.raises(ValueError, match=r"width \(130\) must be divisible by n_heads \(4\)"):
        nlp.add_pipe("hybrid_ner", config={"model": dict(TINY_MODEL, width=130, n_heads=4)})
    with pytest.raises(ValueError, match="stride"):
        nlp.add_pipe("hybrid_ner", config={"model": dict(TINY_MODEL, window=8, stride=9)})


def test_long_document_in_bounded_memory(tmp_path, trained_nlp):
    """A 100,000-token document is annotated; peak memory stays far from quadratic."""
    trained_nlp.to_disk(tmp_path / "model")
    code = (
        "import spacy, torch\n"
        "torch.set_num_threads(1)\n"
        "from spacy.tokens import Doc\n"
        "nlp = spacy.load('model')\n"
        "words = ('Michael Jordan was born in Brooklyn , New York .'.split()) * 10000\n"
        "doc = Doc(nlp.vocab, words=words)\n"
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent
        # (here pytest) across exec, which would hide the growth.
        "def peak_kb():\n"
        "    status = dict(line.split(':', 1) for line in open('/proc/self/status'))\n"
        "    return int(status['VmHWM'].split()[0])\n"
        "before = peak_kb()\n"
        "doc = nlp(doc)\n"
        "after = peak_kb()\n"
        "labels = [(e.end - e.start, e.label_) for e in doc.ents]\n"
        "print(len(doc), len(doc.ents), (after - before) // 1024)\n"
        "print(sorted(set(labels)))\n"
    )
    out = run_python(code, cwd=tmp_path).stdout.strip().splitlines()
    n_tokens, n_ents, grown_mb = map(int, out[-2].split())
    assert n_tokens == 100_000
    # The model knows this sentence: about three entities per repetition.
    assert 25_000 <= n_ents <= 35_000
    assert grown_mb < 1500, f"peak memory grew by {grown_mb} MB"


def test_mixed_precision_config_trains_on_cpu():
    """mixed_precision is a CUDA feature: a GPU config still trains and predicts on CPU."""
    nlp = train_tiny(n_iter=3, model=dict(TINY_MODEL, mixed_precision=True))
    doc = nlp("Michael Jordan was born in Brooklyn , New York .")
    assert all(0 <= e.start < e.end <= len(doc) for e in doc.ents)
    wrapper = nlp.get_pipe("ner").model.get_ref("encoder")
    assert wrapper.shims[0]._mixed_precision is False


def test_bfloat16_mixed_precision_path_learns_and_predicts_in_float32_after_reload(monkeypatch, tmp_path):
    """On a GPU with bfloat16 (compute capability >= 8) the encoder autocasts itself,
    without thinc's float16 autocast and loss scaling. The same code runs under CPU
    autocast here: it learns, and the saved pipeline predicts the same entities in
    float32 where mixed precision is off (as on a CPU-only machine)."""
    import torch

    from spacy_hybridner.layers import encoder as encoder_layer

    monkeypatch.setattr(encoder_layer, "get_torch_default_device", lambda: torch.device("cuda", 0))
    monkeypatch.setattr(encoder_layer, "mixed_precision_dtype", lambda device: torch.bfloat16)
    nlp = train_tiny(n_iter=100, model=dict(TINY_MODEL, mixed_precision=True))
    wrapper = nlp.get_pipe("ner").model.get_ref("encoder")
    assert torch_module(wrapper).autocast_dtype == torch.bfloat16
    assert wrapper.shims[0]._mixed_precision is False
    assert nlp.evaluate(make_examples(nlp))["ents_f"] == 1.0
    expected = [ents_of(doc) for doc in nlp.pipe([text for text, _ in TRAIN_DATA])]
    monkeypatch.undo()
    reloaded = [[e[:3] for e in doc] for doc in reload_and_predict(nlp, [text for text, _ in TRAIN_DATA], tmp_path)]
    assert reloaded == expected


def test_encoder_autocast_keeps_float32_outputs_and_lstm():
    import torch

    from spacy_hybridner.modules import HybridEncoder

    torch.manual_seed(0)
    sizes = dict(
        width=16,
        depth=1,
        n_heads=2,
        ffn_width=32,
        lstm_depth=1,
        uni_lstm_depth=0,
        dropout=0.0,
        token_dropout=0.0,
        attention_dropout=None,
    )
    plain = HybridEncoder(8, 5, **sizes).eval()
    mixed = HybridEncoder(8, 5, **sizes, autocast_dtype=torch.bfloat16).eval()
    mixed.load_state_dict(plain.state_dict())
    X, lengths = torch.randn(3, 7, 8), torch.tensor([7, 3, 1])
    Y = mixed(X, lengths)
    assert Y.dtype == torch.float32
    assert torch.allclose(Y, plain(X, lengths), atol=0.1)
    Y.sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in mixed.lstm.parameters())


def test_calibrate_fits_temperature_keeps_entities_and_is_saved(tmp_path):
    nlp = train_tiny(n_iter=30, seed=3)
    ner = nlp.get_pipe("ner")
    texts = [text for text, _ in TRAIN_DATA]
    before = [ents_of(d) for d in nlp.pipe(texts)]
    confidences = [e._.confidence for d in nlp.pipe(texts) for e in d.ents]
    result = ner.calibrate(make_examples(nlp), temperatures=[0.5, 1.0, 2.0, 4.0])
    assert result["temperature"] in (0.5, 1.0, 2.0, 4.0) and result["temperature"] == ner.cfg["temperature"]
    assert 0.0 <= result["ece_after"] <= 1.0

    def log_loss(temperature):
        # Through the public API: ent._.confidence against the gold entities.
        ner.cfg["temperature"] = temperature
        losses = []
        for doc, (_, gold) in zip(nlp.pipe(texts), TRAIN_DATA):
            for e in doc.ents:
                p = min(max(e._.confidence, 1e-7), 1 - 1e-7)
                losses.append(-math.log(p if (e.start_char, e.end_char, e.label_) in gold else 1 - p))
        return sum(losses) / len(losses)

    chosen = result["temperature"]
    losses = {t: log_loss(t) for t in (0.5, 1.0, 2.0, 4.0)}
    ner.cfg["temperature"] = chosen
    assert losses[chosen] == pytest.approx(min(losses.values()), abs=1e-6)
    assert result["nll_after"] == pytest.approx(losses[chosen], rel=1e-4)
    assert [ents_of(d) for d in nlp.pipe(texts)] == before  # entities never change
    if result["temperature"] != 1.0:
        assert [e._.confidence for d in nlp.pipe(texts) for e in d.ents] != confidences
    nlp.to_disk(tmp_path)
    assert spacy.load(tmp_path).get_pipe("ner").cfg["temperature"] == result["temperature"]


@pytest.mark.parametrize(
    "embed",
    [
        {"@architectures": "spacy-hybridner.CharMultiHashEmbed.v1"},
        {"@architectures": "spacy-hybridner.CharMultiHashEmbed.v3", "word_dropout_rate": 0.25},
        {"@architectures": "spacy-hybridner.CharMultiHashEmbed.v3", "char_cnn_width": 16},
    ],
)
def test_character_embedding_with_token_dropout_learns_and_reloads(tmp_path, embed):
    """The CharMultiHashEmbed layers (hash embeddings + character embeddings) with word
    dropout train like the default model, and the pipeline reloads to the same output."""
    model = copy.deepcopy(TINY_MODEL)
    model["token_dropout"] = 0.1
    model["tok2vec"]["embed"] = {
        **embed,
        "width": 32,
        "attrs": ["NORM", "PREFIX", "SUFFIX", "SHAPE"],
        "rows": [500, 100, 200, 200],
        "include_static_vectors": False,
        "nM": 8,
        "nC": 4,
    }
    nlp = train_tiny(n_iter=100, model=model)
    assert nlp.evaluate(make_examples(nlp))["ents_f"] == 1.0
    texts = [text for text, _ in TRAIN_DATA] + ["Tim Cook visited Berlin ."]
    assert_same_entities(reload_and_predict(nlp, texts, tmp_path), ents_with_confidence(nlp.pipe(texts)))


def test_thinc_layers_multiply_through_numpy_blas(trained_nlp, tmp_path):
    """On the CPU the component's thinc layers hand gemm to numpy's BLAS (all cores)
    instead of single-threaded blis, after initialize and after loading; the entities
    are those of blis."""
    from thinc.api import NumpyOps

    def ops_of(nlp):
        return {(type(n.ops).__name__, getattr(n.ops, "use_blis", None)) for n in nlp.get_pipe("ner").model.walk()}

    assert ops_of(trained_nlp) == {("NumpyOps", False)}
    trained_nlp.to_disk(tmp_path)
    loaded = spacy.load(tmp_path)
    assert ops_of(loaded) == {("NumpyOps", False)}
    texts = [text for text, _ in TRAIN_DATA] + ["Tim Cook visited Berlin and Paris ."]
    expected = ents_with_confidence(loaded.pipe(texts))
    blis = NumpyOps()
    for node in loaded.get_pipe("ner").model.walk():
        node.ops = blis
    got = ents_with_confidence(loaded.pipe(texts))
    assert [[e[:3] for e in doc] for doc in got] == [[e[:3] for e in doc] for doc in expected]
    assert [e[3] for doc in got for e in doc] == pytest.approx([e[3] for doc in expected for e in doc], abs=1e-5)


def test_prediction_runs_one_blas_thread_and_puts_the_count_back(trained_nlp, monkeypatch):
    """Prediction, of one text or of a batch, runs numpy's BLAS on one thread; the count
    is back afterwards, also after calls from many threads at once, and the entities
    are those of a pipeline that keeps every thread."""
    import contextlib
    import threading

    from threadpoolctl import threadpool_limits

    from spacy_hybridner import pipeline_component
    from spacy_hybridner.threads import blas_threads

    seen = []
    decode = pipeline_component.crf_decode

    def counting_decode(*args, **kwargs):
        seen.append(blas_threads())
        return decode(*args, **kwargs)

    texts = [text for text, _ in TRAIN_DATA] + ["Tim Cook visited Berlin and Paris ."]
    monkeypatch.setattr(pipeline_component, "crf_decode", counting_decode)
    with threadpool_limits(limits=2, user_api="blas"):
        single = ents_with_confidence([trained_nlp(texts[-1])])
        batch = ents_with_confidence(trained_nlp.pipe(texts, batch_size=len(texts)))
        assert seen == [1, 1] and blas_threads() == 2
        workers = [threading.Thread(target=lambda: [trained_nlp(texts[-1]) for _ in range(20)]) for _ in range(6)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert len(seen) == 122 and blas_threads() == 2
        monkeypatch.setattr(pipeline_component, "one_blas_thread", lambda ops: contextlib.nullcontext())
        every_thread = ents_with_confidence(trained_nlp.pipe(texts, batch_size=len(texts)))
        assert seen[-1] == 2
    for doc, want in zip(batch + single, every_thread + every_thread[-1:]):
        assert [e[:3] for e in doc] == [e[:3] for e in want]  # OpenBLAS rounds differently with 2 threads
        assert [e[3] for e in doc] == pytest.approx([e[3] for e in want], abs=1e-5)
