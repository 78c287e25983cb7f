"""Modules that stand in for a spacy-transformers component's Hugging Face model at
inference: the same call (``input_ids``, ``attention_mask``, ``token_type_ids``), the same
``last_hidden_state``, and the ``state_dict`` of the float32 model they stand for, so that
a pipeline saved from one is the pipeline that was loaded.
"""

from typing import Any, Callable, Dict, List, Optional, cast

import torch
from torch import nn

from ..modules.buckets import length_buckets


class StandIn(nn.Module):
    """Base: holds the model it stands for (``original``) without making it a
    submodule, and gives that model's ``state_dict`` as its own."""

    def __init__(self, original: nn.Module):
        super().__init__()
        self._original = [original]  # a list: not a submodule (not saved twice, not moved)
        self.config = getattr(original, "config", None)
        self.register_state_dict_post_hook(_state_of_original)

    @property
    def original(self) -> nn.Module:
        """The float32 Hugging Face model this module stands for."""
        return self._original[0]


def _state_of_original(module: StandIn, state: Dict, prefix: str, _meta: Any) -> None:
    for key in [k for k in state if k.startswith(prefix)]:
        del state[key]
    state.update({prefix + k: v for k, v in module.original.state_dict().items()})


class InferenceEncoder(StandIn):
    """Runs ``encode`` (int8 PyTorch, ONNX Runtime) where the component ran its model.
    With ``by_length``, on the rows of a padded batch grouped by their length, each group
    cut to its longest row: spacy-transformers pads every window of a batch to the longest
    one, and a short window (the last of each document, a short document) then computes as
    many positions as the longest. Positions past a row's length come back as zeros (they
    are padding, which the component never reads).

    encode (Callable): ``encode(input_ids, attention_mask, token_type_ids)`` → a tensor
        ``(B, T, width)`` of last hidden states.
    original (nn.Module): The float32 model (see ``StandIn``).
    by_length (bool): Group the rows by length (else one call on the batch as given).
    max_tokens (int): Padded positions in one call at most (bounds attention's memory).
    cost_per_bucket (int): Positions that one more call is worth (``length_buckets``).
    """

    def __init__(
        self,
        encode: Callable[..., torch.Tensor],
        original: nn.Module,
        *,
        by_length: bool = True,
        max_tokens: int = 8192,
        cost_per_bucket: int = 512,
    ):
        super().__init__(original)
        self.encode, self.by_length = encode, by_length
        self.max_tokens, self.cost_per_bucket = max_tokens, cost_per_bucket

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids=None, **_: Any):
        if not self.by_length:
            return _output(self.encode(input_ids, attention_mask, token_type_ids))
        lengths = [int(n) for n in attention_mask.sum(1)]
        B, T = input_ids.shape
        groups: List[List[int]] = length_buckets(lengths, self.max_tokens, self.cost_per_bucket)
        output: Optional[torch.Tensor] = None
        for group in groups:
            longest = lengths[group[0]]
            index = torch.tensor(group, dtype=torch.long)
            rows = [
                t.index_select(0, index)[:, :longest] if t is not None else None
                for t in (input_ids, attention_mask, token_type_ids)
            ]
            hidden = self.encode(*rows)
            if output is None:
                output = hidden.new_zeros(B, T, hidden.shape[-1])
            output[index, :longest] = hidden
        if output is None:  # every row empty
            output = self.encode(input_ids, attention_mask, token_type_ids)
        return _output(output)


def _output(hidden: torch.Tensor) -> Any:
    """The hidden states as spacy-transformers reads them from a Hugging Face model."""
    from transformers.modeling_outputs import BaseModelOutput

    return BaseModelOutput(last_hidden_state=cast(torch.FloatTensor, hidden))


def torch_encode(model: nn.Module) -> Callable[..., torch.Tensor]:
    """``encode`` for ``InferenceEncoder`` from a Hugging Face model run by PyTorch."""

    def encode(input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        return model(**kwargs, return_dict=True).last_hidden_state

    return encode
