"""ONNX Runtime for the transformer of a spacy-transformers component.

``export_encoder`` writes the Hugging Face model as an ONNX graph (PyTorch's exporter),
fuses it with ONNX Runtime's transformer optimizer (attention, LayerNorm, GELU) and, for
int8, quantizes its weights with ONNX Runtime's dynamic quantization. ``OnnxEncoder`` is a
``torch.nn.Module`` that runs such a graph in an ONNX Runtime session where the component
ran the PyTorch model: spacy-transformers calls it with the same tensors and reads the same
``last_hidden_state``.
"""

import contextlib
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy
import torch
from torch import nn

ONNX_EXTRA = (
    "The ONNX Runtime path needs the packages onnxruntime and onnx, which are not installed. "
    "Install them with: pip install 'spacy-hybridner[onnx]'"
)


def require_onnxruntime() -> Any:
    """The ``onnxruntime`` module; an ImportError naming the extra when it is missing."""
    try:
        import onnx  # noqa: F401  (the optimizer and the quantizer read graphs with it)
        import onnxruntime
    except ImportError as error:
        raise ImportError(f"{ONNX_EXTRA} ({error}).") from error
    return onnxruntime


class _LastHiddenState(nn.Module):
    """The Hugging Face model with one output, the last hidden states (no pooler)."""

    def __init__(self, model: nn.Module, names: List[str]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.names, inputs)), return_dict=True).last_hidden_state


def input_names(model: nn.Module) -> List[str]:
    """The inputs the exported graph takes: ids, mask, and token types where the model
    has more than one type (BERT; RoBERTa has one)."""
    names = ["input_ids", "attention_mask"]
    if getattr(model.config, "type_vocab_size", 0) > 1:
        names.append("token_type_ids")
    return names


def export_encoder(
    model: nn.Module, *, int8: bool, per_channel: bool = True, keep_float: Sequence[str] = (), opset: int = 17
) -> bytes:
    """The ONNX graph of a Hugging Face encoder, fused and, with ``int8``, quantized.

    model (nn.Module): The transformer (``AutoModel``), trained, on the CPU.
    int8 (bool): Quantize the weights of its matrix products to int8 (dynamic).
    per_channel (bool): One int8 scale per output channel (else per matrix).
    keep_float (Sequence[str]): Operators whose name contains one of these stay float32
        (e.g. ``"layer.5/"``: the last layer of a 6-layer model).
    opset (int): The ONNX operator set to export to.
    RETURNS (bytes): The serialized ONNX model.
    """
    require_onnxruntime()
    names = input_names(model)
    model = model.eval()
    # A mask with padding in it: traced with a mask of ones, the exporter would record
    # the model's shortcut for an unpadded batch and the graph would ignore every mask.
    example = {
        "input_ids": torch.full((2, 8), 5, dtype=torch.long),
        "attention_mask": torch.tensor([[1] * 8, [1] * 5 + [0] * 3]),
        "token_type_ids": torch.zeros(2, 8, dtype=torch.long),
    }
    dummy = tuple(example[n] for n in names)
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["last_hidden_state"] = {0: "batch", 1: "sequence"}
    with tempfile.TemporaryDirectory() as tmp:
        raw, fused, final = Path(tmp) / "raw.onnx", Path(tmp) / "fused.onnx", Path(tmp) / "int8.onnx"
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the exporter's notes on tracing and its deprecation
            torch.onnx.export(
                _LastHiddenState(model, names),
                dummy,
                str(raw),
                input_names=names,
                output_names=["last_hidden_state"],
                dynamic_axes=axes,
                opset_version=opset,
                dynamo=False,
            )
        with _quiet_loggers():
            return _fuse_and_quantize(
                raw, fused, final, model.config, int8=int8, per_channel=per_channel, keep_float=keep_float
            )


@contextlib.contextmanager
def _quiet_loggers():
    """ONNX Runtime's optimizer and quantizer log advice at WARNING on the root logger
    and their own (pre-processing, embedding sizes): not for the users of a pipeline."""
    loggers = [logging.getLogger(name) for name in ("", "onnxruntime", "fusion_embedlayer", "onnx_model")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _fuse_and_quantize(
    raw: Path, fused: Path, final: Path, config: Any, *, int8: bool, per_channel: bool, keep_float: Sequence[str]
) -> bytes:
    """Fuse the exported graph (ONNX Runtime's BERT optimizer) and, for int8, quantize the
    weights of its matrix products; RETURNS the final graph's bytes."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(
        str(raw), model_type="bert", num_heads=config.num_attention_heads, hidden_size=config.hidden_size
    )
    optimized.save_model_to_file(str(fused))
    if not int8:
        return fused.read_bytes()
    excluded = [n.name for n in optimized.model.graph.node if any(k in n.name for k in keep_float)]
    quantize_dynamic(
        str(fused),
        str(final),
        weight_type=QuantType.QInt8,
        per_channel=per_channel,
        nodes_to_exclude=excluded,
        # The fused operators (domain com.microsoft) defeat ONNX's shape inference; their
        # outputs are float32.
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    return final.read_bytes()


class OnnxSession:
    """An ONNX Runtime session over an exported encoder, called as ``encode(input_ids,
    attention_mask, token_type_ids)`` (``stand_in.InferenceEncoder``).

    graph (bytes): The ONNX model (``export_encoder``).
    threads (Optional[int]): ONNX Runtime's threads within an operator; None: as many as
        torch uses (the thread policy of ``spacy_hybridner.threads``).
    """

    def __init__(self, graph: bytes, threads: Optional[int] = None):
        ort = require_onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # No busy-waiting between runs: the pipeline's PyTorch head runs right after the
        # encoder on the same cores, and spinning ONNX Runtime threads would slow it.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()]

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids=None) -> torch.Tensor:
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        feed: Dict[str, numpy.ndarray] = {}
        for name in self.names:
            value = given.get(name)
            feed[name] = (
                numpy.zeros(tuple(input_ids.shape), dtype=numpy.int64)
                if value is None
                else value.detach().cpu().numpy().astype(numpy.int64, copy=False)
            )
        (hidden,) = self.session.run(["last_hidden_state"], feed)
        return torch.from_numpy(hidden)
