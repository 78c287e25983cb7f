"""Entity lines, displaCy HTML and the showcase as plain functions, and the thin
commands over them."""

import spacy
from typer.testing import CliRunner

from spacy_hybridner.cli import app
from spacy_hybridner.extensions import install_extensions
from spacy_hybridner.tools.corpora import convert_corpus
from spacy_hybridner.tools.display import entity_lines, showcase

from conftest import TRAIN_DATA, write_corpus


def test_entity_lines_show_label_text_and_confidence():
    install_extensions()
    nlp = spacy.blank("en")
    doc = nlp.make_doc("Anna met Bob")
    doc.ents = [doc.char_span(0, 4, "PER"), doc.char_span(9, 12, "PER")]
    doc.ents[0]._.confidence = 0.876
    assert entity_lines(doc, indent="  ") == ["  PER          Anna (0.88)", "  PER          Bob"]


def test_showcase_function_and_command_agree(trained_nlp, tmp_path):
    data = write_corpus(tmp_path / "test.spacy")
    docs = showcase(trained_nlp, data, tmp_path / "f.html", n_docs=3)
    assert [doc.text for doc in docs] == [text for text, _ in TRAIN_DATA[:3]]
    html = (tmp_path / "f.html").read_text()
    assert html.count("<figure") == 3
    trained_nlp.to_disk(tmp_path / "model")
    result = CliRunner().invoke(
        app, ["showcase", str(tmp_path / "model"), str(data), str(tmp_path / "c.html"), "--n-docs", "3"]
    )
    assert result.exit_code == 0, result.output
    expected = [line for doc in docs for line in [doc.text, *entity_lines(doc, "    ")]]
    assert result.output.splitlines()[: len(expected)] == expected
    assert (tmp_path / "c.html").read_text().count("<figure") == 3


def test_visualize_command_writes_html(trained_nlp, tmp_path):
    trained_nlp.to_disk(tmp_path / "model")
    text = TRAIN_DATA[1][0]
    result = CliRunner().invoke(app, ["visualize", str(tmp_path / "model"), text, "-o", str(tmp_path / "v" / "e.html")])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[:-1] == entity_lines(trained_nlp(text))
    assert "<figure" in (tmp_path / "v" / "e.html").read_text()


def test_convert_corpus_reports_each_split_and_explains_a_missing_file(tmp_path):
    path = tmp_path / "ner.csv"
    rows = [b"Sentence #,Word,POS,Tag"] + [f"Sentence: {i},Anna,NNP,B-per".encode() for i in range(1, 11)]
    path.write_bytes(b"\n".join(rows) + b"\n")
    stats = convert_corpus("gmb", path, tmp_path / "out")
    assert {k: (v["docs"], v["entities"]) for k, v in stats.items()} == {
        "train": (8, {"per": 8}),
        "dev": (1, {"per": 1}),
        "test": (1, {"per": 1}),
    }
    result = CliRunner().invoke(app, ["convert", "conll03", str(tmp_path), str(tmp_path / "c")])
    assert result.exit_code == 2 and "eng.train" in result.output
