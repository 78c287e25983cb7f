"""The CRF's algorithms in PyTorch, as plain functions of tensors and potentials.

Nothing here holds parameters: ``CRF`` (``crf.py``) passes its start ``(K,)``,
transition ``(K, K)`` and end ``(K,)`` scores in. Held here: the index tensors that cut
ragged sequences into padded buckets (``sequence_offsets``, ``bucket_positions``) and,
on padded ``(B, T, K)`` emissions with a ``(B, T)`` mask, the forward and backward
recursions in log space (``forward_scores``, ``backward_scores``) and scaled in
probability space (``scaled_forward_backward``), log Z as a balanced tree of matrix
products (``tree_log_partition``) and Viterbi (``viterbi``). Each is vectorised over the
batch and the tags; the only Python loop is over time steps (over log2(T) rounds in
``tree_log_partition``). ``TORCH_OPS`` is PyTorch's spelling of the operations of
``crf_numpy.segment_log_probs``. Pure PyTorch: no spaCy, no thinc.
"""

from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .crf_numpy import ArrayOps

# PyTorch's spelling of what the segment formula needs (crf_numpy has NumPy's).
TORCH_OPS = ArrayOps(
    take_along_axis=torch.take_along_dim,
    cummax=lambda tensor, dim: tensor.cummax(dim).values,
    steps=lambda tensor: torch.arange(tensor.shape[1], device=tensor.device),
    prepend_zeros=lambda tensor: torch.cat([tensor.new_zeros(tensor.shape[0], 1), tensor], dim=1),
)


def sequence_offsets(lengths: Sequence[int]) -> List[int]:
    """The row of each ragged sequence's first token in the flat ``(N, K)`` tensor."""
    offsets, total = [], 0
    for n in lengths:
        offsets.append(total)
        total += n
    return offsets


def bucket_positions(
    offsets: Sequence[int], lengths: Sequence[int], bucket: Sequence[int], pad_index: int, device
) -> Tuple[Tensor, Tensor, Tensor]:
    """Index tensors that cut a bucket's sequences out of a flat tensor.

    RETURNS (Tuple[Tensor, Tensor, Tensor]): ``positions`` ``(B, T)``: the flat row of
        each padded cell (``pad_index`` for padding); ``mask`` ``(B, T)``: True on real
        tokens; ``lens`` ``(B,)``: the lengths, on ``device``.
    """
    lens = torch.tensor([lengths[i] for i in bucket], dtype=torch.long)
    starts = torch.tensor([offsets[i] for i in bucket], dtype=torch.long)
    steps = torch.arange(int(lens.max()), dtype=torch.long)
    mask = steps[None, :] < lens[:, None]
    positions = (starts[:, None] + steps[None, :]).masked_fill(~mask, pad_index)
    return positions.to(device), mask.to(device), lens.to(device)


def forward_scores(emissions: Tensor, mask: Tensor, start: Tensor, trans: Tensor) -> Tensor:
    """Forward algorithm. Returns log alphas ``(T, B, K)``; past a sequence's end
    its last alpha is carried forward."""
    alpha = start + emissions[:, 0]
    alphas = [alpha]
    for t in range(1, emissions.shape[1]):
        step = torch.logsumexp(alpha.unsqueeze(2) + trans, dim=1) + emissions[:, t]
        alpha = torch.where(mask[:, t, None], step, alpha)
        alphas.append(alpha)
    return torch.stack(alphas)


def backward_scores(emissions: Tensor, mask: Tensor, trans: Tensor, end: Tensor) -> Tensor:
    """Backward algorithm. Returns log betas ``(T, B, K)`` (``end`` at and past each
    sequence's last token)."""
    B, T, K = emissions.shape
    beta = end.expand(B, K)
    betas = [beta]
    for t in range(T - 2, -1, -1):
        step = torch.logsumexp(trans + (emissions[:, t + 1] + beta).unsqueeze(1), dim=2)
        beta = torch.where(mask[:, t + 1, None], step, beta)
        betas.append(beta)
    betas.reverse()
    return torch.stack(betas)


