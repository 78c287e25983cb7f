"""The calibration maths as plain functions, shared by calibrate and the report."""

import math

import numpy
import pytest
import spacy

from spacy_hybridner.calibration import (
    calibrate_pipeline,
    entity_offsets,
    expected_calibration_error,
    fit_temperature,
    is_correct,
    log_loss,
)

from conftest import make_examples, train_tiny


def test_an_entity_is_right_only_with_the_same_characters_and_label():
    nlp = spacy.blank("en")
    gold = nlp.make_doc("Anna met Bob in Paris")
    gold.ents = [gold.char_span(0, 4, "PER"), gold.char_span(16, 21, "LOC")]
    pred = nlp.make_doc("Anna met Bob in Paris")
    pred.ents = [pred.char_span(0, 4, "PER"), pred.char_span(9, 12, "PER"), pred.char_span(16, 21, "ORG")]
    offsets = entity_offsets(gold)
    assert [is_correct(ent, offsets) for ent in pred.ents] == [True, False, False]


def test_log_loss_and_calibration_error_by_hand():
    assert log_loss([0.9, 0.2], [True, False]) == pytest.approx(-(math.log(0.9) + math.log(0.8)) / 2)
    assert log_loss([], []) == 0.0
    # Two at 0.9 (one right), two at 0.3 (one right): 0.5 * 0.4 + 0.5 * 0.2.
    assert expected_calibration_error([0.9, 0.9, 0.3, 0.3], [True, False, True, False]) == pytest.approx(0.3)


def test_fit_temperature_picks_the_lowest_log_loss():
    logits = numpy.array([3.0, 2.0, 1.0, -1.0, 0.5, 2.5])
    correct = [True, False, True, False, False, True]

    def confidences_at(t):
        return 1 / (1 + numpy.exp(-logits / t))

    candidates = [0.5, 1.0, 2.0, 4.0]
    result = fit_temperature(confidences_at, correct, candidates, current=1.0)
    losses = {t: log_loss(confidences_at(t), correct) for t in candidates}
    assert result["temperature"] == min(losses, key=losses.get)
    assert result["nll_before"] == pytest.approx(losses[1.0])
    assert result["nll_after"] == pytest.approx(min(losses.values()))
    assert result["n_entities"] == 6
    with pytest.raises(ValueError, match="positive"):
        fit_temperature(confidences_at, correct, [0.0, 1.0])


def test_calibrate_pipeline_sets_the_component_temperature():
    nlp = train_tiny(n_iter=30, seed=3)
    results = calibrate_pipeline(nlp, make_examples(nlp), temperatures=[0.5, 1.0, 2.0])
    assert set(results) == {"ner"}
    assert nlp.get_pipe("ner").cfg["temperature"] == results["ner"]["temperature"]
    assert calibrate_pipeline(spacy.blank("en"), make_examples(nlp)) == {}
