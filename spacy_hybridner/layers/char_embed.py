"""Character embeddings of the first and last bytes of each word: a thinc layer.

The same layer as the one spaCy's ``spacy.CharacterEmbed.v2`` builds inside itself
(a node named ``charembed`` with dims ``nM``, ``nC``, ``nO = nM * nC``, ``nV = 256``
and one parameter ``E`` of shape ``(nC, 256, nM)``), so pipelines saved with
``CharMultiHashEmbed.v2`` and ``.v3`` keep loading; written here because spaCy offers it only
from a private module.
"""

from typing import Callable, List, Tuple

from spacy.tokens import Doc
from thinc.api import Model
from thinc.types import Floats2d


def char_embed(nM: int, nC: int) -> Model[List[Doc], List[Floats2d]]:
    """For each token, ``nC`` UTF-8 bytes (spaCy's ``Doc.to_utf8_array``: the first
    and last ``nC // 2``, case kept, padded with zeros), each looked up in the table of
    its position, and the ``nC`` vectors concatenated.

    nM (int): Width of each byte's vector.
    nC (int): Bytes per word.
    RETURNS (Model[List[Doc], List[Floats2d]]): ``(len(doc), nM * nC)`` per doc.
    """
    return Model(
        "charembed", _forward, init=_init, dims={"nM": nM, "nC": nC, "nO": nM * nC, "nV": 256}, params={"E": None}
    )


def _init(model: Model, X=None, Y=None) -> None:
    model.set_param("E", model.ops.alloc3f(model.get_dim("nC"), model.get_dim("nV"), model.get_dim("nM")))


def _forward(model: Model, docs: List[Doc], is_train: bool) -> Tuple[List[Floats2d], Callable]:
    E = model.get_param("E")
    nM, nC, nO = model.get_dim("nM"), model.get_dim("nC"), model.get_dim("nO")
    xp = model.ops.xp
    positions = xp.arange(nC)[None, :]
    byte_ids = [model.ops.asarray(doc.to_utf8_array(nr_char=nC)).astype("int64") for doc in docs]
    # rows[i, c] = E[c, ids[i, c]]: position c's table at the byte in position c.
    outputs = [E[positions, ids].reshape((ids.shape[0], nO)) for ids in byte_ids]

    def backprop(d_outputs: List[Floats2d]) -> List[Doc]:
        dE = model.ops.alloc3f(*E.shape)
        for ids, d_rows in zip(byte_ids, d_outputs):
            # As in spaCy's layer, so that training gives the same weights as before:
            # a fancy-indexed += keeps one token's gradient per (position, byte) and
            # doc, it does not sum the tokens that share that byte there.
            dE[positions, ids] += d_rows.reshape((ids.shape[0], nC, nM))
        model.inc_grad("E", dE)
        return []

    return outputs, backprop
