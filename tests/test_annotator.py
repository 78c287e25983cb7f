"""The engine-neutral annotator: the same entities and confidences as nlp.pipe."""

import pickle

import pytest
import spacy

from spacy_hybridner.annotate.annotator import Annotator, doc_records, filter_records, surrogate_problem, text_problem

from conftest import TRAIN_DATA

TEXTS = [text for text, _ in TRAIN_DATA] + ["Tim Cook visited Berlin and Paris .", ""]


def test_records_match_nlp_pipe(model_dir):
    nlp = spacy.load(model_dir)
    expected = [
        [(e.start_char, e.end_char, e.label_, e.text, e._.confidence) for e in doc.ents] for doc in nlp.pipe(TEXTS)
    ]
    got = Annotator(str(model_dir), batch_size=2).annotate(TEXTS)
    # Same spans; confidences equal up to float32 rounding (a batch of other
    # lengths pads differently, which moves the last bits of the sums).
    assert [[tuple(r.values())[:4] for r in recs] for recs in got] == [[e[:4] for e in doc] for doc in expected]
    assert [[r["confidence"] for r in recs] for recs in got] == [
        [pytest.approx(e[4], rel=1e-5) for e in doc] for doc in expected
    ]
    assert any(got), "the tiny model should find entities"
    assert all(isinstance(r["confidence"], float) and 0.0 < r["confidence"] <= 1.0 for recs in got for r in recs)
    assert list(got[0][0]) == ["start_char", "end_char", "label", "text", "confidence"]


def test_pickled_annotator_carries_settings_not_the_pipeline(model_dir):
    annotator = Annotator(str(model_dir), batch_size=3)
    before = annotator(TEXTS)
    data = pickle.dumps(annotator)
    assert len(data) < 1000  # no weights inside
    clone = pickle.loads(data)
    assert clone.batch_size == 3  # and no pipeline: the pickle holds no weights
    assert clone(TEXTS) == before


def test_info_names_the_pipeline(model_dir):
    info = Annotator(str(model_dir)).info()
    assert info["pipeline"] == ["ner"]
    assert info["labels"] == ["LOC", "ORG", "PER"]
    assert info["lang"] == "en"
    assert info["spacy_version"] == spacy.__version__


def test_any_pipeline_works_without_confidence():
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns([{"label": "ORG", "pattern": "Apple"}])
    records = doc_records(nlp("Apple hired Tim Cook ."))
    assert records == [{"start_char": 0, "end_char": 5, "label": "ORG", "text": "Apple", "confidence": None}]


def test_text_problem_and_filter():
    assert text_problem("fine", max_chars=10) is None
    assert "string" in text_problem(3)
    assert "limit of 3" in text_problem("four", max_chars=3)
    # JSON allows a lone surrogate escape ("\ud800"); UTF-8 (and spaCy's string store) cannot hold it
    assert "lone surrogate U+D800 at character 2" in text_problem("ab\ud800c")
    assert "id holds a lone surrogate U+DFFF" in surrogate_problem("\udfff", "id")
    assert text_problem("control \x00\x1f and separators \u2028\u2029 are text") is None
    records = [{"confidence": 0.9}, {"confidence": 0.2}, {"confidence": None}]
    assert filter_records(records, None) == records
    assert filter_records(records, 0.5) == [{"confidence": 0.9}]
