"""The CRF against brute-force enumeration of every tag sequence on tiny inputs."""

import itertools
import math
import random

import numpy
import pytest
import torch

from spacy_hybridner.modules import CRF, crf_torch, length_buckets
from spacy_hybridner.modules.crf_numpy import NUMPY_OPS, segment_log_probs
from spacy_hybridner.modules.crf_torch import TORCH_OPS
from spacy_hybridner.tag_scheme import biluo_constraints, biluo_tag_names

TAGS = biluo_tag_names(["PER", "LOC"])  # 9 tags
K = len(TAGS)


def make_crf(seed=0, constrained=True):
    torch.manual_seed(seed)
    crf = CRF(K, **(biluo_constraints(TAGS) if constrained else {}))
    with torch.no_grad():
        crf.start_transitions.normal_()
        crf.end_transitions.normal_()
        crf.transitions.normal_()
    return crf


def path_allowed(crf, path):
    if not crf.allowed_start[path[0]] or not crf.allowed_end[path[-1]]:
        return False
    return all(crf.allowed_transitions[a, b] for a, b in zip(path, path[1:]))


def path_score(crf, emissions, path):
    score = crf.start_transitions[path[0]] + emissions[0, path[0]]
    for t in range(1, len(path)):
        score = score + crf.transitions[path[t - 1], path[t]] + emissions[t, path[t]]
    return float((score + crf.end_transitions[path[-1]]).detach())


def enumerate_paths(crf, emissions):
    """All allowed paths of one sequence with their scores."""
    n = emissions.shape[0]
    return [
        (path, path_score(crf, emissions, path))
        for path in itertools.product(range(K), repeat=n)
        if path_allowed(crf, path)
    ]


def logsumexp(values):
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def padded(seqs):
    T = max(len(s) for s in seqs)
    batch = torch.zeros(len(seqs), T, K)
    mask = torch.zeros(len(seqs), T, dtype=torch.bool)
    for i, s in enumerate(seqs):
        batch[i, : len(s)] = s
        mask[i, : len(s)] = True
    return batch, mask


@pytest.fixture
def batch():
    torch.manual_seed(1)
    seqs = [torch.randn(n, K) * 2 for n in (3, 1, 4, 2)]
    return seqs


def test_log_partition_matches_enumeration(batch):
    crf = make_crf()
    emissions, mask = padded(batch)
    log_z = crf.log_partition(emissions, mask).detach()
    for i, seq in enumerate(batch):
        expected = logsumexp([s for _, s in enumerate_paths(crf, seq)])
        assert float(log_z[i]) == pytest.approx(expected, abs=1e-4)


def test_viterbi_is_the_best_allowed_path(batch):
    crf = make_crf()
    emissions, mask = padded(batch)
    path, _, _ = crf.padded_decode(emissions, mask)
    for i, seq in enumerate(batch):
        best = max(enumerate_paths(crf, seq), key=lambda ps: ps[1])[0]
        assert tuple(path[i, : len(seq)].tolist()) == best


def test_marginals_match_enumeration(batch):
    crf = make_crf()
    emissions, mask = padded(batch)
    _, marginals, _ = crf.padded_decode(emissions, mask)
    for i, seq in enumerate(batch):
        paths = enumerate_paths(crf, seq)
        log_z = logsumexp([s for _, s in paths])
        for t in range(len(seq)):
            for k in range(K):
                expected = sum(math.exp(s - log_z) for p, s in paths if p[t] == k)
                assert float(marginals[i, t, k]) == pytest.approx(expected, abs=1e-5)


def test_segment_probability_is_the_probability_of_the_span(batch):
    """At an entity's last token, decode reports P(exactly that span, that label)."""
    crf = make_crf()
    emissions, mask = padded(batch)
    path, _, seg_logp = crf.padded_decode(emissions, mask)
    for i, seq in enumerate(batch):
        tags = [TAGS[k] for k in path[i, : len(seq)].tolist()]
        paths = enumerate_paths(crf, seq)
        log_z = logsumexp([s for _, s in paths])
        start = 0
        for t, tag in enumerate(tags):
            if tag[0] in "OBU":
                start = t
            segment = tuple(path[i, start : t + 1].tolist())
            expected = sum(math.exp(s - log_z) for p, s in paths if p[start : t + 1] == segment)
            assert math.exp(float(seg_logp[i, t])) == pytest.approx(expected, abs=1e-5)


