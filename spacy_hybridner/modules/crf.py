"""The linear-chain CRF as an ``nn.Module``: its learned scores and its entry points.

``CRF`` holds the start, end and transition scores (the saved state) and the tag
scheme's constraints, and runs training (``forward``, ``soft_loss``) and inference
(``decode``, ``marginals``). Sequences arrive *ragged* (one flat ``(N, K)`` tensor plus a
list of lengths) and are grouped into length-sorted buckets of bounded padded size, so
one very long sequence never pads a whole batch to its length. The algorithms on a
padded bucket are plain functions in ``crf_torch`` (PyTorch, vectorised over the batch
and the tags; the only Python loop is over time steps), kept here as staticmethods
(``CRF.forward_scores`` ...). On the CPU, decoding runs that loop in NumPy
(``crf_numpy.numpy_decode``), whose calls on small arrays cost a fraction of PyTorch's;
both paths share ``crf_numpy.segment_log_probs``. No spaCy, no thinc.
"""

from typing import List, Optional, Sequence, Tuple

import numpy
import torch
from torch import Tensor, nn

from . import crf_torch
from .buckets import CRF_BATCH_TOKENS, length_buckets
from .crf_numpy import numpy_decode, segment_log_probs
from .crf_torch import TORCH_OPS, bucket_positions
from .crf_torch import sequence_offsets as _offsets  # ragged offsets; tests/gpu_parity.py imports it from here

# Score given to a forbidden transition or tag while training: low enough that such
# paths carry no probability mass, finite so that no gradient becomes NaN. Decoding
# uses -inf instead, so a forbidden transition can never be chosen.
TRAIN_PENALTY = -1e4


