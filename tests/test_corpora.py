"""Corpus readers: counts against the published ones, and clear errors on bad files."""

from pathlib import Path

import pytest
import spacy
from spacy.tokens import DocBin
from typer.testing import CliRunner

from spacy_hybridner.cli import app
from spacy_hybridner.tools.corpora import (
    CorpusFormatError,
    entity_counts,
    read_conll03,
    read_gmb,
    read_token_tag_file,
    sentences_to_docs,
    split_items,
)

DATA = Path(__file__).parent.parent.parent / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.exists(), reason="../shared/data is not beside the project")


@needs_data
def test_conll03_counts_match_the_published_ones():
    train = read_conll03(DATA / "conll2003" / "eng.train")
    test = read_conll03(DATA / "conll2003" / "eng.testb")
    assert entity_counts(train) == {"LOC": 7140, "MISC": 3438, "ORG": 6321, "PER": 6600}
    assert entity_counts(test) == {"LOC": 1668, "MISC": 702, "ORG": 1661, "PER": 1617}
    # Documents kept whole, the test file's own -DOCSTART- lines included.
    assert (len(train), len(test)) == (946, 231)
    assert sum(len(d) for d in train) == 203_621 and sum(len(d) for d in test) == 46_435
    assert sum(1 for d in test for _ in d.sents) == 3_453
    assert not any(t.text == "-DOCSTART-" for d in test for t in d)


@needs_data
def test_gmb_counts_and_cut_off_sentence():
    sentences = read_gmb(DATA / "gmb" / "ner_dataset.csv.zip")
    # 47,959 sentences in 1,048,575 rows; the last one is cut off by the row limit.
    assert len(sentences) == 47_958
    assert sentences[0][0][:3] == ["Thousands", "of", "demonstrators"]
    assert sentences[0][1][6] == "B-geo"
    n_tokens = sum(len(words) for words, _ in sentences)
    assert 1_048_575 - 30 < n_tokens < 1_048_575
    assert any('"' not in w and "," in w for words, _ in sentences[:2000] for w in words)  # quoted "10,000"


@needs_data
def test_wnut17_counts_and_tab_only_separators():
    train = read_token_tag_file(DATA / "wnut17" / "wnut17train.conll")
    dev = read_token_tag_file(DATA / "wnut17" / "emerging.dev.conll")
    assert (len(train), sum(len(w) for w, _ in train)) == (3_394, 62_730)
    assert (len(dev), sum(len(w) for w, _ in dev)) == (1_009, 15_733)
    docs = sentences_to_docs(train, spacy.blank("xx").vocab)
    assert set(entity_counts(docs)) == {"corporation", "creative-work", "group", "location", "person", "product"}


GMB_OK = (
    b"Sentence #,Word,POS,Tag\r\nSentence: 1,Anna,NNP,B-per\r\n,lives,VBZ,O\r\n,in,IN,O\r\n"
    b',"Paris",NNP,B-geo\r\n,",",",",O\r\nSentence: 2,Hi,UH,O\r\n'
)


def test_gmb_reader_small_file(tmp_path):
    path = tmp_path / "ner.csv"
    path.write_bytes(GMB_OK)
    sentences = read_gmb(path)
    assert sentences == [(["Anna", "lives", "in", "Paris", ","], ["B-per", "O", "O", "B-geo", "O"]), (["Hi"], ["O"])]
    doc = sentences_to_docs(sentences, spacy.blank("xx").vocab)[0]
    assert [(e.text, e.label_) for e in doc.ents] == [("Anna", "per"), ("Paris", "geo")]


@pytest.mark.parametrize(
    "data,line,expected",
    [
        (GMB_OK.replace(b",lives,VBZ,O", b",lives,VBZ"), 3, "4 columns"),
        (GMB_OK.replace(b",in,IN,O", b",in,IN,X-geo"), 4, "B-/I-"),
        (GMB_OK.replace(b",lives,", b",liv\x81es,"), 3, "cp1252"),
        (GMB_OK.replace(b"Sentence #,Word", b"Sentence,Word"), 1, "header"),
    ],
)
def test_gmb_reader_errors_name_file_line_and_expectation(tmp_path, data, line, expected):
    path = tmp_path / "broken.csv"
    path.write_bytes(data)
    pattern = rf"broken\.csv, line {line}: .*Expected .*{expected}|broken\.csv, line {line}: .*{expected}.*Expected"
    with pytest.raises(CorpusFormatError, match=pattern):
        read_gmb(path)


def test_token_tag_reader_errors(tmp_path):
    path = tmp_path / "bad.conll"
    path.write_bytes(b"Anna\tB-person\n\t\nlives\tO\tX\n")
    with pytest.raises(CorpusFormatError, match=r"bad\.conll, line 3: 3 tab-separated columns.*Expected 2 columns"):
        read_token_tag_file(path)
    path.write_bytes("Zo\xeb\tB-person\n".encode("latin-1"))
    with pytest.raises(CorpusFormatError, match=r"bad\.conll, line 1: bytes that are not valid utf8"):
        read_token_tag_file(path)
    path.write_bytes(b"Anna\tB-person\nlives\tOUT\n")
    with pytest.raises(CorpusFormatError, match=r"line 2: bad NER tag 'OUT'"):
        read_token_tag_file(path)


def test_conll03_reader_small_file_and_errors(tmp_path):
    path = tmp_path / "eng.mini"
    path.write_text(
        "-DOCSTART- -X- -X- O\n\nEU NNP I-NP I-ORG\nrejects VBZ I-VP O\nGerman JJ I-NP I-MISC\n\n"
        "-DOCSTART- -X- O O\n\nPeter NNP I-NP I-PER\nBlackburn NNP I-NP I-PER\n\n\n"
    )
    docs = read_conll03(path)
    assert [[(e.text, e.label_) for e in d.ents] for d in docs] == [
        [("EU", "ORG"), ("German", "MISC")],
        [("Peter Blackburn", "PER")],
    ]
    path.write_text("EU NNP I-NP I-ORG\nrejects VBZ O\n")
    with pytest.raises(CorpusFormatError, match=r"eng\.mini, line 2: 3 columns.*Expected 4"):
        read_conll03(path)


def test_split_is_deterministic_and_sized():
    items = list(range(1000))
    a = split_items(items, 0.1, 0.1, seed=0)
    assert a == split_items(items, 0.1, 0.1, seed=0)
    assert a != split_items(items, 0.1, 0.1, seed=1)
    assert [len(a[k]) for k in ("train", "dev", "test")] == [800, 100, 100]
    assert sorted(a["train"] + a["dev"] + a["test"]) == items


def test_convert_command_writes_three_splits(tmp_path):
    path = tmp_path / "ner.csv"
    rows = [b"Sentence #,Word,POS,Tag"] + [
        f"Sentence: {i},Anna,NNP,B-per\r\n,sings,VBZ,O".encode() for i in range(1, 21)
    ]
    path.write_bytes(b"\r\n".join(rows) + b"\r\n")
    result = CliRunner().invoke(app, ["convert", "gmb", str(path), str(tmp_path / "out"), "--limit", "10"])
    assert result.exit_code == 0, result.output
    nlp = spacy.blank("xx")
    counts = {
        split: len(list(DocBin().from_disk(tmp_path / "out" / f"{split}.spacy").get_docs(nlp.vocab)))
        for split in ("train", "dev", "test")
    }
    assert counts == {"train": 8, "dev": 1, "test": 1}
