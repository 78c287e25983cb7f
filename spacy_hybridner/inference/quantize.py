"""Dynamic int8 quantization of a trained PyTorch module, applied at load time.

``torch.ao.quantization.quantize_dynamic`` swaps each chosen ``nn.Linear`` for a dynamic
int8 Linear: weights stored as int8 (per output channel or per tensor), activations
quantized on the fly, a float32 result. The module's ``state_dict`` still gives the
float32 weights it was loaded with (kept aside, not re-derived from the int8 ones), so a
pipeline saved after loading at int8 is the same fp32 pipeline, in the one saved format.
"""

import warnings
from functools import partial
from typing import Collection, Dict, List

import torch
from torch import Tensor, nn
from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic


def linear_layers(module: nn.Module, skip: Collection[str] = ()) -> List[str]:
    """The names of the plain ``nn.Linear`` submodules of ``module`` that dynamic int8
    can replace: not a subclass (``MultiheadAttention``'s output projection is one, read
    by its fused kernel), nor one whose name ends with a name in ``skip``."""
    return [
        name
        for name, sub in module.named_modules()
        if type(sub) is nn.Linear and name and not any(name == s or name.endswith("." + s) for s in skip)
    ]


def quantize_linear(module: nn.Module, *, per_channel: bool = True, skip: Collection[str] = ()) -> List[str]:
    """Quantize, in place, the Linear layers of a module in eval mode (``linear_layers``).

    module (nn.Module): A trained module, on the CPU.
    per_channel (bool): One scale per output row (True) or one per matrix.
    skip (Collection[str]): Names (or name endings) of Linear layers to keep in float32.
    RETURNS (List[str]): The names of the layers now int8.
    """
    names = linear_layers(module, skip)
    if not names:
        return []
    fp32: Dict[str, Dict[str, Tensor]] = {
        name: {k: v.detach().clone() for k, v in module.get_submodule(name).state_dict().items()} for name in names
    }
    qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    with warnings.catch_warnings():
        # torch 2.10+ marks its quantized tensors deprecated (in favour of torchao); they
        # are what quantize_dynamic makes, and work: docs/inference.md says what it means.
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*deprecated")
        quantize_dynamic(module, {name: qconfig for name in names}, dtype=torch.qint8, inplace=True)
    module.register_state_dict_post_hook(partial(_float_state, fp32))
    return names


def _float_state(fp32: Dict[str, Dict[str, Tensor]], module: nn.Module, state: Dict, prefix: str, _meta) -> None:
    """``state_dict`` post-hook: the int8 layers' entries replaced by the float32 weights
    they were made from, under the names the float32 module has."""
    for name, tensors in fp32.items():
        start = f"{prefix}{name}."
        for key in [k for k in state if k.startswith(start)]:
            del state[key]
        for key, value in tensors.items():
            state[start + key] = value


def is_quantized(module: nn.Module) -> bool:
    """Whether any submodule of ``module`` is a dynamic int8 layer."""
    return any(type(sub).__module__.startswith("torch.ao.nn.quantized") for sub in module.modules())