def scaled_forward_backward(
    emissions: Tensor, mask: Tensor, start: Tensor, trans: Tensor, end: Tensor
) -> Optional[Tuple[Tensor, Tensor]]:
    """The log alphas and betas of ``forward_scores`` and ``backward_scores``, both
    ``(T, B, K)``, computed in probability space with one normalising scale per step
    (Rabiner 1989): a matrix product per step instead of a logsumexp, about 1.6 times
    as fast when the loop, not the arithmetic, is the cost. In float64 (float32 on
    Apple's MPS, which has no float64). RETURNS None when a step underflows (all its
    mass below the float range), so that the caller can use the log-space recursions."""
    dtype = torch.float32 if emissions.device.type == "mps" else torch.float64
    em = emissions.to(dtype)
    B, T, K = em.shape
    weights = trans.to(dtype).exp()
    shift = em.amax(dim=2, keepdim=True)  # (B, T, 1): keeps exp() in range
    probs = (em - shift).exp()
    first = start.to(dtype) + em[:, 0]
    scale = first.amax(dim=1, keepdim=True)
    alpha = (first - scale).exp()
    alphas, alpha_scales = [alpha], [scale]
    for t in range(1, T):
        step = (alpha @ weights) * probs[:, t]
        total = step.sum(dim=1, keepdim=True)
        active = mask[:, t, None]
        alpha = torch.where(active, step / total, alpha)
        scale = torch.where(active, scale + total.log() + shift[:, t], scale)
        alphas.append(alpha)
        alpha_scales.append(scale)
    last = end.to(dtype)
    scale = last.amax().expand(B, 1)
    beta = (last - scale).exp().expand(B, K)
    betas, beta_scales = [beta], [scale]
    for t in range(T - 2, -1, -1):
        step = (beta * probs[:, t + 1]) @ weights.t()
        total = step.sum(dim=1, keepdim=True)
        active = mask[:, t + 1, None]
        beta = torch.where(active, step / total, beta)
        scale = torch.where(active, scale + total.log() + shift[:, t + 1], scale)
        betas.append(beta)
        beta_scales.append(scale)
    betas.reverse()
    beta_scales.reverse()
    alpha_scales_t, beta_scales_t = torch.stack(alpha_scales), torch.stack(beta_scales)
    if not (torch.isfinite(alpha_scales_t).all() and torch.isfinite(beta_scales_t).all()):
        return None
    return (torch.stack(alphas).log() + alpha_scales_t, torch.stack(betas).log() + beta_scales_t)


def tree_log_partition(emissions: Tensor, mask: Tensor, start: Tensor, trans: Tensor, end: Tensor) -> Optional[Tensor]:
    """log Z ``(B,)`` as a product of the per-step transfer matrices
    ``exp(trans) * exp(emissions[t])``, multiplied pairwise in a balanced tree: log2(T)
    rounds of batched matrix products instead of T - 1 sequential logsumexp steps, so
    the autograd graph has a few dozen nodes, not thousands. Each round divides its
    products by their largest entry and keeps the log of that scale (constants to
    autograd: log Z does not depend on them). In the emissions' dtype.

    RETURNS (Optional[Tensor]): None when the mass that matters may have been lost:
    a product's largest entry or a sequence's total fell below the square root of
    the smallest normal number (about 1e-19 in float32: mass ~90 nats below the best
    tags, where float32 has only denormals or zeros), or no path is allowed.
    ``CRF.log_partition`` then uses the log-space recursion."""
    B, T, K = emissions.shape
    dtype = emissions.dtype
    floor = torch.finfo(dtype).tiny ** 0.5
    # (B, T, 1): keeps exp() in range
    shift = emissions.detach().amax(dim=2, keepdim=True)
    probs = (emissions - shift).exp()
    identity = torch.eye(K, dtype=dtype, device=emissions.device)
    steps = trans.to(dtype).exp() * probs[:, 1:, None, :]  # (B, T - 1, K, K)
    steps = torch.where(mask[:, 1:, None, None], steps, identity)
    log_scale = (shift[:, 1:, 0] * mask[:, 1:]).sum(dim=1)
    if steps.shape[1] == 0:
        steps = identity.expand(B, 1, K, K)
    smallest = []
    while steps.shape[1] > 1:
        if steps.shape[1] % 2:
            steps = torch.cat([steps, identity.expand(B, 1, K, K)], dim=1)
        product = steps[:, 0::2] @ steps[:, 1::2]
        scale = product.detach().amax(dim=(2, 3), keepdim=True)
        smallest.append(scale.min())
        steps = product / scale
        log_scale = log_scale + scale.log().sum(dim=(1, 2, 3))
    first = start.to(dtype) + emissions[:, 0]
    first_max = first.detach().amax(dim=1)
    alpha = (first - first_max[:, None]).exp().unsqueeze(1)  # (B, 1, K)
    last = end.to(dtype)
    last_max = last.detach().amax()
    total = ((alpha @ steps[:, 0]).squeeze(1) * (last - last_max).exp()).sum(dim=1)
    smallest.append(total.detach().min())
    if not bool(torch.stack(smallest).min() >= floor):  # also False for NaN
        return None
    return total.log() + first_max + last_max + log_scale


def viterbi(emissions: Tensor, mask: Tensor, start: Tensor, trans: Tensor, end: Tensor) -> Tensor:
    """The best path ``(B, T)`` under the given potentials. Past a sequence's end
    the path repeats its last tag."""
    B, T, K = emissions.shape
    identity = torch.arange(K, device=emissions.device).expand(B, K)
    score = start + emissions[:, 0]
    backpointers = []
    for t in range(1, T):
        best, pointer = (score.unsqueeze(2) + trans).max(dim=1)
        active = mask[:, t, None]
        score = torch.where(active, best + emissions[:, t], score)
        backpointers.append(torch.where(active, pointer, identity))
    tag = (score + end).argmax(dim=1)
    path = [tag]
    for pointer in reversed(backpointers):
        tag = pointer.gather(1, tag.unsqueeze(1)).squeeze(1)
        path.append(tag)
    path.reverse()
    return torch.stack(path, dim=1)
