"""The ``hybrid_inference`` component: how a trained pipeline runs its transformer on a
CPU (float32 or int8, PyTorch or ONNX Runtime, windows grouped by length), chosen in the
pipeline's config and applied when the pipeline is loaded.

It sits last in the pipeline and does nothing to the docs. When the pipeline is loaded
(``spacy.load``: ``from_disk``, after every component before it), it makes each
spacy-transformers component run its model the configured way. The saved weights stay
float32 (one format; training is untouched); an ONNX Runtime graph, exported by
``spacy-hybridner optimize``, is saved in this component's folder.
"""

import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional

import srsly
import torch
from spacy.language import Language
from spacy.tokens import Doc

from .quantize import quantize_linear
from .stand_in import InferenceEncoder, torch_encode

PRECISIONS = ("fp32", "int8")
RUNTIMES = ("torch", "onnxruntime")


@Language.factory("hybrid_inference", default_config={"precision": "fp32", "runtime": "torch", "by_length": True})
def make_hybrid_inference(
    nlp: Language, name: str, precision: str, runtime: str, by_length: bool
) -> "InferenceSettings":
    """How the pipeline's transformer components run at inference, on a CPU.

    precision (str): "fp32", or "int8": the weights of the transformer's matrix products
        quantized to int8 (dynamic quantization: per output channel), at load time.
    runtime (str): "torch", or "onnxruntime": the transformer runs as the ONNX graph that
        ``spacy-hybridner optimize`` exported into this component (extra ``[onnx]``).
    by_length (bool): Encode each batch's windows in groups of similar length, each group
        padded only to its own longest window.
    """
    return InferenceSettings(nlp, name, precision=precision, runtime=runtime, by_length=by_length)