class CRF(nn.Module):
    """Linear-chain CRF with learned start, end and transition scores.

    num_tags (int): The number of tags K.
    allowed_start (Optional[Sequence[bool]]): Tags a sequence may start with.
    allowed_transitions (Optional[Sequence[Sequence[bool]]]): ``[i][j]`` is True when
        tag j may follow tag i.
    allowed_end (Optional[Sequence[bool]]): Tags a sequence may end with.
    segment_starts (Optional[Sequence[bool]]): Tags that open a segment (for BILUO:
        O, B-* and U-*). ``decode`` reports, at each token, the probability of the
        decoded segment that ends there, i.e. of an entity at its last token.
    max_batch_tokens (int): Padded size of one bucket of sequences.
    """

    def __init__(
        self,
        num_tags: int,
        allowed_start: Optional[Sequence[bool]] = None,
        allowed_transitions: Optional[Sequence[Sequence[bool]]] = None,
        allowed_end: Optional[Sequence[bool]] = None,
        segment_starts: Optional[Sequence[bool]] = None,
        max_batch_tokens: int = CRF_BATCH_TOKENS,
    ):
        super().__init__()
        if num_tags < 1:
            raise ValueError(f"A CRF needs at least one tag, got num_tags={num_tags}.")
        self.num_tags = num_tags
        self.max_batch_tokens = max_batch_tokens
        self.start_transitions = nn.Parameter(torch.zeros(num_tags))
        self.end_transitions = nn.Parameter(torch.zeros(num_tags))
        self.transitions = nn.Parameter(torch.zeros(num_tags, num_tags))

        def as_mask(values, shape) -> Tensor:
            if values is None:
                return torch.ones(shape, dtype=torch.bool)
            mask = torch.tensor(values, dtype=torch.bool)
            if tuple(mask.shape) != shape:
                raise ValueError(f"CRF constraint of shape {tuple(mask.shape)}, expected {shape}.")
            return mask

        K = num_tags
        # Derived from the tag scheme, so not saved with the weights.
        self.allowed_start: Tensor
        self.allowed_end: Tensor
        self.allowed_transitions: Tensor
        self.segment_starts: Tensor
        self.register_buffer("allowed_start", as_mask(allowed_start, (K,)), persistent=False)
        self.register_buffer("allowed_end", as_mask(allowed_end, (K,)), persistent=False)
        self.register_buffer("allowed_transitions", as_mask(allowed_transitions, (K, K)), persistent=False)
        starts = as_mask(segment_starts, (K,)) if segment_starts is not None else None
        self.register_buffer(
            "segment_starts", starts if starts is not None else torch.ones(K, dtype=torch.bool), persistent=False
        )

    # --- scores ----------------------------------------------------------------
    def potentials(self, penalty: float) -> Tuple[Tensor, Tensor, Tensor]:
        """Start ``(K,)``, transition ``(K, K)`` and end ``(K,)`` scores, with forbidden
        entries set to ``penalty``."""
        start = self.start_transitions.masked_fill(~self.allowed_start, penalty)
        trans = self.transitions.masked_fill(~self.allowed_transitions, penalty)
        end = self.end_transitions.masked_fill(~self.allowed_end, penalty)
        return start, trans, end

    # --- padded algorithms (B, T, K), in crf_torch -------------------------------------
    forward_scores = staticmethod(crf_torch.forward_scores)
    backward_scores = staticmethod(crf_torch.backward_scores)
    scaled_forward_backward = staticmethod(crf_torch.scaled_forward_backward)
    tree_log_partition = staticmethod(crf_torch.tree_log_partition)
    viterbi = staticmethod(crf_torch.viterbi)

    def log_partition(
        self, emissions: Tensor, mask: Tensor, tag_mask: Optional[Tensor] = None, penalty: float = TRAIN_PENALTY
    ) -> Tensor:
        """log Z ``(B,)`` over all allowed paths, or over the paths whose tag at each
        position is allowed by ``tag_mask`` ``(B, T, K)``."""
        start, trans, end = self.potentials(penalty)
        if tag_mask is not None:
            emissions = emissions.masked_fill(~tag_mask, penalty)
        log_z = self.tree_log_partition(emissions, mask, start, trans, end)
        if log_z is not None:
            return log_z
        alphas = self.forward_scores(emissions, mask, start, trans)
        return torch.logsumexp(alphas[-1] + end, dim=1)

    def padded_nll(self, emissions: Tensor, mask: Tensor, tags: Tensor) -> Tensor:
        """Negative log-likelihood ``(B,)`` of the gold tags ``(B, T)``. A tag of -1 is
        *missing*: every tag is allowed there and the likelihood sums over them."""
        emissions = emissions.float()
        gold = torch.ones_like(emissions, dtype=torch.bool)
        known = tags >= 0
        one_hot = nn.functional.one_hot(tags.clamp(min=0), self.num_tags).bool()
        gold = torch.where(known.unsqueeze(2), one_hot, gold)
        both = self.log_partition(
            torch.cat([emissions, emissions]), torch.cat([mask, mask]), torch.cat([torch.ones_like(gold), gold])
        )
        log_z, log_gold = both.chunk(2)
        return log_z - log_gold

    @torch.no_grad()
    def padded_decode(
        self, emissions: Tensor, mask: Tensor, tag_mask: Optional[Tensor] = None, temperature: float = 1.0
    ) -> Tuple[Tensor, Tensor, Tensor]:
        """Viterbi path ``(B, T)``, marginals ``(B, T, K)`` and, at each token, the log
        probability of the decoded segment ending there ``(B, T)``.

        tag_mask (Optional[Tensor]): ``(B, T, K)``, True where a tag is allowed; it
            must leave at least one allowed path.
        temperature (float): Probabilities come from the potentials divided by this;
            the best path does not depend on it.
        """
        emissions = emissions.float()
        start, trans, end = self.potentials(float("-inf"))
        if tag_mask is not None:
            emissions = emissions.masked_fill(~tag_mask, float("-inf"))
        path = self.viterbi(emissions, mask, start, trans, end)
        if temperature != 1.0:
            emissions, start, trans, end = (x / temperature for x in (emissions, start, trans, end))
        scaled = self.scaled_forward_backward(emissions, mask, start, trans, end)
        if scaled is not None:
            alphas, betas = (x.transpose(0, 1) for x in scaled)
            emissions, start, trans, end = (x.to(alphas.dtype) for x in (emissions, start, trans, end))
        else:
            alphas = self.forward_scores(emissions, mask, start, trans).transpose(0, 1)
            betas = self.backward_scores(emissions, mask, trans, end).transpose(0, 1)
        log_z = torch.logsumexp(alphas[:, -1] + end, dim=1)  # (B,)
        marginals = (alphas + betas - log_z[:, None, None]).exp()
        idx = path.unsqueeze(2)
        alpha_path = alphas.gather(2, idx).squeeze(2)
        beta_path = betas.gather(2, idx).squeeze(2)
        seg_logp = segment_log_probs(
            TORCH_OPS, path, alpha_path, beta_path, emissions, trans, self.segment_starts, log_z
        )
        return path, marginals.float(), seg_logp.float()

    # --- ragged entry points ------------------------------------------------------
    def forward(self, emissions: Tensor, lengths: Sequence[int], tags: Tensor) -> Tensor:
        """Negative log-likelihood of each sequence.

        emissions (Tensor): ``(N, K)`` tag scores of all sequences, concatenated.
        lengths (Sequence[int]): The length of each sequence (they sum to N).
        tags (Tensor): ``(N,)`` gold tag ids, -1 where the tag is missing.
        RETURNS (Tensor): ``(len(lengths),)``; 0 for an empty sequence.
        """
        offsets = _offsets(lengths)
        N = emissions.shape[0]
        padded_emissions = torch.cat([emissions, emissions.new_zeros(1, self.num_tags)])
        padded_tags = torch.cat([tags.long(), tags.new_full((1,), -1).long()])
        parts, order = [], []
        for bucket in length_buckets(lengths, self.max_batch_tokens):
            positions, mask, _ = bucket_positions(offsets, lengths, bucket, N, emissions.device)
            parts.append(self.padded_nll(padded_emissions[positions], mask, padded_tags[positions]))
            order.extend(bucket)
        nll = emissions.new_zeros(len(lengths), dtype=torch.float32)
        if parts:
            index = torch.tensor(order, dtype=torch.long, device=emissions.device)
            nll = nll.index_copy(0, index, torch.cat(parts))
        return nll

    @torch.no_grad()
    def padded_marginals(self, emissions: Tensor, mask: Tensor, penalty: float = TRAIN_PENALTY) -> Tensor:
        """Tag marginals ``(B, T, K)`` of padded sequences under the potentials with
        forbidden entries at ``penalty`` (zeros past each sequence's end)."""
        return self._marginals_and_log_z(emissions, mask, penalty)[0]

    def _marginals_and_log_z(self, emissions: Tensor, mask: Tensor, penalty: float) -> Tuple[Tensor, Tensor]:
        """``padded_marginals`` and log Z ``(B,)`` from the same forward-backward pass."""
        emissions = emissions.float()
        start, trans, end = self.potentials(penalty)
        scaled = self.scaled_forward_backward(emissions, mask, start, trans, end)
        if scaled is not None:
            alphas, betas = scaled
        else:
            alphas = self.forward_scores(emissions, mask, start, trans)
            betas = self.backward_scores(emissions, mask, trans, end)
        log_z = torch.logsumexp(alphas[-1] + end.to(alphas.dtype), dim=1)  # (B,)
        marginals = (alphas + betas - log_z[None, :, None]).exp().transpose(0, 1)
        return (marginals * mask[:, :, None]).float(), log_z.float()

    @torch.no_grad()
    def marginals(self, emissions: Tensor, lengths: Sequence[int]) -> Tensor:
        """Tag marginals ``(N, K)`` of each token of ragged sequences: the probability of
        each tag at each position under the CRF (forward-backward)."""
        offsets = _offsets(lengths)
        N, K = emissions.shape
        result = emissions.new_zeros(N, K, dtype=torch.float32)
        padded = torch.cat([emissions, emissions.new_zeros(1, K)])
        for bucket in length_buckets(lengths, self.max_batch_tokens):
            positions, mask, _ = bucket_positions(offsets, lengths, bucket, N, emissions.device)
            result[positions[mask]] = self.padded_marginals(padded[positions], mask)[mask]
        return result

    @torch.no_grad()
    def soft_loss(self, emissions: Tensor, lengths: Sequence[int], targets: Tensor) -> Tuple[Tensor, Tensor]:
        """Cross-entropy of the CRF's distribution over tag sequences against a target
        distribution given by per-token tag probabilities ``targets`` ``(N, K)`` (a
        teacher's marginals), taken as independent across tokens:
        ``log Z - E_q[score(y)]``, whose gradient with respect to the emissions is the
        CRF's marginals minus the targets. With one-hot targets of an allowed path it is
        that path's negative log-likelihood. Forbidden transitions count 0 in ``E_q``.

        RETURNS (Tuple[Tensor, Tensor]): the loss of each sequence ``(len(lengths),)`` and
            its gradient with respect to the emissions ``(N, K)``. The transition scores
            get no gradient from it.
        """
        offsets = _offsets(lengths)
        N, K = emissions.shape
        device = emissions.device
        emissions = emissions.float()
        targets = targets.float()
        loss = emissions.new_zeros(len(lengths), dtype=torch.float32)
        grad = torch.zeros_like(emissions)
        start, trans, end = self.potentials(TRAIN_PENALTY)
        zero = torch.zeros((), device=device)
        start0, trans0, end0 = (
            torch.where(allowed, x, zero)
            for x, allowed in ((start, self.allowed_start), (trans, self.allowed_transitions), (end, self.allowed_end))
        )
        padded_em = torch.cat([emissions, emissions.new_zeros(1, K)])
        padded_q = torch.cat([targets, targets.new_zeros(1, K)])
        for bucket in length_buckets(lengths, self.max_batch_tokens):
            positions, mask, lens = bucket_positions(offsets, lengths, bucket, N, device)
            em, q = padded_em[positions], padded_q[positions]  # (B, T, K), q zero on padding
            marginals, log_z = self._marginals_and_log_z(em, mask, TRAIN_PENALTY)
            expected = (q * em).sum(dim=(1, 2))
            expected = expected + (q[:, :-1] @ trans0 * q[:, 1:]).sum(dim=(1, 2))
            expected = expected + q[:, 0] @ start0
            last = q.gather(1, (lens - 1).clamp(min=0)[:, None, None].expand(-1, 1, K)).squeeze(1)
            expected = expected + last @ end0
            index = torch.tensor(bucket, dtype=torch.long, device=device)
            loss[index] = (log_z - expected).float()
            grad[positions[mask]] = (marginals - q)[mask]
        return loss, grad

    @torch.no_grad()
    def decode(
        self, emissions: Tensor, lengths: Sequence[int], tag_mask: Optional[Tensor] = None, temperature: float = 1.0
    ) -> Tuple[Tensor, Tensor]:
        """Best tags and segment log probabilities of each sequence. On the CPU the
        loops run in NumPy (``numpy_decode_buckets``); on a GPU, or where NumPy's
        probabilities underflow, in PyTorch (``padded_decode``).

        emissions (Tensor): ``(N, K)`` tag scores, concatenated.
        lengths (Sequence[int]): The length of each sequence.
        tag_mask (Optional[Tensor]): ``(N, K)``, True where a tag is allowed.
        temperature (float): Divides the potentials for the probabilities only.
        RETURNS (Tuple[Tensor, Tensor]): tags ``(N,)`` and, at each token, the log
            probability of the decoded segment that ends there ``(N,)``.
        """
        offsets = _offsets(lengths)
        N, K = emissions.shape
        device = emissions.device
        tags = torch.zeros(N, dtype=torch.long, device=device)
        seg_logp = torch.zeros(N, dtype=torch.float32, device=device)
        padded_emissions = torch.cat([emissions, emissions.new_zeros(1, K)])
        padded_tag_mask = None
        if tag_mask is not None:
            padded_tag_mask = torch.cat([tag_mask, tag_mask.new_ones(1, K)])
        buckets = [
            bucket_positions(offsets, lengths, bucket, N, device)
            for bucket in length_buckets(lengths, self.max_batch_tokens)
        ]
        results: List[Optional[Tuple[Tensor, Tensor]]] = [None] * len(buckets)
        if device.type == "cpu":
            results = self.numpy_decode_buckets(padded_emissions, padded_tag_mask, temperature, buckets)
        for (positions, mask, _), result in zip(buckets, results):
            if result is not None:
                path, logp = result
            else:  # on a GPU, or when the probabilities underflow in NumPy
                bucket_mask = padded_tag_mask[positions] if padded_tag_mask is not None else None
                path, _, logp = self.padded_decode(padded_emissions[positions], mask, bucket_mask, temperature)
            tags[positions[mask]] = path[mask]
            seg_logp[positions[mask]] = logp[mask].float()
        return tags, seg_logp

    @torch.no_grad()
    def numpy_decode_buckets(
        self,
        emissions: Tensor,
        tag_mask: Optional[Tensor],
        temperature: float,
        buckets: Sequence[Tuple[Tensor, Tensor, Tensor]],
    ) -> List[Optional[Tuple[Tensor, Tensor]]]:
        """``decode``'s buckets on the CPU, with the loops in NumPy float64
        (``crf_numpy.numpy_decode``), whose calls on small arrays cost a fraction of
        PyTorch's. ``decode`` runs ``padded_decode`` on a bucket given None, so an
        instance whose ``numpy_decode_buckets`` gives None for every bucket runs the
        PyTorch loops on the CPU too (``scripts/inference_speed.py`` compares the two).

        emissions (Tensor): ``(N + 1, K)`` tag scores on the CPU, the last row padding.
        tag_mask (Optional[Tensor]): ``(N + 1, K)``, True where a tag is allowed.
        temperature (float): Divides the potentials for the probabilities only.
        buckets (Sequence[Tuple[Tensor, Tensor, Tensor]]): ``positions``, ``mask`` and
            ``lens`` of each bucket, as ``bucket_positions`` returns them.
        RETURNS (List[Optional[Tuple[Tensor, Tensor]]]): of each bucket, the path and
            the segment log probabilities, both ``(B, T)``; None where the probabilities
            underflow in NumPy.
        """
        table = emissions.double().numpy()  # -inf where the tag mask forbids a tag
        if tag_mask is not None:
            table = numpy.where(tag_mask.numpy(), table, -numpy.inf)
        start, trans, end = (x.double().numpy() for x in self.potentials(float("-inf")))
        segment_starts = self.segment_starts.numpy()
        results: List[Optional[Tuple[Tensor, Tensor]]] = []
        for positions, _, lens in buckets:
            result = numpy_decode(
                table[positions.numpy()], lens.numpy(), start, trans, end, segment_starts, temperature
            )
            results.append(None if result is None else (torch.from_numpy(result[0]), torch.from_numpy(result[1])))
        return results
