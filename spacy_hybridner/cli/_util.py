"""What the commands share: the typer app they register on, the GPU set-up and pipeline
loading, the recorded command line, option defaults read from the plain functions, and
the printing of entities."""

import inspect
import sys
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterable, Iterator, Type

import typer

from ..gpu import setup_gpu
from ..tools.benchmark.runner import benchmark_command

__all__ = [
    "app",
    "bad_parameter",
    "defaults_of",
    "echo_entities",
    "gpu_option",
    "load_pipeline",
    "named_models_argument",
    "precision_option",
    "runtime_option",
    "recorded_command",
    "setup_gpu",
]

app = typer.Typer(
    name="spacy-hybridner",
    help="Corpora, showcases and reports for spacy-hybridner pipelines.",
    no_args_is_help=True,
    add_completion=False,
)


def defaults_of(func: Callable[..., Any]) -> Dict[str, Any]:
    """The defaults of the parameters of a plain function or a dataclass (its ``__init__``),
    by name, so that a command's options have the defaults of what it calls, written once:
    ``DEFAULTS = defaults_of(annotate)`` beside the command, ``typer.Option(DEFAULTS["batch_size"])``.
    """
    params = inspect.signature(func).parameters.values()
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}


def gpu_option() -> Any:
    """The ``--gpu-id`` option of the commands that load a pipeline (-1: the CPU)."""
    return typer.Option(-1, help="GPU id, -1 for CPU")


def named_models_argument(example: str) -> Any:
    """The ``NAME=PATH ...`` argument of the commands that compare trained pipelines."""
    return typer.Argument(..., help=f"Trained pipelines as NAME=PATH (e.g. {example})")


def precision_option(default: Any) -> Any:
    """``--precision`` of the commands that load a pipeline to run it (serve, annotate)."""
    return typer.Option(default, help="fp32 or int8: the transformer's weights (default: as the pipeline was saved)")


def runtime_option(default: Any) -> Any:
    """``--runtime`` of the commands that load a pipeline to run it (serve, annotate)."""
    return typer.Option(
        default,
        help="torch, or onnxruntime: the transformer exported when the pipeline loads (the onnx extra); "
        "default: as saved",
    )


def load_pipeline(model: str, gpu_id: int = -1):
    """Set up the GPU (:func:`~spacy_hybridner.gpu.setup_gpu`), then load the pipeline
    ``model`` (a name or a path). RETURNS (Language): The pipeline."""
    import spacy

    setup_gpu(gpu_id)
    return spacy.load(model)


def recorded_command(name: str) -> str:
    """The command line of this run of command ``name``, for the document it writes
    (:func:`~spacy_hybridner.tools.benchmark.runner.benchmark_command` of the arguments
    after the command's name)."""
    return benchmark_command(sys.argv[2:], name)


@contextmanager
def bad_parameter(*errors: Type[Exception]) -> Iterator[None]:
    """Turn the given errors of the block into ``typer.BadParameter`` (exit status 2 with
    the usage), their message kept."""
    try:
        yield
    except errors as err:
        raise typer.BadParameter(str(err)) from None


def echo_entities(docs: Iterable, indent: str = "", with_text: bool = False) -> None:
    """Print each doc's entities, one line each (``display.entity_lines``), after the
    doc's text when ``with_text``."""
    from ..tools.display import entity_lines

    for doc in docs:
        if with_text:
            typer.echo(doc.text)
        for line in entity_lines(doc, indent):
            typer.echo(line)
