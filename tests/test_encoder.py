"""The encoder: sizes, depth-0 variants, chunking and long-document windows."""

import numpy
import pytest
import torch
from thinc.api import Model

from spacy_hybridner.layers import hybrid_encoder, torch_module, window_indices
from spacy_hybridner.modules import HybridEncoder
from spacy_hybridner.modules.encoder import check_sizes

SIZES = dict(
    width=16,
    depth=1,
    n_heads=2,
    ffn_width=32,
    lstm_depth=1,
    uni_lstm_depth=0,
    dropout=0.0,
    token_dropout=0.0,
    attention_dropout=None,
)


@pytest.mark.parametrize("even", [False, True])
@pytest.mark.parametrize("lengths", [[10], [3, 40, 0, 17], [100, 1, 64], [9, 300, 257]])
@pytest.mark.parametrize("window,stride", [(8, 6), (8, 8), (16, 5), (256, 192)])
def test_window_indices_cover_every_token_once(lengths, window, stride, even):
    gather, select, window_lengths = window_indices(lengths, window, stride, even)
    N = sum(lengths)
    assert gather.shape[1] <= window
    assert (window_lengths <= window).all()
    assert list(window_lengths) == sorted(window_lengths, reverse=True)
    # Each token reads its output from a cell of a window that holds that very token.
    assert (gather.reshape(-1)[select] == numpy.arange(N)).all()
    # ... with at least half the overlap (window - stride) of context on either side,
    # unless the sequence ends there.
    least = (window - stride) // 2
    offset = 0
    for n in lengths:
        w, i = numpy.divmod(select[offset : offset + n], gather.shape[1])
        tokens = numpy.arange(n)
        start = tokens - i  # where each token's window starts in its sequence
        end = start + window_lengths[w]
        assert ((tokens - start >= least) | (start == 0)).all()
        assert ((end - 1 - tokens >= least) | (end == n)).all()
        offset += n
    if even:  # never more tokens encoded than with a window every stride tokens
        assert window_lengths.sum() <= window_indices(lengths, window, stride, False)[2].sum()


@pytest.mark.parametrize("depth,lstm_depth,uni", [(0, 1, 0), (2, 0, 0), (0, 0, 0), (1, 1, 1)])
def test_depth_zero_variants_train(depth, lstm_depth, uni):
    torch.manual_seed(0)
    sizes = dict(SIZES, depth=depth, lstm_depth=lstm_depth, uni_lstm_depth=uni)
    module = HybridEncoder(8, 5, **sizes)
    X = torch.randn(3, 7, 8, requires_grad=True)
    Y = module(X, torch.tensor([7, 3, 1]))
    assert Y.shape == (3, 7, 5)
    Y[0].sum().backward()
    assert X.grad is not None
    assert all(p.grad is not None for p in module.output.parameters())


@pytest.mark.parametrize("lengths", [[9, 9, 7, 5, 2, 1], [2, 9, 0, 5, 9, 1, 7]])
@pytest.mark.parametrize("max_batch_tokens,cost_per_bucket", [(10, 256), (10**6, 0), (10**6, 10**6)])
def test_chunking_does_not_change_outputs_or_gradients(lengths, max_batch_tokens, cost_per_bucket):
    """Sequences grouped by length (in any order, empty ones too) are encoded as if
    each were alone: the same outputs and input gradients as one padded batch."""
    torch.manual_seed(0)
    module = HybridEncoder(8, 5, **SIZES).eval()
    X = torch.randn(len(lengths), 9, 8)
    lengths = torch.tensor(lengths)
    results = []
    for settings in [(10**6, 10**6), (max_batch_tokens, cost_per_bucket)]:
        module.max_batch_tokens, module.cost_per_bucket = settings
        Xg = X.clone().requires_grad_()
        Y = module(Xg, lengths)
        assert Y.shape == (len(lengths), 9, 5)
        mask = (torch.arange(9)[None, :] < lengths[:, None]).unsqueeze(2)
        (Y * mask).sum().backward()
        results.append((Y.detach(), Xg.grad))
    (whole, d_whole), (chunked, d_chunked) = results
    for i, n in enumerate(lengths.tolist()):
        assert torch.allclose(whole[i, :n], chunked[i, :n], atol=1e-5)
        assert torch.allclose(d_whole[i, :n], d_chunked[i, :n], atol=1e-5)


@pytest.mark.parametrize(
    "width,n_heads,lstm_depth,message",
    [(130, 4, 1, "divisible by n_heads"), (33, 3, 1, "must be even"), (0, 1, 0, "positive")],
)
def test_impossible_sizes_are_explained(width, n_heads, lstm_depth, message):
    with pytest.raises(ValueError, match=message):
        check_sizes(
            width=width,
            depth=1,
            n_heads=n_heads,
            ffn_width=8,
            lstm_depth=lstm_depth,
            uni_lstm_depth=0,
            dropout=0.1,
            token_dropout=0.0,
            attention_dropout=None,
        )


def test_token_dropout_blanks_whole_tokens_in_training_only():
    torch.manual_seed(0)
    module = HybridEncoder(8, 5, **dict(SIZES, depth=0, token_dropout=0.5))
    X = torch.randn(4, 50, 8, requires_grad=True)
    lengths = torch.tensor([50, 50, 50, 50])
    module(X, lengths).sum().backward()
    # A blanked token passes no gradient back to its vector; the others do.
    blanked = (X.grad.abs().sum(-1) == 0).float().mean().item()
    assert 0.3 < blanked < 0.7
    X.grad = None
    module.eval()
    module(X, lengths).sum().backward()
    assert (X.grad.abs().sum(-1) > 0).all()
    with pytest.raises(ValueError, match="token_dropout"):
        HybridEncoder(8, 5, **dict(SIZES, token_dropout=1.0))