class InferenceSettings:
    """The ``hybrid_inference`` component (see the module docstring).

    ``graphs`` maps a transformer component's name to its ONNX graph (bytes), exported at
    ``graph_precision``; ``applied`` lists what ``apply`` changed.
    """

    def __init__(self, nlp: Language, name: str, *, precision: str, runtime: str, by_length: bool):
        if precision not in PRECISIONS:
            raise ValueError(f"[hybrid_inference] precision must be one of {PRECISIONS}, got {precision!r}.")
        if runtime not in RUNTIMES:
            raise ValueError(f"[hybrid_inference] runtime must be one of {RUNTIMES}, got {runtime!r}.")
        self.nlp, self.name = nlp, name
        self.precision, self.runtime, self.by_length = precision, runtime, by_length
        self.graphs: Dict[str, bytes] = {}
        self.graph_precision: Optional[str] = None
        self.applied: List[str] = []

    def __call__(self, doc: Doc) -> Doc:
        return doc

    def pipe(self, docs: Iterable[Doc], batch_size: int = 128) -> Iterator[Doc]:
        yield from docs

    def initialize(self, get_examples: Any = None, *, nlp: Optional[Language] = None) -> None:
        """Training leaves the models as they are: the settings apply when loading."""

    def transformer_names(self) -> List[str]:
        """The spacy-transformers components of the pipeline, in order."""
        return [name for name, proc in self.nlp.components if _hf_shim(proc) is not None]

    def export(self) -> None:
        """Export each transformer component's model as an ONNX graph at this
        component's precision (``runtime = "onnxruntime"``); the models must be loaded."""
        from .onnx_encoder import export_encoder

        self.graphs = {
            name: export_encoder(_original(_hf_shim(self.nlp.get_pipe(name))), int8=self.precision == "int8")
            for name in self.transformer_names()
        }
        self.graph_precision = self.precision

    def apply(self) -> List[str]:
        """Make the transformer components run as configured; returns what changed, one
        line each. On a GPU nothing changes (a warning says so): these settings are for
        the CPU."""
        names = self.transformer_names()
        order = [name for name, _ in self.nlp.components]
        late = [n for n in names if order.index(n) > order.index(self.name)]
        if late:
            raise ValueError(
                f"[hybrid_inference] The component '{self.name}' comes before {late} in the pipeline, so they "
                f"are not loaded yet when it applies its settings. Put it last: nlp.add_pipe('hybrid_inference', "
                f"last=True), or run spacy-hybridner optimize, which does."
            )
        shims = {name: _hf_shim(self.nlp.get_pipe(name)) for name in names}
        on_gpu = [n for n, shim in shims.items() if _device_type(_original(shim)) != "cpu"]
        if on_gpu and self._changes_anything():
            warnings.warn(
                f"[hybrid_inference] precision={self.precision!r}, runtime={self.runtime!r} are CPU inference "
                f"settings; {on_gpu} run on a GPU, so they run as trained (float32) there.",
                stacklevel=2,
            )
            return []
        if self.runtime == "onnxruntime":
            self._check_graphs(names)
        self.applied = [self._apply_to(name, shims[name]) for name in names if self._changes_anything()]
        return self.applied

    def _changes_anything(self) -> bool:
        return self.precision != "fp32" or self.runtime != "torch" or self.by_length

    def _check_graphs(self, names: List[str]) -> None:
        missing = [n for n in names if n not in self.graphs]
        if missing:
            raise ValueError(
                f"[hybrid_inference] runtime = 'onnxruntime', but the pipeline holds no ONNX graph for {missing}. "
                f"Export one: spacy-hybridner optimize MODEL OUTPUT --runtime onnxruntime --precision {self.precision}"
            )
        if self.graph_precision != self.precision:
            raise ValueError(
                f"[hybrid_inference] The ONNX graphs in this pipeline were exported at {self.graph_precision}, "
                f"but precision = {self.precision!r}. Export them again: spacy-hybridner optimize MODEL OUTPUT "
                f"--runtime onnxruntime --precision {self.precision}"
            )

    def _apply_to(self, name: str, shim: Any) -> str:
        original = _original(shim)
        original.eval()
        encode: Callable[..., torch.Tensor]
        if self.runtime == "onnxruntime":
            from .onnx_encoder import OnnxSession

            encode, how = OnnxSession(self.graphs[name]), f"ONNX Runtime ({self.precision})"
        else:
            if self.precision == "int8":
                quantize_linear(original)
            encode, how = torch_encode(original), f"PyTorch ({self.precision})"
        shim._model = InferenceEncoder(encode, original, by_length=self.by_length)
        return f"{name}: {how}" + (", windows grouped by length" if self.by_length else "")

    # Serialization: the settings are in the pipeline's config; the folder holds the graphs.
    def to_bytes(self, *, exclude: Iterable[str] = tuple()) -> bytes:
        return srsly.msgpack_dumps({"graphs": self.graphs, "graph_precision": self.graph_precision})

    def from_bytes(self, data: bytes, *, exclude: Iterable[str] = tuple()) -> "InferenceSettings":
        msg = srsly.msgpack_loads(data)
        self.graphs, self.graph_precision = dict(msg["graphs"]), msg["graph_precision"]
        self.apply()
        return self

    def to_disk(self, path: Path, *, exclude: Iterable[str] = tuple()) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        srsly.write_json(path / "cfg.json", {"graphs": sorted(self.graphs), "graph_precision": self.graph_precision})
        for name, graph in self.graphs.items():
            (path / f"{name}.onnx").write_bytes(graph)

    def from_disk(self, path: Path, *, exclude: Iterable[str] = tuple()) -> "InferenceSettings":
        path = Path(path)
        cfg = srsly.read_json(path / "cfg.json") if (path / "cfg.json").exists() else {"graphs": []}
        self.graphs = {name: (path / f"{name}.onnx").read_bytes() for name in cfg["graphs"]}
        self.graph_precision = cfg.get("graph_precision")
        self.apply()
        return self


def _hf_shim(proc: Any) -> Any:
    """The HFShim of a spacy-transformers component (None for any other component)."""
    model = getattr(proc, "model", None)
    if model is None or type(proc).__module__.split(".")[0] != "spacy_transformers":
        return None
    for node in model.walk():
        for shim in node.shims:
            if type(shim).__name__ == "HFShim":
                return shim
    return None


def _device_type(model: Any) -> str:
    """ "cpu" or "cuda": where a Hugging Face model's weights are."""
    return model.device.type


def _original(shim: Any):
    """The Hugging Face model behind a shim, loaded (its float32 model, once replaced)."""
    if shim._hfmodel.transformer is None:
        raise ValueError(
            "[hybrid_inference] A transformer component has no model yet: load the pipeline's weights "
            "(spacy.load) or initialize it before applying inference settings."
        )
    return shim._hfmodel.transformer