def test_nll_with_missing_tags_matches_enumeration(batch):
    crf = make_crf()
    emissions, mask = padded(batch)
    torch.manual_seed(2)
    gold = []
    for seq in batch:
        path = max(enumerate_paths(crf, seq), key=lambda ps: -ps[1])[0]  # any allowed path
        tags = [k if torch.rand(()) > 0.4 else -1 for k in path]
        gold.append(tags)
    tags = torch.full(mask.shape, -1, dtype=torch.long)
    for i, g in enumerate(gold):
        tags[i, : len(g)] = torch.tensor(g)
    nll = crf.padded_nll(emissions, mask, tags).detach()
    for i, seq in enumerate(batch):
        paths = enumerate_paths(crf, seq)
        log_z = logsumexp([s for _, s in paths])
        consistent = [s for p, s in paths if all(g in (-1, k) for g, k in zip(gold[i], p))]
        assert float(nll[i]) == pytest.approx(log_z - logsumexp(consistent), abs=1e-4)


def test_nll_gradient_reaches_transitions_and_emissions(batch):
    crf = make_crf()
    emissions, mask = padded(batch)
    emissions.requires_grad_(True)
    tags = torch.zeros(mask.shape, dtype=torch.long)  # all O
    crf.padded_nll(emissions, mask, tags).sum().backward()
    assert emissions.grad is not None and emissions.grad.abs().sum() > 0
    assert crf.transitions.grad.abs().sum() > 0
    assert crf.start_transitions.grad.abs().sum() > 0


def test_ragged_calls_agree_with_padded(batch):
    """Bucketing by length (tiny buckets here) must not change any result."""
    crf = make_crf()
    crf.max_batch_tokens = 4
    emissions, mask = padded(batch)
    lengths = [len(s) for s in batch] + [0]
    flat = torch.cat(batch)
    gold = torch.zeros(flat.shape[0], dtype=torch.long)
    nll = crf(flat, lengths, gold)
    assert nll.shape == (5,) and float(nll[4].detach()) == 0.0
    expected = crf.padded_nll(emissions, mask, torch.zeros(mask.shape, dtype=torch.long))
    assert torch.allclose(nll[:4], expected, atol=1e-4)
    tags, seg_logp = crf.decode(flat, lengths)
    path, _, logp = crf.padded_decode(emissions, mask)
    assert torch.equal(tags, path[mask])
    assert torch.allclose(seg_logp, logp[mask], atol=1e-5)


def test_decoding_never_emits_an_invalid_sequence():
    """Emissions that strongly prefer invalid tags (I-, L- everywhere) still decode to a
    sequence that BILUO allows."""
    crf = make_crf()
    torch.manual_seed(3)
    emissions = torch.randn(8, 12, K) * 50
    inside = [i for i, t in enumerate(TAGS) if t[0] in "IL"]
    emissions[:, :, inside] += 100
    mask = torch.ones(8, 12, dtype=torch.bool)
    path, _, _ = crf.padded_decode(emissions, mask)
    for row in path.tolist():
        assert path_allowed(crf, row)


def test_tag_mask_constrains_decoding(batch):
    crf = make_crf()
    emissions, mask = padded(batch)
    tag_mask = torch.ones(emissions.shape, dtype=torch.bool)
    u_per = TAGS.index("U-PER")
    tag_mask[:, 0] = False
    tag_mask[:, 0, u_per] = True
    path, _, _ = crf.padded_decode(emissions, mask, tag_mask)
    assert path[:, 0].tolist() == [u_per] * len(batch)


def test_unconstrained_crf_matches_enumeration(batch):
    crf = make_crf(constrained=False)
    emissions, mask = padded(batch[:2])
    log_z = crf.log_partition(emissions, mask).detach()
    assert float(log_z[1]) == pytest.approx(logsumexp([s for _, s in enumerate_paths(crf, batch[1])]), abs=1e-4)


