"""``serve``: a pipeline over HTTP (:func:`~spacy_hybridner.serve.runner.serve`), its
options' defaults those of :class:`~spacy_hybridner.serve.settings.ServeSettings`."""

from typing import Optional

import typer

from ..serve.settings import API_KEY_ENV, ServeSettings
from ._util import app, defaults_of, gpu_option, precision_option, runtime_option

SETTINGS = defaults_of(ServeSettings)


# Over 60 lines: typer declares a command's argument and 21 options as its parameters.
@app.command("serve")
def serve_cli(
    model: str = typer.Argument(..., help="Pipeline package name or path, loaded once at start-up"),
    host: str = typer.Option(SETTINGS["host"], help="Interface to bind (127.0.0.1: this machine only)"),
    port: int = typer.Option(SETTINGS["port"], help="TCP port"),
    api_key: Optional[str] = typer.Option(
        SETTINGS["api_key"],
        envvar=API_KEY_ENV,
        show_default=False,
        help="Require this key (X-API-Key or Authorization: Bearer) for everything but /health and the page",
    ),
    max_body_bytes: int = typer.Option(
        SETTINGS["max_body_bytes"], min=1, help="Largest request body in bytes (413 beyond)"
    ),
    max_text_chars: int = typer.Option(SETTINGS["max_text_chars"], min=1, help="Most characters per text (422 beyond)"),
    max_texts: int = typer.Option(SETTINGS["max_texts"], min=1, help="Most texts per request (422 beyond)"),
    max_header_bytes: int = typer.Option(
        SETTINGS["max_header_bytes"],
        min=1024,
        help="Most bytes of a request's line and headers (431 and the connection closed beyond)",
    ),
    receive_timeout: float = typer.Option(
        SETTINGS["receive_timeout_s"],
        min=0.001,
        help="Seconds to receive a whole request, headers and body, from its first byte (408 beyond)",
    ),
    shutdown_timeout: float = typer.Option(
        SETTINGS["shutdown_timeout_s"],
        min=0.0,
        help="Seconds the requests in flight (and their answers) have after SIGTERM or SIGINT before the server "
        "exits anyway; a second signal exits at once",
    ),
    queue_size: int = typer.Option(
        SETTINGS["queue_size"], min=1, help="Requests that may wait for the model (503 + Retry-After beyond)"
    ),
    max_batch_texts: int = typer.Option(
        SETTINGS["max_batch_texts"], min=1, help="Most texts gathered into one nlp.pipe call"
    ),
    batch_wait_ms: float = typer.Option(
        SETTINGS["batch_wait_ms"], min=0.0, help="How long to wait for more requests to batch, in ms"
    ),
    # The defaults of serve()'s own arguments: serve.runner imports uvicorn, which the help
    # must not need (the [serve] extra), so they are written here.
    batch_size: Optional[int] = typer.Option(None, min=1, help="nlp.pipe batch size (default: the pipeline's)"),
    torch_threads: Optional[int] = typer.Option(
        None,
        min=1,
        show_default=False,
        help="torch intra-op threads of each model process (default: one less than the cores, shared among them)",
    ),
    gpu_id: int = gpu_option(),
    model_process: bool = typer.Option(
        True,
        "--model-process/--model-thread",
        help="Run the pipeline in a child process (its own GIL) or in the server's worker thread",
    ),
    model_workers: Optional[int] = typer.Option(
        None,
        min=1,
        show_default=False,
        help="Model processes (copies of the pipeline) that take batches in turn (default: 2; 1 with --model-thread)",
    ),
    precision: Optional[str] = precision_option(SETTINGS["precision"]),
    runtime: Optional[str] = runtime_option(SETTINGS["runtime"]),
    access_log: bool = typer.Option(SETTINGS["access_log"], help="Log every request (uvicorn's access log)"),
    log_level: str = typer.Option(SETTINGS["log_level"], help="Log level: debug, info, warning, error"),
) -> None:
    """Serve a pipeline over HTTP: JSON API under /v1 (ents, render, model), /health,
    /ready and a page at / with displaCy and the entities' confidences."""
    try:
        from ..serve import serve
    except ImportError as error:
        raise SystemExit(f"serve needs FastAPI and uvicorn ({error}): pip install 'spacy-hybridner[serve]'") from error
    try:
        settings = ServeSettings(
            host=host,
            port=port,
            api_key=api_key,
            max_body_bytes=max_body_bytes,
            max_text_chars=max_text_chars,
            max_texts=max_texts,
            queue_size=queue_size,
            max_batch_texts=max_batch_texts,
            batch_wait_ms=batch_wait_ms,
            max_header_bytes=max_header_bytes,
            receive_timeout_s=receive_timeout,
            shutdown_timeout_s=shutdown_timeout,
            access_log=access_log,
            log_level=log_level,
            precision=precision,
            runtime=runtime,
        )
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    serve(
        model,
        settings,
        batch_size=batch_size,
        torch_threads=torch_threads,
        gpu_id=gpu_id,
        model_process=model_process,
        model_workers=model_workers,
    )
