"""The character CNN: which characters it reads, and that it sees the middle of a word."""

import numpy
import spacy
from thinc.api import fix_random_seed

from spacy_hybridner.layers import char_cnn, char_embed
from spacy_hybridner.layers.char_cnn import char_codes


def spelled(docs, max_chars):
    codes, counts = char_codes(docs, max_chars)
    words, start = [], 0
    for n in counts:
        words.append("".join(chr(c) for c in codes[start : start + n]))
        start += n
    return words


def test_reads_every_character_and_both_ends_of_long_words():
    nlp = spacy.blank("en")
    docs = [nlp("Ouagadougou hosts Burkina Faso's supercalifragilistic fair"), nlp(""), nlp("Zürich 東京 𝔘𝔫𝔦😀")]
    assert spelled(docs, 10) == [
        "Ouagadougou"[:5] + "Ouagadougou"[-5:],
        "hosts",
        "Burkina",
        "Faso",
        "'s",
        "super" + "istic",
        "fair",
        "Zürich",
        "東京",
        "𝔘𝔫𝔦",
        "😀",
    ]
    assert spelled(docs, 20)[0] == "Ouagadougou"


def test_sees_the_middle_of_a_word_that_character_embed_cannot():
    """'Manchester' and 'Mancaster' share their first and last four characters, all
    that spaCy's CharacterEmbed with nC = 8 reads; the CNN tells them apart."""
    nlp = spacy.blank("en")
    docs = [nlp("Manchester Mancaster")]
    fix_random_seed(0)
    ends_only = char_embed(nM=4, nC=8)  # the layer inside spacy.CharacterEmbed.v2
    ends_only.initialize(X=docs)
    rows = ends_only.predict(docs)[0]
    assert numpy.allclose(rows[0], rows[1])
    model = char_cnn(16)
    model.initialize(X=docs)
    Y = model.predict(docs)
    assert Y.lengths.tolist() == [2]
    assert not numpy.allclose(Y.dataXd[0], Y.dataXd[1])


def test_gradients_reach_the_character_table():
    nlp = spacy.blank("en")
    docs = [nlp("Mark Ramprakash scored 55"), nlp("for Middlesex")]
    model = char_cnn(8)
    model.initialize(X=docs)
    Y, backprop = model(docs, is_train=True)
    assert Y.dataXd.shape == (6, 8)
    backprop(Y)
    table = [node for node in model.walk() if node.name == "hashembed"][0]
    assert numpy.abs(table.get_grad("E")).sum() > 0
