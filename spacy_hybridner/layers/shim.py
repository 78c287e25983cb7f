"""``PyTorchWrapper_v2`` whose shim can switch to the optimizer's parameter averages.

thinc's ``PyTorchShim.finish_update`` hands each PyTorch parameter to the optimizer under the
key ``(shim.id, name)``, so that is where ``Optimizer.averages`` keeps its running average
(``use_averages = true``); but ``PyTorchShim.use_params`` looks for keys
``"pytorch_{id}_{name}"`` and finds none. spaCy's training loop evaluates on dev and saves
``model-best`` / ``model-last`` under ``nlp.use_params(optimizer.averages)``: with the stock
shim the thinc layers (tok2vec) switch to their averages and the PyTorch modules keep their
last weights, a mixture that no training step ever produced. ``AveragingPyTorchShim`` also
finds the optimizer's keys, so the whole model switches.
"""
import contextlib
from typing import Any, Dict, Optional

import torch
from thinc.api import Model, PyTorchGradScaler, PyTorchShim, PyTorchWrapper_v2, xp2torch


class AveragingPyTorchShim(PyTorchShim):
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
    module: torch.nn.Module, *, mixed_precision: bool = False,
    grad_scaler: Optional[PyTorchGradScaler] = None, device=None, **kwargs,
) -> Model:
    """``PyTorchWrapper_v2`` (same arguments) with an ``AveragingPyTorchShim``."""
    model = PyTorchWrapper_v2(module, device=device, **kwargs)
    model.shims[0] = AveragingPyTorchShim(
        module, mixed_precision=mixed_precision, grad_scaler=grad_scaler, device=device
    )
    return model
