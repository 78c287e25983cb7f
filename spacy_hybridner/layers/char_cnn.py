"""A character CNN over every character of a word: a thinc layer, no PyTorch."""

from typing import Callable, List, Tuple

import numpy
from spacy.attrs import IDX, LENGTH
from spacy.tokens import Doc
from thinc.api import HashEmbed, Model, Relu, chain, expand_window, reduce_max, with_array
from thinc.types import Array1d, Ints1d, Ragged


def char_cnn(
    width: int, *, char_width: int = 32, rows: int = 1000, max_chars: int = 20, seed: int = 20
) -> Model[List[Doc], Ragged]:
    """Embed each character of each word (case kept), run one convolution over
    three characters at a time (ReLU) and max-pool over the word, as in the
    BiLSTM-CNN-CRF of Ma & Hovy (2016). Unlike spaCy's ``CharacterEmbed``, which sees
    a fixed number of bytes from each end of a word, it sees the middle of long
    names too (what that is worth on CoNLL-2003: docs/benchmarks.md, "Experiments").

    width (int): Output width per word.
    char_width (int): Width of each character's embedding.
    rows (int): Rows of the character hash table.
    max_chars (int): Longest span of a word that is read; longer words are read as
        their first and last ``max_chars // 2`` characters.
    seed (int): Seed of the character hash table.
    RETURNS (Model[List[Doc], Ragged]): One row per token, as ``list2ragged`` gives.
    """
    if width < 1 or char_width < 1 or rows < 1:
        raise ValueError(f"char_cnn needs positive sizes, got width={width}, char_width={char_width}, rows={rows}.")
    if max_chars < 2:
        raise ValueError(f"max_chars must be at least 2, got {max_chars}.")
    conv = chain(
        with_array(HashEmbed(char_width, rows, seed=seed)),
        expand_window(window_size=1),
        with_array(Relu(width, char_width * 3)),
        reduce_max(),
    )
    return Model("char_cnn", _forward, init=_init, layers=[conv], attrs={"max_chars": max_chars}, dims={"nO": width})


def _forward(model: Model, docs: List[Doc], is_train: bool) -> Tuple[Ragged, Callable]:
    conv = model.layers[0]
    ops = model.ops
    lengths = ops.asarray1i([len(doc) for doc in docs])
    codes, chars_per_token = char_codes(docs, model.attrs["max_chars"])
    if chars_per_token.shape[0] == 0:
        return Ragged(ops.alloc2f(0, model.get_dim("nO")), lengths), lambda dY: []
    chars = Ragged(ops.asarray(codes, dtype="uint64"), ops.asarray1i(chars_per_token))
    vectors, backprop_conv = conv(chars, is_train)

    def backprop(dY: Ragged) -> List[Doc]:
        backprop_conv(dY.dataXd)
        return []

    return Ragged(vectors, lengths), backprop


def _init(model: Model, X=None, Y=None) -> None:
    model.layers[0].initialize()


def char_codes(docs: List[Doc], max_chars: int) -> Tuple[Array1d, Ints1d]:
    """The Unicode code points of every token's characters, all tokens of all docs
    one after the other, and how many belong to each token. A token longer than
    ``max_chars`` gives its first and last ``max_chars // 2`` (spaCy has no empty
    tokens, so every token has at least one). Vectorised over tokens (numpy).
    """
    half = max_chars // 2
    all_codes = []
    all_counts = []
    for doc in docs:
        if len(doc) == 0:
            continue
        text = numpy.frombuffer(doc.text.encode("utf-32-le"), dtype="<u4")
        starts_lengths = doc.to_array([IDX, LENGTH]).astype("int64")
        starts, lengths = starts_lengths[:, 0], starts_lengths[:, 1]
        long_word = lengths > max_chars
        counts = numpy.where(long_word, 2 * half, lengths)
        # Position of each kept character inside its token: 0, 1, ... and, past the
        # first half of a long word, shifted to that word's last characters.
        token_of = numpy.repeat(numpy.arange(len(counts)), counts)
        first = numpy.cumsum(counts) - counts
        within = numpy.arange(token_of.shape[0]) - first[token_of]
        skip = numpy.where(long_word, lengths - 2 * half, 0)[token_of]
        within = numpy.where(within >= half, within + skip, within)
        all_codes.append(text[starts[token_of] + within])
        all_counts.append(counts)
    if not all_codes:
        return numpy.zeros((0,), dtype="uint64"), numpy.zeros((0,), dtype="int32")
    return (
        numpy.concatenate(all_codes).astype("uint64"),  # HashEmbed's id type
        numpy.concatenate(all_counts).astype("int32"),
    )
