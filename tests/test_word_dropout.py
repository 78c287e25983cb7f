"""Word dropout on embedding rows; CharMultiHashEmbed.v3, where it and the character CNN go."""

import numpy
import pytest
import spacy
from spacy.util import registry
from thinc.api import fix_random_seed

from spacy_hybridner.layers import char_cnn, word_dropout


def test_word_dropout_zeroes_whole_rows_in_training_only():
    fix_random_seed(0)
    layer = word_dropout(0.3)
    X = numpy.ones((2000, 8), dtype="f")
    Y, backprop = layer(X, is_train=True)
    dropped = (Y == 0).all(axis=1)
    assert ((Y == 0).any(axis=1) == dropped).all()  # whole rows, never single cells
    assert 0.25 < dropped.mean() < 0.35
    assert (Y[~dropped] == 1).all()  # kept rows are not rescaled
    dX = backprop(numpy.ones_like(X))
    assert ((dX == 0).all(axis=1) == dropped).all()
    assert layer.predict(X) is X


def test_word_dropout_rejects_a_rate_outside_zero_to_one():
    with pytest.raises(ValueError, match=r"word_dropout rate must be in \[0, 1\), got 1.0"):
        word_dropout(1.0)


def build_v2(**kwargs):
    settings = dict(
        width=16, attrs=["NORM", "PREFIX", "SHAPE"], rows=[100, 50, 50], include_static_vectors=False, nM=4, nC=4
    )
    settings.update(kwargs)
    return registry.get("architectures", "spacy-hybridner.CharMultiHashEmbed.v3")(**settings)


def test_v2_drops_the_word_table_only():
    """With word dropout, some tokens lose their NORM row in training while their
    prefix, shape and characters still reach the output; prediction keeps everything."""
    nlp = spacy.blank("en")
    docs = [nlp("Mark Ramprakash scored 55 for Middlesex at Lord 's .") for _ in range(20)]
    fix_random_seed(0)
    model = build_v2(word_dropout_rate=0.5)
    model.initialize(X=docs)
    dropouts = [node for node in model.walk() if node.name == "word_dropout"]
    assert len(dropouts) == 1  # after the NORM table, not PREFIX or SHAPE
    fix_random_seed(1)
    trained = numpy.concatenate(model(docs, is_train=True)[0])
    predicted = numpy.concatenate(model.predict(docs))
    assert not numpy.allclose(trained, predicted)
    assert numpy.allclose(numpy.concatenate(model.predict(docs)), predicted)


def test_v2_without_word_dropout_has_no_dropout_layer_and_explains_bad_rows():
    model = build_v2()
    assert not [node for node in model.walk() if node.name == "word_dropout"]
    with pytest.raises(ValueError, match="got 3 attrs but 2 rows"):
        build_v2(rows=[100, 50])


def test_embedding_v2_mixes_the_cnn_in_and_explains_a_bad_width():
    nlp = spacy.blank("en")
    docs = [nlp("Mark Ramprakash scored 55")]
    model = build_v2(char_cnn_width=8)
    model.initialize(X=docs)
    assert [node for node in model.walk() if node.name == "char_cnn"]
    assert model.predict(docs)[0].shape == (4, 16)
    with pytest.raises(ValueError, match="char_cnn_width must be 0"):
        build_v2(char_cnn_width=-1)
    with pytest.raises(ValueError, match="max_chars must be at least 2"):
        char_cnn(8, max_chars=1)
