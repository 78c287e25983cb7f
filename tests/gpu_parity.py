"""Helpers shared by tests/test_gpu.py (CUDA against the CPU) and tests/test_gpu_helpers.py
(the CPU half of each comparison, which CI runs): each takes the device to run on, so
the code of the GPU tests runs on every CI run and only the comparison waits for a GPU.
"""

import contextlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy
import spacy
import torch
from spacy.language import Language
from thinc.api import fix_random_seed, get_current_ops, set_current_ops

from spacy_hybridner.layers import torch_module
from spacy_hybridner.modules import CRF, length_buckets
from spacy_hybridner.modules.crf import _offsets, bucket_positions
from spacy_hybridner.tag_scheme import biluo_constraints, biluo_tag_names

from conftest import TINY_MODEL, TRAIN_DATA, make_examples

TAGS = biluo_tag_names(["LOC", "MISC", "ORG", "PER"])  # 17 tags
LENGTHS = [7, 1, 0, 30, 12, 65, 2]  # an empty sequence, a single token, longer ones

# TINY_MODEL with the hybrid_cpu embedding (hash + character embeddings + character CNN,
# whose ids go through cupy on a GPU) and mixed precision on (bfloat16 on a GPU of
# compute capability >= 8, float16 with loss scaling below; ignored on a CPU).
TINY_CHAR_CNN_MODEL = {
    **TINY_MODEL,
    "mixed_precision": True,
    "tok2vec": {
        **TINY_MODEL["tok2vec"],
        "embed": {
            "@architectures": "spacy-hybridner.CharMultiHashEmbed.v3",
            "width": 32,
            "attrs": ["NORM", "PREFIX", "SUFFIX", "SHAPE"],
            "rows": [500, 100, 200, 200],
            "include_static_vectors": False,
            "nM": 8,
            "nC": 4,
            "char_cnn_width": 16,
            "word_dropout_rate": 0.1,
        },
    },
}
TINY_MIXED_MODEL = {**TINY_MODEL, "mixed_precision": True}

# Texts to predict: the training sentences, an unseen one, an empty one, and a document
# longer than the encoder's window of 32 tokens (windows stitched together).
TEXTS = [text for text, _ in TRAIN_DATA] + [
    "Tim Cook met Angela Merkel in Paris .",
    "",
    " ".join(text for text, _ in TRAIN_DATA * 3),
]

Entity = Tuple[int, int, str, Optional[float]]


@contextlib.contextmanager
def thinc_device(gpu: bool) -> Iterator[None]:
    """Run the block with thinc's ops (and so spaCy's models and the PyTorch modules
    they build) on GPU 0 or on the CPU, and restore the ops in use before.

    gpu (bool): True for ``spacy.require_gpu(0)``, False for ``spacy.require_cpu()``.
    """
    previous = get_current_ops()
    if gpu:
        spacy.require_gpu(0)
    else:
        spacy.require_cpu()
    try:
        yield
    finally:
        set_current_ops(previous)


