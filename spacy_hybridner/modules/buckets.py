"""Grouping sequences of different lengths into padded batches ("buckets").

Both the encoder and the CRF run on padded tensors; how sequences are grouped decides
how many padded positions they compute. One function serves both.
"""

from typing import List, Optional, Sequence, Sized, TypeVar

import numpy

#: The default bounds of one padded batch, in positions (batch size × longest sequence):
#: the encoder's chunks of windows (bounds the memory of attention) and the CRF's buckets.
#: Named here once; configs carry them as ``encoder_batch_tokens`` / ``crf_batch_tokens``.
ENCODER_BATCH_TOKENS = 16384
CRF_BATCH_TOKENS = 65536


def length_buckets(lengths: Sequence[int], max_tokens: int, cost_per_bucket: Optional[int] = None) -> List[List[int]]:
    """Group the indices of non-empty sequences, longest first, so that each group's
    padded size (``len(group) * longest``) stays within ``max_tokens``. A sequence
    longer than ``max_tokens`` gets a group of its own.

    lengths (Sequence[int]): The length of each sequence.
    max_tokens (int): The padded size a group may reach.
    cost_per_bucket (Optional[int]): None: fill each group in turn as far as
        ``max_tokens`` allows (fewest groups: right where the cost is per time step,
        as in the CRF's loops). A number: the groups that minimise the padded positions
        plus this many per group (right where the cost is per padded position, as in
        the encoder's matrix products: short sequences are not padded to the longest
        of the batch, and ``cost_per_bucket`` stands for the fixed cost of one more
        call). The groups are then runs of the length-sorted order.
    RETURNS (List[List[int]]): Indices into ``lengths``, each group longest first;
        empty sequences are left out.
    """
    order = sorted((i for i, n in enumerate(lengths) if n > 0), key=lambda i: -lengths[i])
    if cost_per_bucket is None:
        buckets: List[List[int]] = []
        current: List[int] = []
        for i in order:
            if current and (len(current) + 1) * lengths[current[0]] > max_tokens:
                buckets.append(current)
                current = []
            current.append(i)
        if current:
            buckets.append(current)
        return buckets
    return [
        [order[k] for k in range(start, end)]
        for start, end in _cheapest_runs(
            numpy.asarray([lengths[i] for i in order], dtype="int64"), max_tokens, cost_per_bucket
        )
    ]


def _cheapest_runs(sorted_lengths: numpy.ndarray, max_tokens: int, cost_per_bucket: int) -> List[tuple]:
    """Split lengths sorted longest first into runs ``[start, end)`` that minimise
    ``sum(run size * first length) + cost_per_bucket * runs``, each run within
    ``max_tokens`` padded positions unless it is a single sequence (dynamic
    programming, vectorised over the possible starts of the last run)."""
    n = len(sorted_lengths)
    best = numpy.zeros(n + 1, dtype="float64")
    start_of = numpy.zeros(n + 1, dtype="int64")
    for end in range(1, n + 1):
        starts = numpy.arange(end)
        padded = (end - starts) * sorted_lengths[:end]
        cost = best[:end] + padded + cost_per_bucket
        cost[(padded > max_tokens) & (starts < end - 1)] = numpy.inf
        k = int(numpy.argmin(cost))
        best[end], start_of[end] = cost[k], k
    runs = []
    end = n
    while end > 0:
        runs.append((int(start_of[end]), end))
        end = int(start_of[end])
    return runs[::-1]


SizedT = TypeVar("SizedT", bound=Sized)


def consecutive_parts(items: Sequence[SizedT], max_total: int) -> List[List[SizedT]]:
    """Consecutive runs of ``items`` whose lengths add up to at most ``max_total`` each (a
    longer item alone), in order: ``[[]]`` for no items."""
    parts: List[List[SizedT]] = [[]]
    total = 0
    for item in items:
        if parts[-1] and total + len(item) > max_total:
            parts.append([])
            total = 0
        parts[-1].append(item)
        total += len(item)
    return parts
