"""No private reach-ins: the torch module accessor, the character embedding layer
against the one inside spaCy's registered CharacterEmbed.v2, the positional call of
torch.lstm against nn.LSTM, and the averaging shim built into the wrapper."""

import numpy
import pytest
import spacy
import torch
from spacy.util import registry
from thinc.api import fix_random_seed

from spacy_hybridner.layers import char_embed, crf_layer, hybrid_encoder, torch_module
from spacy_hybridner.layers.shim import AveragingPyTorchShim
from spacy_hybridner.modules import HybridEncoder
from spacy_hybridner.modules.encoder import run_lstm


def test_char_embed_matches_the_layer_inside_spacy_character_embed():
    nlp = spacy.blank("en")
    docs = [nlp("Anna anna ANNA Zürich 東京 a"), nlp("Bob"), nlp("")]
    fix_random_seed(0)
    spacy_embed = registry.get("architectures", "spacy.CharacterEmbed.v2")(
        width=8, rows=100, nM=4, nC=6, include_static_vectors=False, feature="LOWER"
    )
    spacy_embed.initialize(X=docs)
    theirs = next(node for node in spacy_embed.walk() if node.name == "charembed")
    ours = char_embed(nM=4, nC=6)
    ours.initialize(X=docs)
    assert {d: ours.get_dim(d) for d in ours.dim_names} == {d: theirs.get_dim(d) for d in theirs.dim_names}
    E = numpy.random.RandomState(0).randn(*theirs.get_param("E").shape).astype("float32")
    theirs.set_param("E", E.copy())
    ours.set_param("E", E.copy())
    (Y_ours, back_ours), (Y_theirs, back_theirs) = ours(docs, True), theirs(docs, True)
    for a, b in zip(Y_ours, Y_theirs):
        numpy.testing.assert_array_equal(a, b)
    dY = [numpy.random.RandomState(1).randn(*y.shape).astype("float32") for y in Y_ours]
    back_ours(dY)
    back_theirs(dY)
    numpy.testing.assert_array_equal(ours.get_grad("E"), theirs.get_grad("E"))


@pytest.mark.parametrize("num_layers,bidirectional", [(1, True), (2, True), (2, False)])
def test_run_lstm_positional_torch_lstm_matches_nn_lstm(num_layers, bidirectional):
    """run_lstm calls the undocumented torch.lstm with positional arguments; if torch
    changed their order or meaning, this would no longer agree with nn.LSTM."""
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(6, 5, num_layers=num_layers, bidirectional=bidirectional, batch_first=True).eval()
    X = torch.randn(3, 7, 6)
    lengths = torch.tensor([7, 4, 1])
    got = run_lstm(lstm, X, lengths)
    for i, n in enumerate(lengths.tolist()):
        expected, _ = lstm(X[i : i + 1, :n])  # one sequence alone: no padding at all
        assert torch.allclose(got[i, :n], expected[0], atol=1e-6)
        assert (got[i, n:] == 0).all()


def test_torch_module_reaches_the_modules_behind_the_layers():
    encoder = hybrid_encoder(
        width=8,
        depth=0,
        n_heads=2,
        ffn_width=8,
        lstm_depth=1,
        uni_lstm_depth=0,
        dropout=0.0,
        token_dropout=0.0,
        attention_dropout=None,
        window=16,
        stride=8,
        nO=3,
    )
    crf = crf_layer(nO=3)
    crf.attrs["constraints"] = {}
    with pytest.raises(ValueError, match="initialize it first"):
        torch_module(encoder)
    encoder.initialize(X=[numpy.zeros((2, 4), dtype="float32")])
    crf.initialize()
    assert isinstance(torch_module(encoder), HybridEncoder)
    assert torch_module(crf).num_tags == 3
    # The PyTorch node, with the averaging shim, is the layer itself from the start.
    assert all(isinstance(node.shims[0], AveragingPyTorchShim) for node in (encoder, crf))


def test_thinc_still_needs_the_averaging_shim():
    """The workaround in layers/shim.py: thinc's stock ``PyTorchShim.use_params`` looks
    for the keys ``f"pytorch_{id}_{name}"`` while ``finish_update`` hands the optimizer
    ``(id, name)``, so averages never reach a stock PyTorch layer. This fails once thinc
    finds the optimizer's keys itself: then ``AveragingPyTorchShim.use_params`` can go."""
    from thinc.api import Adam, PyTorchWrapper_v2

    torch.manual_seed(0)
    layer = PyTorchWrapper_v2(torch.nn.Linear(3, 2))
    layer.initialize(X=numpy.zeros((1, 3), dtype="float32"))
    optimizer = Adam(0.1, use_averages=True)
    X = numpy.ones((4, 3), dtype="float32")
    for _ in range(3):
        Y, backprop = layer.begin_update(X)
        backprop(numpy.ones_like(Y))
        layer.finish_update(optimizer)
    shim = layer.shims[0]
    assert any(key[0] == shim.id for key in optimizer.averages)  # the averages exist, under (id, name)
    weight = shim._model.weight
    current = weight.detach().clone()
    average = torch.from_numpy(numpy.asarray(optimizer.averages[(shim.id, "weight")]))
    assert not torch.allclose(current, average)
    with layer.use_params(optimizer.averages):
        swapped = weight.detach().clone()
    assert torch.equal(swapped, current), "thinc now swaps in the averages: drop AveragingPyTorchShim.use_params"
