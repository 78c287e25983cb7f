"""thinc glue for the CRF.

As a layer, ``crf`` maps ``(scores, gold)`` to the negative log-likelihood of each
sequence: ``scores`` are ``List[Floats2d]`` tag scores and ``gold`` are ``List[Ints1d]``
tag ids (-1 where the tag is missing). Its backprop returns the gradient of the
scores and leaves the gradient of the transition scores in the PyTorch module, where
``finish_update`` applies it. ``crf_decode`` runs Viterbi and forward-backward for
prediction, without autograd.
"""

from typing import Callable, List, Optional, Sequence, Tuple

from thinc.api import ArgsKwargs, Model, torch2xp, xp2torch
from thinc.types import Floats1d, Floats2d, Ints1d

from ..modules import CRF, CRF_BATCH_TOKENS
from .shim import module_layer, torch_module

CRFInput = Tuple[List[Floats2d], List[Ints1d]]


def _crf(model: Model) -> CRF:
    """The ``CRF`` module behind a ``crf_layer``."""
    module = torch_module(model)
    assert isinstance(module, CRF), f"{model.name} holds a {type(module).__name__}, not a CRF"
    return module


def crf_layer(nO: Optional[int] = None, *, max_batch_tokens: int = CRF_BATCH_TOKENS) -> Model[CRFInput, Floats1d]:
    """A CRF over ``nO`` tags: the PyTorch node from the start, its module made by
    ``initialize`` and rebuilt on load from the settings saved with its weights (tag
    count, constraints, ``max_batch_tokens``). Set ``attrs["constraints"]`` (see
    ``tag_scheme.biluo_constraints``) before ``initialize``.

    nO (Optional[int]): Number of tags.
    max_batch_tokens (int): Padded size of one bucket of sequences in the CRF's loops.
    """
    return module_layer(
        "crf",
        _make_crf,
        init=_init,
        convert_inputs=_convert_inputs,
        convert_outputs=_convert_outputs,
        dims={"nO": nO},
        attrs={"constraints": {}, "max_batch_tokens": max_batch_tokens},
    )


def _make_crf(shim, settings: dict) -> CRF:
    return CRF(settings["nO"], **settings["constraints"], max_batch_tokens=settings["max_batch_tokens"])


def _init(model: Model, X=None, Y=None) -> None:
    model.shims[0].build(
        {
            "nO": model.get_dim("nO"),
            "constraints": model.attrs["constraints"],
            "max_batch_tokens": model.attrs["max_batch_tokens"],
        }
    )


def _flat(model: Model, arrays: Sequence, width: Optional[int], dtype: str):
    xp = model.ops.xp
    if arrays:
        return xp.concatenate(arrays)
    return xp.zeros((0, width) if width is not None else (0,), dtype=dtype)


def _convert_inputs(model: Model, X: CRFInput, is_train: bool) -> Tuple[ArgsKwargs, Callable]:
    scores, gold = X
    lengths = [len(s) for s in scores]
    K = _crf(model).num_tags
    flat = xp2torch(_flat(model, scores, K, "float32"), requires_grad=is_train)
    tags = xp2torch(_flat(model, gold, None, "int32"))

    def backprop(dX: ArgsKwargs) -> Tuple[List[Floats2d], None]:
        d_flat = torch2xp(dX.args[0])
        return model.ops.unflatten(d_flat, model.ops.asarray1i(lengths)), None

    return ArgsKwargs(args=(flat, lengths, tags), kwargs={}), backprop


def _convert_outputs(model: Model, inputs_outputs, is_train: bool) -> Tuple[Floats1d, Callable]:
    _, nll = inputs_outputs

    def backprop(d_nll: Floats1d) -> ArgsKwargs:
        return ArgsKwargs(args=(nll,), kwargs={"grad_tensors": (xp2torch(d_nll, device=nll.device),)})

    return torch2xp(nll.detach()), backprop


def crf_decode(
    model: Model[CRFInput, Floats1d],
    scores: List[Floats2d],
    tag_masks: Optional[List[Optional[object]]] = None,
    temperature: float = 1.0,
) -> Tuple[List[Ints1d], List[Floats1d]]:
    """Best tag ids of each sequence and, at each token, the probability of the decoded
    segment that ends there (for an entity: the probability of exactly that span).

    model (Model): A ``crf_layer`` after ``initialize``.
    scores (List[Floats2d]): Tag scores of each sequence.
    tag_masks (Optional[List[Optional[Bools2d]]]): Per sequence, ``(n, K)`` True where
        a tag is allowed, or None for no constraint.
    temperature (float): Divides the CRF's potentials for the probabilities (not the
        tags): above 1 makes them less confident.
    RETURNS (Tuple[List[Ints1d], List[Floats1d]]): Tag ids and probabilities.
    """
    ops = model.ops
    module = _crf(model)
    K = module.num_tags
    lengths = [len(s) for s in scores]
    flat = xp2torch(_flat(model, scores, K, "float32"))
    mask = None
    if tag_masks is not None and any(m is not None for m in tag_masks):
        parts = [m if m is not None else ops.xp.ones((n, K), dtype="bool") for m, n in zip(tag_masks, lengths)]
        mask = xp2torch(ops.xp.concatenate(parts), device=flat.device)
    tags, seg_logp = module.decode(flat, lengths, mask, temperature)
    lengths_xp = ops.asarray1i(lengths)
    tags_xp = ops.unflatten(torch2xp(tags.int()), lengths_xp)
    probs_xp = ops.unflatten(torch2xp(seg_logp.exp()), lengths_xp)
    return tags_xp, probs_xp


def crf_marginals(model: Model[CRFInput, Floats1d], scores: List[Floats2d]) -> List[Floats2d]:
    """Tag marginals ``(n, K)`` of each sequence: the probability of each tag at each
    token under the CRF (forward-backward; the potentials as in training)."""
    module = _crf(model)
    lengths = [len(s) for s in scores]
    flat = xp2torch(_flat(model, scores, module.num_tags, "float32"))
    marginals = module.marginals(flat, lengths)
    return model.ops.unflatten(torch2xp(marginals), model.ops.asarray1i(lengths))


def crf_soft_loss(
    model: Model[CRFInput, Floats1d], scores: List[Floats2d], targets: List[Floats2d]
) -> Tuple[Floats1d, List[Floats2d]]:
    """The CRF's cross-entropy against per-token target distributions (``CRF.soft_loss``)
    of each sequence, and its gradient with respect to ``scores``."""
    module = _crf(model)
    K = module.num_tags
    lengths = [len(s) for s in scores]
    flat = xp2torch(_flat(model, scores, K, "float32"))
    flat_targets = xp2torch(_flat(model, targets, K, "float32"), device=flat.device)
    loss, grad = module.soft_loss(flat, lengths, flat_targets)
    return torch2xp(loss), model.ops.unflatten(torch2xp(grad), model.ops.asarray1i(lengths))