# --- the CRF module on one device ----------------------------------------------------------
def crf_outputs(device: str, seed: int = 0) -> Dict[str, numpy.ndarray]:
    """The CRF's training loss and its gradients, Viterbi paths, marginals and segment
    probabilities on seeded random ragged inputs, computed on ``device``. ``decode``
    runs its loops in NumPy on the CPU and in PyTorch on a GPU, so the comparison of two
    devices also compares the two decoders (``padded_decode`` is PyTorch's on both).

    device (str): A torch device, "cpu" or "cuda".
    seed (int): Seed of the parameters and inputs (drawn on the CPU, then moved, so that
        every device sees the same numbers).
    RETURNS (Dict[str, numpy.ndarray]): float64 / int64 arrays on the CPU: ``nll`` and
        ``nll_log_space`` (the tree product and the log-space recursion), gradients
        ``d_emissions``, ``d_transitions``, ``d_start``, ``d_end``; ``tags`` and
        ``seg_prob`` of the ragged ``decode``, ``tags_masked`` under a tag mask,
        ``seg_prob_t2`` at temperature 2; of the padded bucket: ``path``, ``marginals``,
        ``seg_logp``, ``alphas``, ``betas`` (log space), ``mask``.
    """
    generator = torch.Generator().manual_seed(seed)
    K, N = len(TAGS), sum(LENGTHS)
    crf = CRF(K, **biluo_constraints(TAGS))
    with torch.no_grad():
        for param in (crf.start_transitions, crf.end_transitions, crf.transitions):
            param.copy_(torch.randn(param.shape, generator=generator))
    emissions_cpu = torch.randn(N, K, generator=generator) * 3
    # Gold tags: the best path under other scores (so always allowed), a fifth missing.
    other = torch.randn(N, K, generator=generator) * 3
    gold_cpu, _ = crf.decode(other, LENGTHS)
    gold_cpu[torch.rand(N, generator=generator) < 0.2] = -1
    # A tag mask that allows only O at a few positions and everything elsewhere.
    tag_mask_cpu = torch.ones(N, K, dtype=torch.bool)
    only_o = torch.arange(N)[::5]
    tag_mask_cpu[only_o] = False
    tag_mask_cpu[only_o, TAGS.index("O")] = True

    crf = crf.to(device)
    emissions = emissions_cpu.to(device).requires_grad_(True)
    gold = gold_cpu.to(device)
    nll = crf(emissions, LENGTHS, gold)
    nll.sum().backward()
    out = {
        "nll": nll.detach(),
        "d_emissions": emissions.grad,
        "d_transitions": crf.transitions.grad,
        "d_start": crf.start_transitions.grad,
        "d_end": crf.end_transitions.grad,
    }
    with torch.no_grad():
        tags, seg_logp = crf.decode(emissions, LENGTHS)
        out["tags"], out["seg_prob"] = tags, seg_logp.exp()
        out["tags_masked"], _ = crf.decode(emissions, LENGTHS, tag_mask_cpu.to(device))
        out["seg_prob_t2"] = crf.decode(emissions, LENGTHS, temperature=2.0)[1].exp()
        # The padded algorithms on the bucket of all non-empty sequences.
        bucket = length_buckets(LENGTHS, 10**6)[0]
        padded_emissions = torch.cat([emissions, emissions.new_zeros(1, K)])
        positions, mask, _ = bucket_positions(_offsets(LENGTHS), LENGTHS, bucket, N, device)
        em = padded_emissions[positions]
        path, marginals, padded_seg_logp = crf.padded_decode(em, mask)
        start, trans, end = crf.potentials(float("-inf"))
        out.update(
            path=path,
            marginals=marginals,
            seg_logp=padded_seg_logp,
            mask=mask,
            alphas=CRF.forward_scores(em, mask, start, trans),
            betas=CRF.backward_scores(em, mask, trans, end),
        )
        # log Z of all paths by the log-space recursion, against the tree product above.
        start, trans, end = crf.potentials(-1e4)
        log_z = torch.logsumexp(CRF.forward_scores(em.float(), mask, start, trans)[-1] + end, dim=1)
        tree = crf.log_partition(em.float(), mask)
        out["log_z_recursion"], out["log_z_tree"] = log_z, tree
        out["bucket"] = torch.tensor(bucket)
    return {
        name: value.detach().cpu().numpy().astype("int64" if not value.is_floating_point() else "float64")
        for name, value in out.items()
    }


def check_crf_outputs(out: Dict[str, numpy.ndarray]) -> None:
    """What must hold of ``crf_outputs`` on any device; raises AssertionError."""
    constraints = biluo_constraints(TAGS)
    allowed = numpy.asarray(constraints["allowed_transitions"])
    starts, ends = numpy.asarray(constraints["allowed_start"]), numpy.asarray(constraints["allowed_end"])
    assert numpy.isfinite(out["nll"]).all() and (out["nll"] >= -1e-3).all(), out["nll"]
    assert out["nll"][LENGTHS.index(0)] == 0.0
    for name in ("d_emissions", "d_transitions", "d_start", "d_end"):
        assert numpy.isfinite(out[name]).all(), name
    assert numpy.abs(out["d_transitions"]).sum() > 0
    # Every decoded sequence is a valid BILUO path; masked positions are O.
    offset = 0
    for n in LENGTHS:
        for key in ("tags", "tags_masked"):
            seq = out[key][offset : offset + n]
            if n:
                assert starts[seq[0]] and ends[seq[-1]], (key, seq)
                assert all(allowed[a, b] for a, b in zip(seq, seq[1:])), (key, seq)
        offset += n
    assert (out["tags_masked"][::5] == TAGS.index("O")).all()
    for key in ("seg_prob", "seg_prob_t2"):
        assert ((out[key] > 0) & (out[key] <= 1 + 1e-6)).all(), key
    mask = out["mask"].astype(bool)
    sums = out["marginals"].sum(axis=2)
    assert numpy.allclose(sums[mask], 1.0, atol=1e-4)
    # The padded path is the ragged path, bucket order.
    ragged = numpy.split(out["tags"], numpy.cumsum(LENGTHS)[:-1])
    for row, i in enumerate(out["bucket"]):
        assert (out["path"][row, : LENGTHS[i]] == ragged[i]).all()
    assert numpy.allclose(out["log_z_tree"], out["log_z_recursion"], rtol=1e-5, atol=1e-3)