def make_layer(window, stride, **sizes) -> Model:
    layer = hybrid_encoder(**dict(SIZES, **sizes), window=window, stride=stride, nO=4)
    layer.initialize(X=[numpy.zeros((2, 6), dtype="float32")])
    return layer


def test_windows_are_stitched_exactly_for_a_per_token_encoder():
    """With no context layers every token is encoded alone, so any windowing must give
    the result of encoding the whole sequence at once."""
    numpy.random.seed(0)
    torch.manual_seed(0)
    windowed = make_layer(window=5, stride=3, depth=0, lstm_depth=0)
    whole = make_layer(window=1000, stride=1000, depth=0, lstm_depth=0)
    torch_module(whole).load_state_dict(torch_module(windowed).state_dict())
    Xs = [numpy.random.randn(n, 6).astype("float32") for n in (23, 4, 0, 11)]
    for a, b in zip(windowed.predict(Xs), whole.predict(Xs)):
        assert a.shape == b.shape
        numpy.testing.assert_allclose(a, b, atol=1e-5)


def test_each_token_takes_the_output_of_its_own_window():
    numpy.random.seed(0)
    torch.manual_seed(0)
    window, stride = 8, 6
    layer = make_layer(window=window, stride=stride)
    X = numpy.random.randn(20, 6).astype("float32")
    (Y,) = layer.predict([X])
    gather, select, _ = window_indices([20], window, stride, even=True)  # as in prediction
    for w in range(gather.shape[0]):
        tokens = gather[w][gather[w] < 20]
        (Yw,) = layer.predict([X[tokens]])
        owned = [t for t in tokens if select[t] // gather.shape[1] == w]
        numpy.testing.assert_allclose(Y[owned], Yw[[list(tokens).index(t) for t in owned]], atol=1e-5)


def test_backprop_through_windows_matches_torch_autograd():
    """The gradient reaching each input token sums its copies in overlapping windows."""
    numpy.random.seed(0)
    torch.manual_seed(0)
    layer = make_layer(window=6, stride=4, depth=0, lstm_depth=0)
    X = numpy.random.randn(15, 6).astype("float32")
    (Y,), backprop = layer.begin_update([X])
    dY = numpy.random.randn(*Y.shape).astype("float32")
    (dX,) = backprop([dY])
    module = torch_module(layer)
    Xt = torch.tensor(X, requires_grad=True)
    Yt = module(Xt[None], torch.tensor([15]))[0]
    Yt.backward(torch.tensor(dY))
    numpy.testing.assert_allclose(dX, Xt.grad.numpy(), atol=1e-5)


@pytest.mark.parametrize(
    "bidirectional,num_layers,dropout", [(True, 1, 0.0), (True, 2, 0.0), (False, 2, 0.0), (True, 2, 0.5)]
)
def test_lstm_on_padded_input_equals_the_packed_call(bidirectional, num_layers, dropout):
    """On the CPU run_lstm runs each direction on padded input (the fused kernel); it
    must compute what the packed call computes, values and gradients, with zeros past
    each length."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    from spacy_hybridner.modules.encoder import run_lstm

    torch.manual_seed(0)
    lstm = torch.nn.LSTM(6, 4, num_layers=num_layers, bidirectional=bidirectional, batch_first=True, dropout=dropout)
    if dropout:  # between-layer dropout is random in training; compare in eval mode
        lstm.eval()
    X = torch.randn(4, 9, 6, requires_grad=True)
    lengths = torch.tensor([9, 3, 1, 6])
    packed = pack_padded_sequence(X, lengths, batch_first=True, enforce_sorted=False)
    expected = pad_packed_sequence(lstm(packed)[0], batch_first=True, total_length=9)[0]
    got = run_lstm(lstm, X, lengths)
    assert torch.allclose(got, expected, atol=1e-6)
    assert (got[1, 3:] == 0).all() and (got[2, 1:] == 0).all()
    weights = list(lstm.parameters())
    grads_expected = torch.autograd.grad(expected.pow(2).sum(), [X, *weights])
    grads_got = torch.autograd.grad(got.pow(2).sum(), [X, *weights])
    for a, b in zip(grads_got, grads_expected):
        assert torch.allclose(a, b, atol=1e-5)


def test_attention_dropout_is_its_own_setting():
    """None keeps attention dropout equal to dropout; 0.0 leaves attention weights
    undropped in training while the other dropouts stay; out-of-range values are named."""
    same = HybridEncoder(8, 5, **dict(SIZES, dropout=0.3))
    off = HybridEncoder(8, 5, **dict(SIZES, dropout=0.3, attention_dropout=0.0))
    attention = [m for m in same.modules() if isinstance(m, torch.nn.MultiheadAttention)]
    assert attention and all(m.dropout == 0.3 for m in attention)
    attention = [m for m in off.modules() if isinstance(m, torch.nn.MultiheadAttention)]
    assert attention and all(m.dropout == 0.0 for m in attention)
    assert off.dropout.p == 0.3
    # Same weights, same function: in eval mode the outputs agree.
    off.load_state_dict(same.state_dict())
    X = torch.randn(2, 5, 8)
    lengths = torch.tensor([5, 3])
    with torch.no_grad():
        assert torch.allclose(same.eval()(X, lengths), off.eval()(X, lengths), atol=1e-6)
    # The parameters keep their names, so pipelines trained either way load the same.
    assert same.state_dict().keys() == off.state_dict().keys()
    with pytest.raises(ValueError, match="attention_dropout must be in"):
        HybridEncoder(8, 5, **dict(SIZES, attention_dropout=1.0))
