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
``PyTorchShim`` itself (line 129) and takes no shim argument, so ``module_layer`` builds
the same layer, with thinc's own ``forward``, around a ``ModuleShim`` (an
``AveragingPyTorchShim`` that also rebuilds its module on load) from the start.
``tests/test_layers_public.py`` fails once thinc finds the optimizer's keys itself, the
sign that this shim's ``use_params`` can go.
"""

import contextlib
from typing import Any, Callable, Dict, Optional

import srsly
import torch
from thinc.api import Model, PyTorchShim, xp2torch
from thinc.layers.pytorchwrapper import forward as pytorch_forward
from thinc.shims.pytorch import default_deserialize_torch_model
from thinc.util import get_torch_default_device


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


class ModuleShim(AveragingPyTorchShim):
    """A shim that builds its PyTorch module from settings and saves them beside the
    weights, so that a saved layer rebuilds itself on load (as spacy-transformers'
    ``HFShim``): the layer exists, with this shim, from construction; ``initialize``
    calls ``build(settings)`` once the sizes are known; ``to_bytes`` writes the settings
    (thinc's shim ``cfg``) with the weights, and ``from_bytes`` makes the module from
    them with the same ``make_module`` before loading the weights.

    make_module (Callable[[ModuleShim, dict], torch.nn.Module]): Makes the module from
        the settings (plain values: msgpack). It may set the shim's mixed precision for
        the device it builds on.
    """

    def __init__(self, make_module: Callable[["ModuleShim", dict], torch.nn.Module], **kwargs: Any) -> None:
        self._make_module = make_module
        super().__init__(None, config={}, deserialize_model=self._rebuild, **kwargs)

    @property
    def module(self) -> Optional[torch.nn.Module]:  # type: ignore[override]  # None before build
        """The wrapped PyTorch module; None until ``build`` (``initialize``) or loading."""
        return self._model

    @property
    def device(self):
        if self._model is None:
            return get_torch_default_device()
        return super().device

    def build(self, settings: Dict[str, Any]) -> torch.nn.Module:
        """Make the module from ``settings`` (replacing any earlier one) and keep them."""
        self.cfg = dict(settings)
        self._model = self._make_module(self, self.cfg).to(self.device)
        return self._model

    def _rebuild(self, _old: Any, state: bytes, device) -> Optional[torch.nn.Module]:
        if not self.cfg:  # saved before it was built
            return None
        module = self._make_module(self, self.cfg)
        return default_deserialize_torch_model(module, state, device)

    def to_bytes(self) -> bytes:
        if self._model is None:
            return srsly.msgpack_dumps({"config": {}, "state": b""})
        return super().to_bytes()

    def finish_update(self, optimizer) -> None:
        if self._model is not None:
            super().finish_update(optimizer)

    @contextlib.contextmanager
    def use_params(self, params: Dict[Any, Any]):
        if self._model is None:
            yield
            return
        with super().use_params(params):
            yield

    def to_device(self, device_type: str, device_id: int) -> None:
        if self._model is not None:
            super().to_device(device_type, device_id)


def module_layer(
    name: str,
    make_module: Callable[[ModuleShim, dict], torch.nn.Module],
    *,
    init: Callable,
    convert_inputs: Callable,
    convert_outputs: Callable,
    dims: Optional[Dict[str, Optional[int]]] = None,
    attrs: Optional[Dict[str, Any]] = None,
) -> Model:
    """A ``PyTorchWrapper_v2`` layer (thinc's own ``forward``) around a ``ModuleShim``:
    the PyTorch node exists from construction and its module is made by ``init``
    (``model.shims[0].build(settings)``) or rebuilt by ``from_bytes``.

    name (str): The layer's name.
    make_module (Callable): Settings to module (see ``ModuleShim``).
    init (Callable): thinc's ``init(model, X, Y)``; it calls ``build``.
    convert_inputs (Callable): ``(model, X, is_train) -> (ArgsKwargs, backprop)``.
    convert_outputs (Callable): ``(model, (X, Ytorch), is_train) -> (Y, backprop)``.
    dims, attrs: The layer's dimensions and other attributes.
    RETURNS (Model): The layer; ``torch_module(layer)`` is its module once built.
    """
    return Model(
        name,
        pytorch_forward,
        init=init,
        attrs={**(attrs or {}), "convert_inputs": convert_inputs, "convert_outputs": convert_outputs},
        shims=[ModuleShim(make_module)],
        dims=dict(dims or {}),
    )


def module_is_built(model: Model) -> bool:
    """Whether the PyTorch module behind a ``module_layer`` exists (after ``initialize``
    or loading)."""
    return bool(model.shims) and getattr(model.shims[0], "module", None) is not None


def torch_module(model: Model) -> torch.nn.Module:
    """The PyTorch module behind a ``module_layer`` (``hybrid_encoder``, ``crf_layer``).

    model (Model): The layer. RETURNS (torch.nn.Module): Its module.
    """
    if not module_is_built(model):
        raise ValueError(
            f"The layer '{model.name}' has no PyTorch module yet: initialize it first "
            f"(nlp.initialize, or model.initialize) or load trained weights."
        )
    return model.shims[0].module