def compare_crf_outputs(
    got: Dict[str, numpy.ndarray], expected: Dict[str, numpy.ndarray], rtol: float = 1e-4, atol: float = 1e-4
) -> List[str]:
    """Where two ``crf_outputs`` disagree: integer arrays exactly, floats within
    ``rtol`` / ``atol`` (log-space alphas and betas: on real tokens only, where they are
    finite). RETURNS (List[str]): one line per disagreement (empty: they agree)."""
    problems = []
    mask = expected["mask"].astype(bool)
    for name, want in expected.items():
        have = got[name]
        if name in ("alphas", "betas"):  # (T, B, K), -inf for forbidden tags
            want, have = want.transpose(1, 0, 2)[mask], have.transpose(1, 0, 2)[mask]
            finite = numpy.isfinite(want)
            if not (numpy.isfinite(have) == finite).all():
                problems.append(f"{name}: -inf in different places")
                continue
            want, have = want[finite], have[finite]
        if want.dtype.kind == "i":
            if have.shape != want.shape or not (have == want).all():
                problems.append(f"{name}: {int((have != want).sum())} of {want.size} differ")
        elif not numpy.allclose(have, want, rtol=rtol, atol=atol):
            worst = float(numpy.max(numpy.abs(have - want)))
            problems.append(f"{name}: largest difference {worst:.3g}")
    return problems


# --- training and prediction of a tiny pipeline -------------------------------------------
def train_tiny_recording_losses(model: Dict, n_iter: int = 100, seed: int = 0) -> Tuple[Language, List[float]]:
    """conftest's ``train_tiny`` on the current thinc device, returning each update's loss.

    model (Dict): The component's model config (e.g. ``TINY_MODEL``).
    n_iter (int): Updates over the whole of TRAIN_DATA.
    RETURNS (Tuple[Language, List[float]]): The pipeline and the loss of each update.
    """
    fix_random_seed(seed)
    nlp = spacy.blank("en")
    nlp.add_pipe("hybrid_ner", name="ner", config={"model": model})
    examples = make_examples(nlp)
    optimizer = nlp.initialize(lambda: examples)
    losses = []
    for _ in range(n_iter):
        step: Dict[str, float] = {}
        nlp.update(examples, sgd=optimizer, losses=step)
        losses.append(step["ner"])
    return nlp, losses


def check_learned(nlp: Language, losses: Sequence[float]) -> None:
    """Finite losses that fall to a tenth, and every training entity recovered."""
    assert all(math.isfinite(x) for x in losses), losses
    assert sum(losses[-5:]) / 5 < 0.1 * losses[0], (losses[0], losses[-5:])
    assert nlp.evaluate(make_examples(nlp))["ents_f"] == 1.0


def encoder_module(nlp: Language) -> torch.nn.Module:
    """The PyTorch encoder module of the pipeline's ``ner``."""
    return torch_module(nlp.get_pipe("ner").model.get_ref("encoder"))


def entities(docs) -> List[List[Entity]]:
    return [[(e.start_char, e.end_char, e.label_, e._.confidence) for e in doc.ents] for doc in docs]


