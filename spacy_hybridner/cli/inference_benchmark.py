"""``inference-benchmark``: F, agreement with a twin, calibration, latency and memory of
trained pipelines side by side
(:func:`~spacy_hybridner.tools.inference_benchmark.run_inference_benchmark`)."""

from pathlib import Path
from typing import List, Optional

import typer

from ..tools.benchmark import parse_named_models, update_benchmark_doc, write_results
from ..tools.inference_benchmark import (
    check_plot,
    inference_markdown,
    parse_twins,
    plot_frontier,
    run_inference_benchmark,
)
from ._util import app, bad_parameter, defaults_of, gpu_option, named_models_argument, recorded_command

DEFAULTS = defaults_of(run_inference_benchmark)


@app.command("inference-benchmark")
def inference_benchmark_cli(
    models: List[str] = named_models_argument("hybrid_trf=training/finetune/conll03/hybrid_trf/seed0/model-best"),
    dev: Path = typer.Option(..., "--dev", help="The dev split (.spacy)"),
    test: Path = typer.Option(..., "--test", help="The test split (.spacy)"),
    twin: Optional[List[str]] = typer.Option(
        None, "--twin", help="NAME=TWIN: compare NAME with TWIN (e.g. hybrid_trf_int8=hybrid_trf); repeatable"
    ),
    speed_results: Optional[Path] = typer.Option(
        None, help="The JSON of `speed --results-path`: words/s of the pipelines of the same names"
    ),
    baseline: Optional[str] = typer.Option(None, help="The NAME that the words/s ratio refers to (default: the first)"),
    latency_calls: int = typer.Option(DEFAULTS["latency_calls"], min=1, help="Timed calls of the latency"),
    warmup: int = typer.Option(DEFAULTS["warmup"], min=0, help="Warm-up calls before the latency's"),
    title: str = typer.Option("inference", help="Section title in the document"),
    doc_path: Optional[Path] = typer.Option(None, help="Markdown document to write the section into"),
    results_path: Optional[Path] = typer.Option(None, help="Also write the rows as JSON to this file"),
    plot: Optional[Path] = typer.Option(None, help="PNG of test F against words/s (needs --speed-results)"),
    gpu_id: int = gpu_option(),
) -> None:
    """Dev and test F, agreement with a twin pipeline, test ECE, latency of one short text,
    peak memory and size on disk of trained pipelines, each in its own process; words/s
    from a `speed` run's JSON."""
    with bad_parameter(FileNotFoundError, ValueError):
        named = parse_named_models(models)
        twins = parse_twins(twin or [], [n for n, _ in named])
        if plot is not None:
            check_plot(named, speed_results)
        try:
            rows = run_inference_benchmark(
                named,
                dev,
                test,
                echo=typer.echo,
                twins=twins,
                speed_results=speed_results,
                baseline=baseline,
                latency_calls=latency_calls,
                warmup=warmup,
                gpu_id=gpu_id,
            )
        except RuntimeError as err:
            typer.echo(f"Error: {err}", err=True)
            raise typer.Exit(1) from None
    command = recorded_command("inference-benchmark")
    section = inference_markdown(rows, title=title, command=command, gpu_id=gpu_id)
    typer.echo(section)
    if doc_path is not None:
        update_benchmark_doc(doc_path, title, section)
        typer.echo(f"Written to {doc_path}")
    if results_path is not None:
        write_results(results_path, title, command, rows)
        typer.echo(f"Rows written to {results_path}")
    if plot is not None:
        plot_frontier(rows, plot)
        typer.echo(f"Plot written to {plot}")
