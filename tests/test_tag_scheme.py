"""The BILUO constraints agree with spaCy's own reading of BILUO tags."""

import itertools

import pytest
import spacy
from spacy.training import biluo_tags_to_spans, offsets_to_biluo_tags

from spacy_hybridner.tag_scheme import biluo_constraints, biluo_tag_names

TAGS = biluo_tag_names(["LOC", "PER"])


def allowed(constraints, path):
    if not constraints["allowed_start"][path[0]] or not constraints["allowed_end"][path[-1]]:
        return False
    return all(constraints["allowed_transitions"][a][b] for a, b in zip(path, path[1:]))


def spacy_round_trips(doc, tags):
    """True when spaCy reads the tags as spans and writes the same tags back."""
    try:
        spans = biluo_tags_to_spans(doc, tags)
        offsets = [(s.start_char, s.end_char, s.label_) for s in spans]
        return offsets_to_biluo_tags(doc, offsets) == tags
    except Exception:
        return False


def test_tag_names():
    assert TAGS == ["O", "B-LOC", "I-LOC", "L-LOC", "U-LOC", "B-PER", "I-PER", "L-PER", "U-PER"]


@pytest.mark.parametrize("length", [1, 2, 3])
def test_allowed_sequences_are_exactly_valid_biluo(length):
    """Every sequence the CRF may decode is one spaCy reads back unchanged, and every
    other sequence is one it does not."""
    nlp = spacy.blank("en")
    doc = nlp.make_doc(" ".join(["w"] * length))
    constraints = biluo_constraints(TAGS)
    for path in itertools.product(range(len(TAGS)), repeat=length):
        tags = [TAGS[i] for i in path]
        assert allowed(constraints, path) == spacy_round_trips(doc, tags), tags


def test_gold_tags_from_spacy_are_allowed():
    nlp = spacy.blank("en")
    doc = nlp.make_doc("Anna Lee flew from New York City to Rome with Bob")
    tags = offsets_to_biluo_tags(doc, [(0, 8, "PER"), (19, 32, "LOC"), (36, 40, "LOC"), (46, 49, "PER")])
    assert allowed(biluo_constraints(TAGS), [TAGS.index(t) for t in tags])


def test_bad_tag_name_is_rejected():
    with pytest.raises(ValueError, match="not a BILUO tag"):
        biluo_constraints(["O", "X-PER"])