def pipe_entities(nlp: Language, texts: Sequence[str] = TEXTS, batch_size: int = 4) -> List[List[Entity]]:
    """Entities with confidences from ``nlp.pipe``, plus the same texts again with an
    entity set beforehand on each doc of the first one (the constrained decoding path).

    RETURNS (List[List[Entity]]): ``2 * len(texts)`` lists.
    """
    plain = entities(nlp.pipe(texts, batch_size=batch_size))
    preset = []
    for text in texts:
        doc = nlp.make_doc(text)
        if len(doc) > 1:
            doc.ents = [doc.char_span(doc[0].idx, doc[0].idx + len(doc[0]), "MISC", alignment_mode="expand")]
        preset.append(doc)
    return plain + entities(nlp.pipe(preset, batch_size=batch_size))


def same_entities(
    got: List[List[Entity]], expected: List[List[Entity]], abs_tol: float, min_confidence: float = 0.0
) -> List[str]:
    """Where two entity lists disagree: every entity of either side (a preset one, of
    confidence None, included) must be on the other side with the same span and label,
    and shared entities' confidences must agree within ``abs_tol``.

    min_confidence (float): Entities below it on both sides may be missing from the
        other: under bfloat16 noise a span the model is unsure of can give way to another
        (0.0: none may).
    RETURNS (List[str]): One line per doc that differs.
    """

    def sure(entity: Entity) -> bool:
        return entity[3] is None or entity[3] >= min_confidence

    problems = []
    if len(got) != len(expected):
        problems.append(f"{len(got)} docs != {len(expected)}")
    for i, (have, want) in enumerate(zip(got, expected)):
        have_spans, want_spans = {e[:3]: e[3] for e in have}, {e[:3]: e[3] for e in want}
        missing = [e[:3] for e in want if e[:3] not in have_spans and sure(e)]
        extra = [e[:3] for e in have if e[:3] not in want_spans and sure(e)]
        off = [
            (span, have_spans[span], want_spans[span])
            for span in have_spans.keys() & want_spans.keys()
            if (have_spans[span] is None) != (want_spans[span] is None)
            or (have_spans[span] is not None and abs(have_spans[span] - want_spans[span]) > abs_tol)
        ]
        if missing or extra or off:
            problems.append(f"doc {i}: missing {missing}, extra {extra}, confidences (got, expected) {off}")
    return problems


CPU_PROCESS = """
import json, sys
import spacy, torch
sys.path.insert(0, {tests!r})
from gpu_parity import encoder_module, pipe_entities
texts = json.loads(open(sys.argv[2]).read())
nlp = spacy.load(sys.argv[1])
device = next(encoder_module(nlp).parameters()).device.type
print(json.dumps({{"cuda": torch.cuda.is_available(), "device": device, "entities": pipe_entities(nlp, texts)}}))
"""


def predict_in_cpu_process(model_dir: Path, texts: Sequence[str] = TEXTS, timeout: int = 300) -> Dict:
    """Load a saved pipeline in a fresh interpreter that sees no GPU
    (``CUDA_VISIBLE_DEVICES=""``) and run ``pipe_entities`` there.

    model_dir (Path): A pipeline saved with ``nlp.to_disk``.
    RETURNS (Dict): ``cuda`` (whether that process saw CUDA), ``device`` (where its
        encoder's weights are) and ``entities``.
    """
    texts_path = Path(model_dir).parent / f"{Path(model_dir).name}-texts.json"
    texts_path.write_text(json.dumps(list(texts)))
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    code = CPU_PROCESS.format(tests=str(Path(__file__).parent))
    result = subprocess.run(
        [sys.executable, "-c", code, str(model_dir), str(texts_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise AssertionError(f"CPU process failed:\nSTDOUT:\n{result.stdout}\nSTDERR:\n{result.stderr}")
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    answer["entities"] = [[tuple(e) for e in doc] for doc in answer["entities"]]
    return answer


def char_cnn_vectors(nlp: Language, texts: Sequence[str] = TEXTS) -> numpy.ndarray:
    """The output of the pipeline's character CNN (``char_cnn`` layer) on the texts, on
    the CPU: the layer whose character ids go through cupy on a GPU."""
    layers = [node for node in nlp.get_pipe("ner").model.walk() if node.name == "char_cnn"]
    assert len(layers) == 1, [node.name for node in nlp.get_pipe("ner").model.walk()]
    layer = layers[0]
    docs = [nlp.make_doc(text) for text in texts]
    return layer.ops.to_numpy(layer.predict(docs).dataXd)