@pytest.mark.parametrize("cost_per_bucket", [None, 0, 8, 1000])
def test_length_buckets_bound_padded_size(cost_per_bucket):
    lengths = [5, 0, 100, 3, 3, 50, 1]
    buckets = length_buckets(lengths, max_tokens=60, cost_per_bucket=cost_per_bucket)
    assert sorted(i for b in buckets for i in b) == [0, 2, 3, 4, 5, 6]
    for bucket in buckets:
        longest = max(lengths[i] for i in bucket)
        assert lengths[bucket[0]] == longest
        assert len(bucket) == 1 or len(bucket) * longest <= 60


def padded_cost(lengths, buckets, cost_per_bucket):
    return sum(len(b) * max(lengths[i] for i in b) + cost_per_bucket for b in buckets)


@pytest.mark.parametrize("seed", range(20))
def test_length_buckets_with_a_cost_are_the_cheapest_split(seed):
    """Against every split of the length-sorted order into runs (brute force)."""
    rng = random.Random(seed)
    lengths = [rng.randint(1, 40) for _ in range(rng.randint(1, 9))]
    cost, max_tokens = rng.choice([0, 5, 30, 200]), rng.choice([40, 100, 10**6])
    buckets = length_buckets(lengths, max_tokens, cost_per_bucket=cost)
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    best = math.inf
    for cuts in itertools.product([False, True], repeat=len(order) - 1):
        split, run = [], [order[0]]
        for i, cut in zip(order[1:], cuts):
            if cut:
                split.append(run)
                run = []
            run.append(i)
        split.append(run)
        if all(len(b) == 1 or len(b) * lengths[b[0]] <= max_tokens for b in split):
            best = min(best, padded_cost(lengths, split, cost))
    assert padded_cost(lengths, buckets, cost) == best
    # Never worse than filling buckets in turn, which a cost of 0 beats on padding alone.
    assert padded_cost(lengths, buckets, cost) <= padded_cost(lengths, length_buckets(lengths, max_tokens), cost)


def test_temperature_changes_probabilities_not_the_path(batch):
    crf = make_crf()
    emissions, mask = padded(batch)
    path, _, _ = crf.padded_decode(emissions, mask)
    hot_path, marginals, _ = crf.padded_decode(emissions, mask, temperature=2.0)
    assert torch.equal(path, hot_path)
    # The marginals at temperature T are those of the CRF with every potential / T.
    scaled = make_crf()
    with torch.no_grad():
        for p in scaled.parameters():
            p.div_(2.0)
    _, expected, _ = scaled.padded_decode(emissions / 2.0, mask)
    for i, seq in enumerate(batch):
        assert torch.allclose(marginals[i, : len(seq)], expected[i, : len(seq)], atol=1e-5)


def test_scaled_recursions_match_the_log_space_ones(batch):
    """decode's probability-space forward/backward gives the log-space alphas and betas."""
    crf = make_crf()
    emissions, mask = padded(batch)
    start, trans, end = crf.potentials(float("-inf"))
    alphas, betas = crf.scaled_forward_backward(emissions, mask, start, trans, end)
    expected_alphas = crf.forward_scores(emissions, mask, start, trans)
    expected_betas = crf.backward_scores(emissions, mask, trans, end)
    reachable = torch.isfinite(expected_alphas)
    assert torch.equal(torch.isfinite(alphas), reachable)
    assert torch.allclose(alphas[reachable].float(), expected_alphas[reachable], atol=1e-4)
    reachable = torch.isfinite(expected_betas)
    assert torch.equal(torch.isfinite(betas), reachable)
    assert torch.allclose(betas[reachable].float(), expected_betas[reachable], atol=1e-4)


