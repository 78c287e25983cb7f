"""``optimize``: write a pipeline that runs its transformer the chosen way on a CPU, and
``apply_inference``: the same settings on a pipeline already loaded (``serve``, ``annotate``)."""

from pathlib import Path
from typing import List, Optional, Union

from spacy.language import Language
from spacy.util import load_config

from .component import InferenceSettings

#: The name the settings component gets in a pipeline.
COMPONENT = "inference"


def load_float32(model: Union[str, Path]) -> Language:
    """Load a pipeline as it was trained: any ``hybrid_inference`` component left out,
    so its models are float32 PyTorch (what ``optimize`` exports and quantizes)."""
    import spacy

    path = Path(model)
    excluded: List[str] = []
    if (path / "config.cfg").exists():
        components = load_config(path / "config.cfg", interpolate=False).get("components", {})
        excluded = [n for n, block in components.items() if block.get("factory") == "hybrid_inference"]
    return spacy.load(model, exclude=excluded)


def add_inference(
    nlp: Language, *, precision: str, runtime: str, by_length: bool = True, name: str = COMPONENT
) -> InferenceSettings:
    """Add (or replace) the ``hybrid_inference`` component, last, with these settings,
    and export its ONNX graphs for ``runtime = "onnxruntime"``. The models are not
    changed yet (``apply`` does that; ``apply_inference`` does both)."""
    for existing in [n for n, proc in nlp.components if isinstance(proc, InferenceSettings)]:
        nlp.remove_pipe(existing)
    settings = nlp.add_pipe(
        "hybrid_inference",
        name=name,
        last=True,
        config={"precision": precision, "runtime": runtime, "by_length": by_length},
    )
    assert isinstance(settings, InferenceSettings)
    if not settings.transformer_names():
        raise ValueError(
            f"[hybrid_inference] The pipeline {nlp.pipe_names} has no spacy-transformers component: the "
            f"inference settings apply to transformers only (spaCy's own and HybridNER heads on hash "
            f"embeddings already run as fast as they can at float32)."
        )
    if runtime == "onnxruntime":
        settings.export()
    return settings


def apply_inference(nlp: Language, *, precision: str, runtime: str, by_length: bool = True) -> List[str]:
    """Run a loaded pipeline's transformers with these settings from now on. The
    pipeline must have been loaded at float32 (``load_float32``). RETURNS (List[str]):
    What changed, one line per component."""
    return add_inference(nlp, precision=precision, runtime=runtime, by_length=by_length).apply()


def optimize(
    model: Union[str, Path],
    output: Union[str, Path],
    *,
    precision: str = "int8",
    runtime: str = "torch",
    by_length: bool = True,
    window: Optional[int] = None,
    stride: Optional[int] = None,
) -> List[str]:
    """What ``spacy-hybridner optimize`` does: load ``model`` at float32, add the
    ``hybrid_inference`` settings (and their ONNX graphs), optionally change the windows
    the transformers encode, and save to ``output``. RETURNS (List[str]): the settings,
    one line per transformer component."""
    nlp = load_float32(model)
    settings = add_inference(nlp, precision=precision, runtime=runtime, by_length=by_length)
    nlp.to_disk(output)
    if window is not None or stride is not None:
        set_windows(Path(output), settings.transformer_names(), window, stride)
    how = f"{'ONNX Runtime' if runtime == 'onnxruntime' else 'PyTorch'} at {precision}"
    return [
        f"{name}: {how}" + (", windows grouped by length" if by_length else "") for name in settings.transformer_names()
    ]


def set_windows(path: Path, names: List[str], window: Optional[int], stride: Optional[int]) -> None:
    """Change the strided windows (spaCy tokens) that the transformers of a saved
    pipeline encode: ``[components.NAME.model.get_spans]`` of its config."""
    config = load_config(path / "config.cfg", interpolate=False)
    for name in names:
        spans = config["components"][name]["model"]["get_spans"]
        if spans.get("@span_getters") != "spacy-transformers.strided_spans.v1":
            raise ValueError(
                f"--window and --stride change spacy-transformers.strided_spans.v1; the component '{name}' "
                f"uses {spans.get('@span_getters')}. Leave them out, or edit its get_spans block."
            )
        new_window = window if window is not None else spans["window"]
        new_stride = stride if stride is not None else min(spans["stride"], new_window)
        if not 1 <= new_stride <= new_window:
            raise ValueError(f"stride ({new_stride}) must be between 1 and window ({new_window}).")
        spans["window"], spans["stride"] = new_window, new_stride
    config.to_disk(path / "config.cfg")
