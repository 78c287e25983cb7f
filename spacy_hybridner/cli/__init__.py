"""Command line: ``python -m spacy_hybridner COMMAND`` (also the ``spacy-hybridner`` script).

One module per command (``benchmark`` with ``benchmark-section``), each a thin typer
wrapper, ``<name>_cli``, over a plain function that lives with the code it drives
(``tools/``, ``annotate/``, ``serve/``, ``calibration``), which tests and the project
workflow call too. :mod:`._util` holds what they share: the ``app``, the GPU set-up and
pipeline loading, the recorded command line and the defaults read from the plain functions.
"""

# isort: off
# The order of these imports is the order of the commands in --help (typer lists them as
# they were registered): the corpora, then the reports, benchmarks and applications.
from ._util import app
from .convert import convert_cli
from .texts import texts_cli
from .showcase import showcase_cli
from .calibrate import calibrate_cli
from .optimize import optimize_cli
from .report import report_cli
from .benchmark import benchmark_cli, benchmark_section_cli
from .speed import speed_cli
from .inference_benchmark import inference_benchmark_cli
from .visualize import visualize_cli
from .serve import serve_cli
from .serve_benchmark import serve_benchmark_cli
from .annotate import annotate_cli
from .annotate_benchmark import annotate_benchmark_cli
from .crosscheck import crosscheck_cli
# isort: on

__all__ = [
    "app",
    "main",
    "annotate_benchmark_cli",
    "annotate_cli",
    "benchmark_cli",
    "benchmark_section_cli",
    "calibrate_cli",
    "convert_cli",
    "crosscheck_cli",
    "inference_benchmark_cli",
    "optimize_cli",
    "report_cli",
    "serve_benchmark_cli",
    "serve_cli",
    "showcase_cli",
    "speed_cli",
    "texts_cli",
    "visualize_cli",
]


def main() -> None:
    """Run the command line (the ``spacy-hybridner`` console script, ``python -m spacy_hybridner``)."""
    app()
