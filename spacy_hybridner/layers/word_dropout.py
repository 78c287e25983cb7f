"""Word dropout on embedding rows: a thinc layer, no PyTorch."""

from typing import Callable, Tuple

from thinc.api import Model
from thinc.types import Floats2d


def word_dropout(rate: float) -> Model[Floats2d, Floats2d]:
    """In training, zero each row (one token's embedding) with probability ``rate``;
    at prediction the identity. Put after a word-identity table (NORM, LOWER, ORTH),
    it makes the model tag a token from its characters, shape and context as it must
    for a word never seen in training (Lample et al. 2016 replace singletons by an
    unknown word for the same reason). Rows are not rescaled: a zero row stands for
    an unknown word, not for a noisy copy of a known one.

    rate (float): Probability of zeroing a row, in [0, 1).
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"word_dropout rate must be in [0, 1), got {rate}.")
    return Model("word_dropout", _forward, attrs={"rate": rate})


def _forward(model: Model, X: Floats2d, is_train: bool) -> Tuple[Floats2d, Callable]:
    rate = model.attrs["rate"]
    if not is_train or rate == 0.0 or X.shape[0] == 0:
        return X, lambda dY: dY
    xp = model.ops.xp
    keep = (xp.random.uniform(size=(X.shape[0], 1)) >= rate).astype(X.dtype)

    def backprop(dY: Floats2d) -> Floats2d:
        return dY * keep

    return X * keep, backprop