def test_decode_falls_back_to_log_space_when_probabilities_underflow():
    """The only path is tag 0 then tag 1, which scores 3000 below tag 0: in probability
    space its mass underflows even in float64, so decode uses the log-space recursions."""
    crf = CRF(2, allowed_start=[True, False], allowed_transitions=[[False, True], [True, True]])
    emissions = torch.tensor([[[0.0, -3000.0], [0.0, -3000.0]]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    start, trans, end = crf.potentials(float("-inf"))
    assert crf.scaled_forward_backward(emissions, mask, start, trans, end) is None
    path, marginals, seg_logp = crf.padded_decode(emissions, mask)
    assert path.tolist() == [[0, 1]]
    assert marginals[0, 0, 0] == pytest.approx(1.0) and marginals[0, 1, 1] == pytest.approx(1.0)
    assert torch.isfinite(seg_logp).all() and seg_logp[0, 1] == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 2.5])
@pytest.mark.parametrize("with_mask", [False, True])
def test_cpu_decode_matches_the_padded_algorithms(temperature, with_mask):
    """On the CPU, decode runs its loops in NumPy (numpy_decode): the same paths and
    segment probabilities as padded_decode (checked against enumeration above), for
    long, length-1 and empty sequences in any order, a tag mask and a temperature."""
    crf = make_crf()
    crf.max_batch_tokens = 600  # several buckets
    torch.manual_seed(4)
    lengths = [64, 1, 517, 0, 3, 300, 1]
    flat = torch.randn(sum(lengths), K) * 3
    tag_mask = None
    if with_mask:
        tag_mask = torch.rand(flat.shape) < 0.6
        tag_mask[:, TAGS.index("O")] = True
    tags, seg_logp = crf.decode(flat, lengths, tag_mask, temperature)
    offset = 0
    for n in lengths:
        if n:
            rows = slice(offset, offset + n)
            mask = None if tag_mask is None else tag_mask[rows][None]
            path, _, logp = crf.padded_decode(flat[rows][None], torch.ones(1, n, dtype=torch.bool), mask, temperature)
            assert tags[rows].tolist() == path[0].tolist()
            assert torch.allclose(seg_logp[rows], logp[0], atol=1e-4)
        offset += n


def test_cpu_decode_runs_numpy_and_the_pytorch_loops_agree(monkeypatch):
    """On the CPU, decode goes through numpy_decode_buckets; an instance whose
    numpy_decode_buckets declines every bucket (as scripts/inference_speed.py sets it)
    runs the PyTorch loops, as on a GPU, to the same tags and probabilities."""
    crf = make_crf()
    crf.max_batch_tokens = 100
    torch.manual_seed(5)
    lengths = [40, 3, 0, 17, 1, 60]
    flat = torch.randn(sum(lengths), K) * 3
    numpy_results, padded_calls = [], []
    numpy_decode_buckets, padded_decode = crf.numpy_decode_buckets, crf.padded_decode

    def in_numpy(*args):
        numpy_results.extend(numpy_decode_buckets(*args))
        return numpy_results

    def in_pytorch(*args):
        padded_calls.append(args)
        return padded_decode(*args)

    monkeypatch.setattr(crf, "numpy_decode_buckets", in_numpy)
    monkeypatch.setattr(crf, "padded_decode", in_pytorch)
    tags, seg_logp = crf.decode(flat, lengths, temperature=1.5)
    assert len(numpy_results) > 1 and None not in numpy_results and not padded_calls
    crf.numpy_decode_buckets = lambda emissions, tag_mask, temperature, buckets: [None] * len(buckets)
    torch_tags, torch_seg_logp = crf.decode(flat, lengths, temperature=1.5)
    assert len(padded_calls) == len(numpy_results)
    assert torch.equal(tags, torch_tags)
    assert torch.allclose(seg_logp, torch_seg_logp, atol=1e-5)


def test_segment_formula_is_the_same_in_numpy_and_pytorch():
    """segment_log_probs, shared by padded_decode and numpy_decode, gives the same
    numbers through NUMPY_OPS on arrays as through TORCH_OPS on tensors."""
    crf = make_crf()
    torch.manual_seed(6)
    B, T = 3, 7
    path = torch.randint(K, (B, T))
    alpha_path, beta_path, log_z = torch.randn(B, T).double(), torch.randn(B, T).double(), torch.randn(B).double()
    emissions, trans = torch.randn(B, T, K).double(), crf.transitions.detach().double()
    args = (path, alpha_path, beta_path, emissions, trans, crf.segment_starts, log_z)
    got = segment_log_probs(TORCH_OPS, *args)
    expected = segment_log_probs(NUMPY_OPS, *(x.numpy() for x in args))
    assert (got <= 0).all() and (got < 0).any()
    # the same formula; cumsum and exp/log may round differently in NumPy and PyTorch
    numpy.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12)


