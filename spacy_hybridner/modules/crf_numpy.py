"""The CRF's decoder in NumPy, and the segment-probability formula it shares with
``CRF.padded_decode``.

On the CPU, ``CRF.decode`` runs Viterbi and forward-backward here (``numpy_decode``):
the only Python loop is over time steps, and NumPy's calls on small arrays cost a
fraction of PyTorch's. A GPU, or probabilities that underflow here, use the PyTorch
loops in ``crf.py``. Both paths end in ``segment_log_probs``, written once against
``ArrayOps``: NumPy's operations here, PyTorch's in ``crf.py``. No torch, spaCy or thinc.
"""

from typing import Any, Callable, NamedTuple, Optional, Tuple

import numpy

Array = Any  # a numpy.ndarray or a torch.Tensor: arithmetic, indexing and .cumsum(axis) alike


class ArrayOps(NamedTuple):
    """The operations of ``segment_log_probs`` that NumPy and PyTorch spell differently.

    take_along_axis (Callable[[Array, Array, int], Array]): ``(array, indices, axis)``,
        as ``numpy.take_along_axis``.
    cummax (Callable[[Array, int], Array]): ``(array, axis)``: the running maximum
        along ``axis``.
    steps (Callable[[Array], Array]): ``(array)``: ``0, 1, ..., T - 1`` for an array of
        ``T`` columns, on its device.
    prepend_zeros (Callable[[Array], Array]): ``(array)``: the ``(B, T)`` array with a
        column of zeros before its first, ``(B, T + 1)``, in its dtype.
    """

    take_along_axis: Callable[[Array, Array, int], Array]
    cummax: Callable[[Array, int], Array]
    steps: Callable[[Array], Array]
    prepend_zeros: Callable[[Array], Array]


NUMPY_OPS = ArrayOps(
    take_along_axis=numpy.take_along_axis,
    cummax=lambda array, axis: numpy.maximum.accumulate(array, axis=axis),
    steps=lambda array: numpy.arange(array.shape[1]),
    prepend_zeros=lambda array: numpy.concatenate([numpy.zeros((array.shape[0], 1), array.dtype), array], axis=1),
)


def segment_log_probs(
    ops: ArrayOps,
    path: Array,
    alpha_path: Array,
    beta_path: Array,
    emissions: Array,
    trans: Array,
    segment_starts: Array,
    log_z: Array,
) -> Array:
    """At each token, the log probability of the decoded segment that ends there:
    ``P(y_i..y_j = path_i..path_j) = alpha_i(path_i) * prod_{t=i+1..j} trans(path_{t-1},
    path_t) emit_t(path_t) * beta_j(path_j) / Z``, with prefix sums along the path; i is
    the last step at or before j whose tag opens a segment. In NumPy or in PyTorch.

    ops (ArrayOps): ``NUMPY_OPS`` for NumPy arrays, ``crf.TORCH_OPS`` for tensors.
    path (Array): ``(B, T)`` the decoded tags (int64).
    alpha_path (Array): ``(B, T)`` log alpha of the path's tag at each step.
    beta_path (Array): ``(B, T)`` log beta of the path's tag at each step.
    emissions (Array): ``(B, T, K)`` tag scores.
    trans (Array): ``(K, K)`` transition scores.
    segment_starts (Array): ``(K,)`` True for tags that open a segment.
    log_z (Array): ``(B,)`` log partition of each sequence.
    RETURNS (Array): ``(B, T)``, at most 0 (values past a sequence's end are undefined).
    """
    emit_path = ops.take_along_axis(emissions, path[:, :, None], 2)[:, :, 0]
    step = trans[path[:, :-1], path[:, 1:]] + emit_path[:, 1:]
    prefix = ops.prepend_zeros(step.cumsum(1))  # prefix[:, t]: the path's score of steps 1..t
    seg_start = ops.cummax(segment_starts[path] * ops.steps(path), 1)
    seg_logp = (
        ops.take_along_axis(alpha_path, seg_start, 1)
        + prefix
        - ops.take_along_axis(prefix, seg_start, 1)
        + beta_path
        - log_z[:, None]
    )
    return seg_logp.clip(max=0.0)


