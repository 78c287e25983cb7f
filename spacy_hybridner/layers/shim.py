"""A ``PyTorchWrapper_v2``-style layer whose shim can switch to the optimizer's
parameter averages, and the one accessor for the PyTorch module behind a layer.

The thinc bug this works around (thinc 8.3.x; the lines are those of thinc 8.3.14 as
installed here): ``thinc/shims/pytorch.py``, ``PyTorchShim.finish_update`` (line 164)
hands each PyTorch parameter to the optimizer under the key ``(self.id, name)`` (line
171), so that is where ``Optimizer.averages`` keeps its running average
(``use_averages = true``); but ``PyTorchShim.use_params`` (line 183) looks for keys
``f"pytorch_{self.id}_"`` + name (line 184) and finds none. spaCy's training loop
evaluates on dev and saves ``model-best`` / ``model-last`` under
``nlp.use_params(optimizer.averages)``: with the stock shim the thinc layers (tok2vec)
switch to their averages and the PyTorch modules keep their last weights, a mixture that
no training step ever produced. ``AveragingPyTorchShim`` also finds the optimizer's
keys, so the whole model switches.

``PyTorchWrapper_v2`` (``thinc/layers/pytorchwrapper.py``, line 80) builds its stock
``PyTorchShim`` itself (line 129) and takes no shim argument, so ``pytorch_wrapper``
builds the same layer, with thinc's own ``forward``, around an ``AveragingPyTorchShim``
from the start.
"""
import contextlib
from typing import Any, Callable, Dict, Optional

import torch
from thinc.api import Model, PyTorchGradScaler, PyTorchShim, xp2torch
from thinc.layers.pytorchwrapper import forward as pytorch_forward


class AveragingPyTorchShim(PyTorchShim):
    """thinc's ``PyTorchShim`` whose ``use_params`` also finds the optimizer's
    ``(shim.id, name)`` keys (see the module docstring)."""

    @property
    def module(self) -> torch.nn.Module:
        """The wrapped PyTorch module."""
        return self._model

    @contextlib.contextmanager
    def use_params(self, params: Dict[Any, Any]):
        named = dict(self._model.named_parameters())
        found = {name: params[(self.id, name)] for name in named if (self.id, name) in params}
        if not found:
            # Keys in the stock "pytorch_{id}_{name}" form, or none for this shim.
            with super().use_params(params):
                yield
            return
        backup = {name: named[name].detach().clone() for name in found}
        with torch.no_grad():
            for name, value in found.items():
                named[name].copy_(xp2torch(value, device=named[name].device))
        try:
            yield
        finally:
            with torch.no_grad():
                for name, value in backup.items():
                    named[name].copy_(value)


def pytorch_wrapper(
    module: torch.nn.Module, *, convert_inputs: Callable, convert_outputs: Callable,
    mixed_precision: bool = False, grad_scaler: Optional[PyTorchGradScaler] = None, device=None,
) -> Model:
    """``PyTorchWrapper_v2`` (same arguments and layer) with an ``AveragingPyTorchShim``.

    module (torch.nn.Module): The PyTorch module.
    convert_inputs (Callable): ``(model, X, is_train) -> (ArgsKwargs, backprop)``.
    convert_outputs (Callable): ``(model, (X, Ytorch), is_train) -> (Y, backprop)``.
    mixed_precision (bool): thinc's float16 autocast.
    grad_scaler (Optional[PyTorchGradScaler]): For mixed precision.
    device: The torch device; None: that of the current thinc ops.
    RETURNS (Model): The layer; ``torch_module(layer)`` is ``module``.
    """
    shim = AveragingPyTorchShim(module, mixed_precision=mixed_precision, grad_scaler=grad_scaler, device=device)
    return Model(
        "pytorch",
        pytorch_forward,
        attrs={"convert_inputs": convert_inputs, "convert_outputs": convert_outputs},
        shims=[shim],
        dims={"nI": None, "nO": None},
    )


def torch_module(model: Model) -> torch.nn.Module:
    """The PyTorch module behind a layer: a ``pytorch_wrapper``, or a layer whose one
    sublayer is one (``hybrid_encoder`` and ``crf_layer`` after ``initialize``).

    model (Model): The layer. RETURNS (torch.nn.Module): Its module.
    """
    for node in (model, *model.layers[:1]):
        if node.shims and isinstance(node.shims[0], AveragingPyTorchShim):
            return node.shims[0].module
    raise ValueError(
        f"The layer '{model.name}' has no PyTorch module yet: initialize it first "
        f"(nlp.initialize, or model.initialize) or load trained weights."
    )