def test_cpu_decode_falls_back_to_log_space_when_probabilities_underflow():
    crf = CRF(2, allowed_start=[True, False], allowed_transitions=[[False, True], [True, True]])
    emissions = torch.tensor([[0.0, -3000.0], [0.0, -3000.0], [0.0, 0.0]])
    tags, seg_logp = crf.decode(emissions, [2, 1])
    assert tags.tolist() == [0, 1, 0]
    assert torch.isfinite(seg_logp).all() and seg_logp[1] == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("lengths", [(3, 1, 4, 2), (1,), (517, 300, 1, 64)])
def test_tree_partition_matches_the_log_space_recursion(lengths):
    """Training's log Z (pairwise products of transfer matrices) equals the forward
    algorithm in float64, values and gradients, for odd and even lengths, padding,
    length-1 sequences and a gold tag mask."""
    crf = make_crf()
    torch.manual_seed(2)
    emissions, mask = padded([torch.randn(n, K) * 4 for n in lengths])
    tag_mask = torch.rand(emissions.shape) < 0.8
    tag_mask[..., TAGS.index("O")] = True  # keeps an allowed path through every row
    for tags in (None, tag_mask):
        em32 = emissions.clone().requires_grad_()
        em64 = emissions.double().requires_grad_()
        start, trans, end = crf.potentials(-1e4)
        got = crf.tree_log_partition(em32 if tags is None else em32.masked_fill(~tags, -1e4), mask, start, trans, end)
        s, tr, e = (x.double() for x in (start, trans, end))
        masked64 = em64 if tags is None else em64.masked_fill(~tags, -1e4)
        expected = torch.logsumexp(crf.forward_scores(masked64, mask, s, tr)[-1] + e, dim=1)
        assert torch.allclose(got.double(), expected, rtol=1e-6, atol=1e-3)
        (grad_got,) = torch.autograd.grad(got.sum(), em32)
        (grad_expected,) = torch.autograd.grad(expected.sum(), em64)
        assert torch.allclose(grad_got.double(), grad_expected, atol=1e-4)


@pytest.mark.parametrize("gap", [95.0, 100.0, 102.0, 3000.0])
def test_partition_falls_back_to_log_space_when_the_tree_underflows(gap):
    """Tag 0 then tag 1 is the only path and it scores ``gap`` below the best tags: in
    float32 its mass is a denormal (95-102) or zero (3000), so the tree declines and
    log_partition (and so the training loss) comes from the log-space recursion: right,
    not merely finite."""
    crf = CRF(2, allowed_start=[True, False], allowed_transitions=[[False, True], [True, True]])
    emissions = torch.tensor([[[0.0, -gap], [0.0, -gap]]], requires_grad=True)
    mask = torch.ones(1, 2, dtype=torch.bool)
    start, trans, end = crf.potentials(-1e4)
    assert crf.tree_log_partition(emissions, mask, start, trans, end) is None
    log_z = crf.log_partition(emissions, mask)
    assert log_z.item() == pytest.approx(-gap, abs=1e-3)
    log_z.sum().backward()
    assert torch.isfinite(emissions.grad).all()


def test_padded_algorithms_are_crf_torchs_functions_on_the_class():
    """The algorithms live in crf_torch as plain functions; CRF keeps them as
    staticmethods (tests/gpu_parity.py calls CRF.forward_scores), and the saved state
    keeps its names (saved pipelines load them)."""
    crf = make_crf()
    for name in ("forward_scores", "backward_scores", "scaled_forward_backward", "tree_log_partition", "viterbi"):
        assert getattr(CRF, name) is getattr(crf_torch, name)
        assert getattr(crf, name) is getattr(crf_torch, name)
    assert list(crf.state_dict()) == ["start_transitions", "end_transitions", "transitions"]