def numpy_decode(
    emissions: numpy.ndarray,
    lengths: numpy.ndarray,
    start: numpy.ndarray,
    trans: numpy.ndarray,
    end: numpy.ndarray,
    segment_starts: numpy.ndarray,
    temperature: float = 1.0,
) -> Optional[Tuple[numpy.ndarray, numpy.ndarray]]:
    """Viterbi path and segment log probabilities of a padded bucket, in NumPy float64:
    what ``CRF.padded_decode`` computes, without the marginals. The sequences must be
    sorted longest first, so that the ones still running at any step are a prefix of
    the batch and each step works on that prefix alone (no masks).

    emissions (numpy.ndarray): ``(B, T, K)``, -inf for a forbidden tag.
    lengths (numpy.ndarray): ``(B,)``, non-increasing, at least 1.
    start, trans, end (numpy.ndarray): ``(K,)``, ``(K, K)``, ``(K,)`` potentials, -inf
        where forbidden.
    segment_starts (numpy.ndarray): ``(K,)`` True for tags that open a segment.
    temperature (float): Divides the potentials for the probabilities only.
    RETURNS (Optional[Tuple[numpy.ndarray, numpy.ndarray]]): the path ``(B, T)`` and,
        at each token, the log probability of the decoded segment ending there
        ``(B, T)`` (values past a length are undefined); None when the scaled
        forward-backward underflows (then use the log-space recursions).
    """
    B, T, _ = emissions.shape
    # running[t]: how many sequences have a token at step t (a prefix of the batch)
    running = B - numpy.searchsorted(lengths[::-1], numpy.arange(T), side="right")
    path = _numpy_viterbi(emissions, running, start, trans, end)
    if temperature != 1.0:
        emissions, start, trans, end = (x / temperature for x in (emissions, start, trans, end))
    with numpy.errstate(divide="ignore", invalid="ignore", over="ignore"):
        scaled = _numpy_forward_backward(emissions, running, start, trans, end)
        if scaled is None:
            return None
        alphas, alpha_scale, betas, beta_scale = scaled
        index = path.T[:, :, None]  # (T, B, 1)
        alpha_path = numpy.log(numpy.take_along_axis(alphas, index, axis=2)[:, :, 0]) + alpha_scale
        beta_path = numpy.log(numpy.take_along_axis(betas, index, axis=2)[:, :, 0]) + beta_scale
        last, rows = lengths - 1, numpy.arange(B)
        final = numpy.log(alphas[last, rows]) + alpha_scale[last, rows][:, None] + end
        top = final.max(axis=1)
        log_z = top + numpy.log(numpy.exp(final - top[:, None]).sum(axis=1))
    seg_logp = segment_log_probs(NUMPY_OPS, path, alpha_path.T, beta_path.T, emissions, trans, segment_starts, log_z)
    return path, seg_logp


def _numpy_viterbi(
    emissions: numpy.ndarray, running: numpy.ndarray, start: numpy.ndarray, trans: numpy.ndarray, end: numpy.ndarray
) -> numpy.ndarray:
    """The best path ``(B, T)`` of each sequence (see ``numpy_decode``); ``running[t]``
    sequences are still running at step t."""
    B, T, K = emissions.shape
    score = start + emissions[:, 0]
    backpointers = numpy.zeros((T, B, K), dtype="int64")
    for t in range(1, T):
        n = running[t]
        candidates = score[:n, :, None] + trans
        backpointers[t, :n] = candidates.argmax(axis=1)
        score[:n] = candidates.max(axis=1) + emissions[:n, t]
    tag = (score + end).argmax(axis=1)
    path = numpy.zeros((B, T), dtype="int64")
    rows = numpy.arange(B)
    for t in range(T - 1, 0, -1):
        n = running[t]
        path[:n, t] = tag[:n]
        tag[:n] = backpointers[t, rows[:n], tag[:n]]
    path[:, 0] = tag
    return path


def _numpy_forward_backward(
    emissions: numpy.ndarray, running: numpy.ndarray, start: numpy.ndarray, trans: numpy.ndarray, end: numpy.ndarray
) -> Optional[Tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray, numpy.ndarray]]:
    """Forward-backward in probability space with one normalising scale per step, as
    ``CRF.scaled_forward_backward``: alphas ``(T, B, K)`` and the log of their scale
    ``(T, B)``, betas and theirs; log alpha = log(alphas) + scale. None on underflow."""
    B, T, K = emissions.shape
    weights = numpy.exp(trans)
    shift = emissions.max(axis=2)  # (B, T): keeps exp() in range
    probs = numpy.exp(emissions - shift[:, :, None])
    first = start + emissions[:, 0]
    alpha_log = numpy.zeros((T, B))  # log of each step's normaliser
    alpha_log[0] = first.max(axis=1)
    alphas = numpy.ones((T, B, K))  # past a length: unused
    alphas[0] = numpy.exp(first - alpha_log[0][:, None])
    for t in range(1, T):
        n = running[t]
        step = (alphas[t - 1, :n] @ weights) * probs[:n, t]
        total = step.sum(axis=1)
        alphas[t, :n] = step / total[:, None]
        alpha_log[t, :n] = numpy.log(total) + shift[:n, t]
    end_max = end.max()
    beta = numpy.repeat(numpy.exp(end - end_max)[None, :], B, axis=0)
    beta_log = numpy.zeros((T, B))
    betas = numpy.ones((T, B, K))
    betas[T - 1] = beta
    weights_t = weights.T
    for t in range(T - 2, -1, -1):
        n = running[t + 1]
        step = (beta[:n] * probs[:n, t + 1]) @ weights_t
        total = step.sum(axis=1)
        beta[:n] = step / total[:, None]
        beta_log[t, :n] = numpy.log(total) + shift[:n, t + 1]
        betas[t] = beta
    alpha_scale = alpha_log.cumsum(axis=0)
    beta_scale = beta_log[::-1].cumsum(axis=0)[::-1] + end_max
    if not (numpy.isfinite(alpha_scale).all() and numpy.isfinite(beta_scale).all()):
        return None
    return alphas, alpha_scale, betas, beta_scale
