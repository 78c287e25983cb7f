"""thinc glue for the hybrid encoder: ``List[Floats2d]`` in, ``List[Floats2d]`` out.

Sequences longer than ``window`` are cut into overlapping windows, encoded as a batch of
short sequences and stitched back: each token takes its output from the window in which
it sits furthest from the edges. Attention therefore never spans more than ``window``
tokens, whatever the length of a document. In training a new window starts every
``stride`` tokens (windows of ``window`` tokens, the last one flush with the end). In
prediction a sequence gets as few windows as that needs, of equal length, spread evenly,
consecutive ones overlapping by at least ``window - stride`` tokens: the same least
context on either side of every token (half the overlap), fewer tokens encoded twice.
"""

from functools import lru_cache
from typing import Any, Callable, List, Optional, Tuple

import numpy
import torch
from thinc.api import ArgsKwargs, Model, PyTorchGradScaler, torch2xp, xp2torch
from thinc.types import Floats2d
from thinc.util import get_torch_default_device

from ..modules import ENCODER_BATCH_TOKENS, EncoderSettings, HybridEncoder
from .shim import module_layer


def hybrid_encoder(
    settings: Optional[EncoderSettings] = None,
    *,
    window: int,
    stride: int,
    mixed_precision: bool = False,
    grad_scaler_config: Optional[dict] = None,
    nI: Optional[int] = None,
    nO: Optional[int] = None,
    max_batch_tokens: int = ENCODER_BATCH_TOKENS,
    **hyper: Any,
) -> Model[List[Floats2d], List[Floats2d]]:
    """The encoder as a thinc layer: the PyTorch node from the start, its module made by
    ``initialize`` once ``nI`` (token vector width) and ``nO`` (number of tags) are
    known, and rebuilt on load from the settings saved with its weights.

    settings (Optional[EncoderSettings]): The module's hyperparameters; None: made
        from the keywords in ``hyper`` (``width=...``, ``depth=...``).
    window (int): Longest span of tokens encoded at once.
    stride (int): Tokens between the starts of consecutive windows.
    mixed_precision (bool): Autocast on a GPU (bfloat16 where native, else float16).
    grad_scaler_config (Optional[dict]): Arguments of thinc's ``PyTorchGradScaler``.
    nI (Optional[int]): Token vector width; None: read from the sample in ``initialize``.
    nO (Optional[int]): Number of tags.
    max_batch_tokens (int): Windows are encoded in chunks of at most this many padded
        positions, which bounds the memory of attention.
    RETURNS (Model[List[Floats2d], List[Floats2d]]): Emission scores per sequence.
    """
    if settings is None:
        settings = EncoderSettings(**hyper)
    elif hyper:
        raise TypeError(f"hybrid_encoder got both settings and the keywords {sorted(hyper)}: give one.")
    return module_layer(
        "hybrid_encoder",
        _make_encoder,
        init=_init,
        convert_inputs=_to_windows,
        convert_outputs=_from_windows,
        dims={"nI": nI, "nO": nO},
        attrs={
            # Plain values: thinc saves a layer's attrs with its weights.
            "hyper": settings.to_dict(),
            "window": window,
            "stride": stride,
            "mixed_precision": mixed_precision,
            "grad_scaler_config": dict(grad_scaler_config or {}),
            "max_batch_tokens": max_batch_tokens,
        },
    )


def _init(model: Model, X: Optional[List[Floats2d]] = None, Y=None) -> None:
    if X is not None and len(X):
        model.set_dim("nI", int(X[0].shape[1]), force=True)
    keys = ("hyper", "mixed_precision", "grad_scaler_config", "max_batch_tokens")
    model.shims[0].build(
        {"nI": model.get_dim("nI"), "nO": model.get_dim("nO"), **{key: model.attrs[key] for key in keys}}
    )


def _make_encoder(shim, settings: dict) -> HybridEncoder:
    """The module for ``settings`` on the current device, when built and when loaded.
    Mixed precision is a CUDA feature, decided here for the device at hand: a GPU config
    still trains and predicts on a CPU, and a pipeline trained on a GPU loads on a CPU."""
    device = get_torch_default_device()
    mixed_precision = settings["mixed_precision"] and device.type == "cuda"
    dtype = mixed_precision_dtype(device) if mixed_precision else None
    # bfloat16: the module autocasts itself (no loss scaling needed); float16: thinc's
    # autocast with its gradient scaler.
    float16 = dtype == torch.float16
    scaler_config = dict(settings["grad_scaler_config"])
    scaler_config["enabled"] = float16 and scaler_config.get("enabled", True)
    shim._mixed_precision = float16
    shim._grad_scaler = PyTorchGradScaler(**scaler_config)
    shim._grad_scaler.to_(shim.device)
    return HybridEncoder(
        settings["nI"],
        settings["nO"],
        EncoderSettings(**settings["hyper"]),
        autocast_dtype=torch.bfloat16 if dtype == torch.bfloat16 else None,
        max_batch_tokens=settings["max_batch_tokens"],
    )


def mixed_precision_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 on GPUs that compute in it natively (compute capability 8.0 and up:
    A100, H100, RTX 30xx and later; ROCm), float16 elsewhere."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False):
        return torch.bfloat16
    return torch.float16


