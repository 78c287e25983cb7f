"""The hybrid encoder: projection, positions, Transformer layers, BiLSTM, tag scores.

Works on padded tensors and lengths only (no spaCy, no thinc).
"""

import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .buckets import ENCODER_BATCH_TOKENS, length_buckets


@dataclass(frozen=True)
class EncoderSettings:
    """The hyperparameters of a ``HybridEncoder``, checked when made: the one place they
    are named and validated (the architecture, the thinc layer and the module all take
    this object). Every one is required: the defaults live in one place, the
    ``hybrid_ner`` factory's default config (the block of ``configs/hybrid_cpu.cfg``).

    width (int): Hidden width of every layer.
    depth (int): Transformer encoder layers (0: none, a BiLSTM-CRF).
    n_heads (int): Attention heads per Transformer layer; must divide ``width``.
    ffn_width (int): Width of the Transformer feed-forward blocks.
    lstm_depth (int): Stacked BiLSTM layers after the Transformer (0: none, a
        Transformer-CRF); ``width`` must then be even.
    uni_lstm_depth (int): Stacked left-to-right LSTM layers after the BiLSTM (0: none).
    dropout (float): Dropout rate inside and between the parts, in [0, 1).
    token_dropout (float): In training, the probability of blanking a whole incoming
        token vector (word dropout), so that tags are also learned from context alone,
        as for words never seen in training.
    attention_dropout (Optional[float]): Dropout on the attention weights of the
        Transformer layers; None: the same as ``dropout``. On the CPU, dropout on the
        (heads x tokens x tokens) weights takes about a tenth of a training step's time.
    """

    width: int
    depth: int
    n_heads: int
    ffn_width: int
    lstm_depth: int
    uni_lstm_depth: int
    dropout: float
    token_dropout: float
    attention_dropout: Optional[float]

    def __post_init__(self) -> None:
        """Raise a ValueError that names the setting and the fix when sizes cannot work."""
        width, n_heads = self.width, self.n_heads
        if width < 1:
            raise ValueError(f"width must be a positive number of dimensions, got {width}.")
        for name in ("depth", "lstm_depth", "uni_lstm_depth"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 or more, got {getattr(self, name)}.")
        if self.depth > 0:
            if n_heads < 1:
                raise ValueError(f"n_heads must be at least 1 when depth > 0, got {n_heads}.")
            if width % n_heads != 0:
                raise ValueError(
                    f"width ({width}) must be divisible by n_heads ({n_heads}): each attention "
                    f"head gets width / n_heads dimensions. Change width to a multiple of "
                    f"{n_heads} (e.g. {n_heads * max(1, round(width / n_heads))}) or pick n_heads "
                    f"that divides {width}."
                )
            if self.ffn_width < 1:
                raise ValueError(f"ffn_width must be at least 1 when depth > 0, got {self.ffn_width}.")
        if self.lstm_depth > 0 and width % 2 != 0:
            raise ValueError(
                f"width ({width}) must be even when lstm_depth > 0: the BiLSTM gives each "
                f"direction width / 2 dimensions. Use width = {width + 1}."
            )
        for name in ("dropout", "token_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}.")
        if self.attention_dropout is not None and not 0.0 <= self.attention_dropout < 1.0:
            raise ValueError(
                f"attention_dropout must be in [0, 1) (or null: the same as dropout), got {self.attention_dropout}."
            )

    def to_dict(self) -> Dict[str, Any]:
        """RETURNS (Dict[str, Any]): The settings as plain values (thinc layer attrs)."""
        return asdict(self)


def check_sizes(**settings: Any) -> EncoderSettings:
    """Validate encoder settings given as keywords (see ``EncoderSettings``).

    RETURNS (EncoderSettings): The checked settings; raises a ValueError naming the
        setting and the fix when they cannot work.
    """
    return EncoderSettings(**settings)


class SinusoidalPositions(nn.Module):
    """Fixed sine/cosine position encodings (Vaswani et al. 2017), any length."""

    def __init__(self, width: int):
        super().__init__()
        self.width = width
        self.table: Tensor
        self.register_buffer("table", self._make(512), persistent=False)

    def _make(self, length: int) -> Tensor:
        position = torch.arange(length, dtype=torch.float32)[:, None]
        rate = torch.exp(torch.arange(0, self.width, 2, dtype=torch.float32) * (-math.log(10000.0) / self.width))
        table = torch.zeros(length, self.width)
        table[:, 0::2] = torch.sin(position * rate)
        table[:, 1::2] = torch.cos(position * rate)[:, : self.width // 2]
        return table

    def forward(self, length: int) -> Tensor:
        if length > self.table.shape[0]:
            self.table = self._make(max(length, 2 * self.table.shape[0])).to(self.table.device)
        return self.table[:length]


def _transformer(settings: EncoderSettings) -> nn.TransformerEncoder:
    """``settings.depth`` pre-norm Transformer encoder layers (GELU, batch first)."""
    layer = nn.TransformerEncoderLayer(
        settings.width,
        settings.n_heads,
        dim_feedforward=settings.ffn_width,
        dropout=settings.dropout,
        activation="gelu",
        batch_first=True,
        norm_first=True,
    )
    if settings.attention_dropout is not None:
        # MultiheadAttention reads this at every call; a new module instead
        # would draw its initial weights from the RNG again.
        layer.self_attn.dropout = settings.attention_dropout
    return nn.TransformerEncoder(layer, settings.depth, norm=nn.LayerNorm(settings.width), enable_nested_tensor=False)


def _lstm(width: int, hidden: int, depth: int, dropout: float, *, bidirectional: bool) -> nn.LSTM:
    """``depth`` LSTM layers, batch first, dropout between them only."""
    return nn.LSTM(
        width,
        hidden,
        num_layers=depth,
        bidirectional=bidirectional,
        batch_first=True,
        dropout=dropout if depth > 1 else 0.0,
    )


class HybridEncoder(nn.Module):
    """Token vectors ``(B, T, nI)`` to per-tag emission scores ``(B, T, nO)``.

    nI (int): Width of the incoming token vectors.
    nO (int): Number of tags.
    settings (Optional[EncoderSettings]): The hyperparameters; None: made from the
        keyword arguments in ``hyper`` (``HybridEncoder(8, 5, width=16, depth=1)``).
    autocast_dtype (Optional[torch.dtype]): Run the projection, the Transformer layers
        and the output layer under ``torch.autocast`` with this dtype (``torch.bfloat16``
        for mixed precision without loss scaling); the LSTMs always run in float32 and
        the emissions come back as float32. None: no autocast of its own.
    max_batch_tokens (int): Sequences are run in chunks of at most this many padded
        positions (each chunk trimmed to its longest sequence), which bounds the memory
        of attention.
    cost_per_bucket (int): Chunks are the groups of similar length that minimise the
        padded positions computed plus this many per chunk (``length_buckets``), so
        that short sequences are not padded to the longest of the batch.
    """

    def __init__(
        self,
        nI: int,
        nO: int,
        settings: Optional[EncoderSettings] = None,
        *,
        autocast_dtype: Optional[torch.dtype] = None,
        max_batch_tokens: int = ENCODER_BATCH_TOKENS,
        cost_per_bucket: int = 256,
        **hyper: Any,
    ):
        super().__init__()
        if settings is None:
            settings = EncoderSettings(**hyper)
        elif hyper:
            raise TypeError(f"HybridEncoder got both settings and the keywords {sorted(hyper)}: give one.")
        self.settings = settings
        width, depth, dropout = settings.width, settings.depth, settings.dropout
        lstm_depth, uni_lstm_depth, token_dropout = settings.lstm_depth, settings.uni_lstm_depth, settings.token_dropout
        self.nI, self.nO, self.width = nI, nO, width
        self.token_dropout = token_dropout
        self.autocast_dtype = autocast_dtype
        self.max_batch_tokens = max_batch_tokens
        self.cost_per_bucket = cost_per_bucket
        self.input_proj = nn.Linear(nI, width)
        self.positions = SinusoidalPositions(width)
        self.input_norm = nn.LayerNorm(width)
        self.dropout = nn.Dropout(dropout)
        # Built in this order (the initial weights are drawn from the RNG in it).
        self.transformer: Optional[nn.TransformerEncoder] = _transformer(settings) if depth > 0 else None
        self.lstm: Optional[nn.LSTM] = None
        if lstm_depth > 0:
            self.lstm = _lstm(width, width // 2, lstm_depth, dropout, bidirectional=True)
        self.uni_lstm: Optional[nn.LSTM] = None
        if uni_lstm_depth > 0:
            self.uni_lstm = _lstm(width, width, uni_lstm_depth, dropout, bidirectional=False)
        self.output = nn.Linear(width, nO)

    def forward(self, X: Tensor, lengths: Tensor) -> Tensor:
        """X (Tensor): ``(B, T, nI)`` padded token vectors. lengths (Tensor): ``(B,)``
        on the CPU. RETURNS (Tensor): ``(B, T, nO)``; rows past a length are padding."""
        if self.autocast_dtype is not None:
            with torch.autocast(device_type=X.device.type, dtype=self.autocast_dtype):
                return self._forward(X, lengths).float()
        return self._forward(X, lengths)

    def _forward(self, X: Tensor, lengths: Tensor) -> Tensor:
        B, T, _ = X.shape
        if B == 0 or T == 0:
            return self.output(self.input_proj(X))
        buckets = length_buckets([int(n) for n in lengths], self.max_batch_tokens, self.cost_per_bucket)
        order = [i for bucket in buckets for i in bucket]
        if len(order) < B:  # empty sequences: encoded alone, their rows are all padding
            buckets.append([i for i in range(B) if int(lengths[i]) <= 0])
            order.extend(buckets[-1])
        outputs = []
        for bucket in buckets:
            longest = max(int(lengths[bucket[0]]), 1)
            first, end = bucket[0], bucket[0] + len(bucket)
            if bucket == list(range(first, end)):  # a run of the batch: a view, no copy
                rows, bucket_lengths = X[first:end, :longest], lengths[first:end]
            else:
                index = torch.tensor(bucket, dtype=torch.long)
                rows, bucket_lengths = X[:, :longest].index_select(0, index.to(X.device)), lengths[index]
            Y = self._encode(rows, bucket_lengths)
            outputs.append(nn.functional.pad(Y, (0, 0, 0, T - longest)))
        Y = outputs[0] if len(outputs) == 1 else torch.cat(outputs)
        if order == list(range(B)):
            return Y
        inverse = torch.empty(B, dtype=torch.long)
        inverse[torch.tensor(order)] = torch.arange(B)
        return Y.index_select(0, inverse.to(Y.device))

    def _encode(self, X: Tensor, lengths: Tensor) -> Tensor:
        T = X.shape[1]
        if self.training and self.token_dropout > 0.0:
            keep = torch.rand(X.shape[:2], device=X.device) >= self.token_dropout
            X = X * keep.unsqueeze(-1).to(X.dtype)
        h = self.input_proj(X)
        if self.transformer is not None:  # the LSTMs know order without them
            h = h + self.positions(T)
        h = self.dropout(self.input_norm(h))
        lengths = lengths.clamp(min=1)
        if self.transformer is not None:
            steps = torch.arange(T, device=X.device)
            padding = steps[None, :] >= lengths.to(X.device)[:, None]
            h = self.transformer(h, src_key_padding_mask=padding)
        for lstm in (self.lstm, self.uni_lstm):
            if lstm is not None:
                # float32 whatever the autocast: the plain path of every LSTM kernel.
                with torch.autocast(device_type=h.device.type, enabled=False):
                    h = run_lstm(lstm, h.float(), lengths)
        return self.output(self.dropout(h))


def reversal_index(lengths: Tensor, T: int, device) -> Tensor:
    """``(B, T)`` time indices that reverse each sequence within its length (padding
    stays where it is); gathering with them twice is the identity."""
    steps = torch.arange(T, device=device)[None, :]
    lens = lengths.to(device)[:, None]
    return torch.where(steps < lens, lens - 1 - steps, steps)


def reverse_within(X: Tensor, index: Tensor) -> Tensor:
    """``X`` ``(B, T, d)`` reordered along time by a ``reversal_index``."""
    return X.gather(1, index.unsqueeze(2).expand(-1, -1, X.shape[2]))


def run_lstm(lstm: nn.LSTM, X: Tensor, lengths: Tensor) -> Tensor:
    """Run ``lstm`` (batch_first) over padded ``X`` ``(B, T, d)``, each sequence only
    as far as its length; rows past a length come back as zeros.

    On a GPU this packs the batch (cuDNN runs packed sequences natively). On the CPU
    PyTorch runs packed sequences one time step at a time in Python-visible ops, about
    six times as slow as its fused kernel on padded input, which only a left-to-right
    pass can use (padding comes after the real tokens). So there each layer runs its
    directions separately on padded input with the layer's own weights, the reverse
    direction over each sequence reversed within its length: the same function, and
    the same parameters, as the packed call. (Through ``torch.lstm``, the stateless op
    behind ``nn.LSTM``: no module state is swapped, so threads can share a model.)
    LSTM variants this path does not cover (no biases, projections, not batch_first,
    subclasses such as quantized LSTMs) take the packed call everywhere.
    """
    plain = type(lstm) is nn.LSTM and lstm.bias and lstm.proj_size == 0 and lstm.batch_first
    if X.device.type != "cpu" or not plain:
        packed = pack_padded_sequence(X, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = lstm(packed)
        return pad_packed_sequence(out, batch_first=True, total_length=X.shape[1])[0]
    directions = [("", False), ("_reverse", True)] if lstm.bidirectional else [("", False)]
    state = X.new_zeros(1, X.shape[0], lstm.hidden_size)
    index = reversal_index(lengths, X.shape[1], X.device) if lstm.bidirectional else None
    for layer in range(lstm.num_layers):
        outputs = []
        for suffix, backwards in directions:
            weights = [
                getattr(lstm, f"{name}_l{layer}{suffix}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
            ]
            inputs = reverse_within(X, index) if backwards and index is not None else X
            # input, (h0, c0), weights, has_biases, num_layers, dropout, train,
            # bidirectional, batch_first
            out = torch.lstm(inputs, (state, state), weights, True, 1, 0.0, False, False, True)[0]
            outputs.append(reverse_within(out, index) if backwards and index is not None else out)
        X = torch.cat(outputs, dim=2) if len(outputs) > 1 else outputs[0]
        if layer < lstm.num_layers - 1:
            X = nn.functional.dropout(X, lstm.dropout, lstm.training)
    steps = torch.arange(X.shape[1], device=X.device)
    return X * (steps[None, :] < lengths.to(X.device)[:, None]).unsqueeze(2).to(X.dtype)
