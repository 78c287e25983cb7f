"""``serve-benchmark``: the server's throughput next to ``nlp.pipe``, and its latency
(:func:`~spacy_hybridner.tools.serve_benchmark.serve_benchmark`)."""

from pathlib import Path
from typing import List, Optional

import typer

from ..tools.benchmark import update_benchmark_doc
from ..tools.serve_benchmark import serve_benchmark, serve_benchmark_markdown, serve_benchmark_title
from ._util import app, defaults_of, recorded_command

DEFAULTS = defaults_of(serve_benchmark)


@app.command("serve-benchmark")
def serve_benchmark_cli(
    model: str = typer.Argument(..., help="Pipeline package name or path"),
    data_path: Path = typer.Argument(..., help=".spacy file whose texts are sent (e.g. the test split)"),
    clients: int = typer.Option(DEFAULTS["clients"], min=1, help="Concurrent client connections"),
    repeats: int = typer.Option(
        DEFAULTS["repeats"], min=1, help="Alternating rounds of nlp.pipe and the server (medians reported)"
    ),
    limit: int = typer.Option(DEFAULTS["limit"], min=0, help="Use only the first N docs (0: all)"),
    latency_requests: int = typer.Option(
        DEFAULTS["latency_requests"], min=1, help="Sequential requests of one short text for p50/p99"
    ),
    torch_threads: Optional[int] = typer.Option(
        DEFAULTS["torch_threads"],
        min=1,
        show_default=False,
        help="torch threads of each model process (default: serve's); nlp.pipe is timed with "
        "these and with torch's default, and compared with the faster",
    ),
    model_workers: Optional[List[int]] = typer.Option(
        None,
        min=1,
        show_default=False,
        help="Model processes of the server; repeat to time several servers in the same rounds, the first "
        "giving the latency (default: serve's)",
    ),
    title: Optional[str] = typer.Option(
        None, help="Section title in the document (default: 'serve (<folder> <file>)')"
    ),
    doc_path: Optional[Path] = typer.Option(
        None,
        help="Markdown document to write the section into (its section of that title is replaced); default: print only",
    ),
    model_thread: bool = typer.Option(
        False, "--model-thread", help="Serve with the model in the server's worker thread (serve --model-thread)"
    ),
) -> None:
    """Throughput of `serve` under concurrent clients as a ratio to plain nlp.pipe on the
    same texts in the same run, and the latency of one short text; written to the
    benchmark document."""
    if not data_path.exists():
        raise typer.BadParameter(f"{data_path} does not exist")
    result = serve_benchmark(
        model,
        data_path,
        clients=clients,
        repeats=repeats,
        limit=limit,
        latency_requests=latency_requests,
        torch_threads=torch_threads,
        model_workers=model_workers or [],
        server_args=["--model-thread"] if model_thread else [],
        echo=typer.echo,
    )
    section_title = title or serve_benchmark_title(data_path, model_thread)
    section = serve_benchmark_markdown(result, title=section_title, command=recorded_command("serve-benchmark"))
    typer.echo(section)
    if doc_path is not None:
        update_benchmark_doc(doc_path, section_title, section)
        typer.echo(f"Written to {doc_path}")