def window_indices(
    lengths: List[int], window: int, stride: int, even: bool = False
) -> Tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray]:
    """See ``_window_indices``; the result for a batch is computed once and shared by
    the input and output conversion of the same forward pass (read-only arrays)."""
    return _window_indices(tuple(lengths), window, stride, even)


def window_starts(n: int, window: int, stride: int, even: bool = False) -> Tuple[List[int], int]:
    """The windows of a sequence of ``n > window`` tokens: their starts and length.

    even (bool): False: a window of ``window`` tokens every ``stride`` tokens, the last
        flush with the end. True: the fewest windows of one length (at most ``window``)
        that overlap by at least ``window - stride`` tokens, spread evenly.
    RETURNS (Tuple[List[int], int]): Window starts, window length.
    """
    if not even:
        return list(range(0, n - window, stride)) + [n - window], window
    overlap = window - stride
    count = -(-(n - overlap) // stride)  # ceil
    length = -(-(n + (count - 1) * overlap) // count)
    gap = (n - length) / (count - 1)
    return [round(k * gap) for k in range(count)], length


@lru_cache(maxsize=4)
def _window_indices(
    lengths: Tuple[int, ...], window: int, stride: int, even: bool
) -> Tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray]:
    """Where each window reads its tokens from, and where each token's output comes from.

    lengths (List[int]): Sequence lengths; the tokens of all sequences are numbered
        0..N-1 in order.
    RETURNS (Tuple[ndarray, ndarray, ndarray]): ``gather`` ``(W, L)``: the token read
        at each window position, N for padding; ``select`` ``(N,)``: for each token, the
        flat position ``w * L + i`` of the window cell it takes its output from;
        ``window_lengths`` ``(W,)``. Windows are sorted longest first.
    """
    spans = []  # (offset of the sequence, window start, window end, own start, own end)
    offset = 0
    for n in lengths:
        if n <= window:
            if n > 0:
                spans.append((offset, 0, n, 0, n))
        else:
            starts, length = window_starts(n, window, stride, even)
            for k, s in enumerate(starts):
                own_start = 0 if k == 0 else (s + starts[k - 1] + length) // 2
                own_end = n if k == len(starts) - 1 else (starts[k + 1] + s + length) // 2
                spans.append((offset, s, s + length, own_start, own_end))
        offset += n
    spans.sort(key=lambda span: span[1] - span[2])  # longest first
    N = offset
    W = len(spans)
    L = max((end - start for _, start, end, _, _ in spans), default=0)
    gather = numpy.full((W, L), N, dtype="int64")
    select = numpy.zeros((N,), dtype="int64")
    window_lengths = numpy.zeros((W,), dtype="int64")
    for w, (offset, start, end, own_start, own_end) in enumerate(spans):
        gather[w, : end - start] = numpy.arange(offset + start, offset + end)
        select[offset + own_start : offset + own_end] = w * L + numpy.arange(own_start - start, own_end - start)
        window_lengths[w] = end - start
    for array in (gather, select, window_lengths):
        array.flags.writeable = False
    return gather, select, window_lengths


def _to_windows(model: Model, Xs: List[Floats2d], is_train: bool) -> Tuple[ArgsKwargs, Callable]:
    window, stride, width = model.attrs["window"], model.attrs["stride"], model.get_dim("nI")
    ops = model.ops
    lengths = [len(x) for x in Xs]
    gather, _, window_lengths = window_indices(lengths, window, stride, even=not is_train)
    N = sum(lengths)
    table = ops.xp.concatenate(list(Xs) + [ops.alloc2f(1, width)]) if Xs else ops.alloc2f(1, width)
    gather_xp = ops.asarray(gather)
    padded = table[gather_xp]
    Xt = xp2torch(padded, requires_grad=is_train)
    lengths_t = xp2torch(numpy.asarray(window_lengths), device="cpu")

    def backprop(dXtorch: ArgsKwargs) -> List[Floats2d]:
        d_padded = torch2xp(dXtorch.args[0])
        d_table = ops.alloc2f(N + 1, width)
        ops.scatter_add(d_table, gather_xp.reshape(-1), d_padded.reshape(-1, width))
        return ops.unflatten(d_table[:N], ops.asarray1i(lengths))

    return ArgsKwargs(args=(Xt, lengths_t), kwargs={}), backprop


def _from_windows(model: Model, inputs_outputs, is_train: bool) -> Tuple[List[Floats2d], Callable]:
    window, stride = model.attrs["window"], model.attrs["stride"]
    Xs, Yt = inputs_outputs
    ops = model.ops
    lengths = [len(x) for x in Xs]
    _, select, _ = window_indices(lengths, window, stride, even=not is_train)
    K = Yt.shape[-1]
    select_t = xp2torch(ops.asarray(select), device=Yt.device)
    flat_t = Yt.reshape(-1, K)[select_t].float()
    Y = ops.unflatten(torch2xp(flat_t), ops.asarray1i(lengths))

    def backprop(dY: List[Floats2d]) -> ArgsKwargs:
        d_flat = xp2torch(ops.xp.concatenate(dY) if dY else ops.alloc2f(0, K), device=Yt.device)
        return ArgsKwargs(args=(flat_t,), kwargs={"grad_tensors": (d_flat,)})

    return Y, backprop
