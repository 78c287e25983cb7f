"""``annotate``: a corpus annotated by the local engine or Ray Data
(:func:`~spacy_hybridner.annotate.run.annotate`), its exit status by outcome."""

import signal
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from ..annotate import AnnotateInputError, AnnotateRunError, annotate
from ._util import app, defaults_of, precision_option, runtime_option

DEFAULTS = defaults_of(annotate)


class AnnotateEngine(str, Enum):
    local = "local"
    ray = "ray"


ENGINE = AnnotateEngine(DEFAULTS["engine"])


# Over 60 lines: typer declares a command's 3 arguments and 20 options as its parameters.
@app.command("annotate")
def annotate_cli(
    model: str = typer.Argument(
        ..., help="Pipeline name or path (on a cluster: installed on, or visible to, every node)"
    ),
    input_path: str = typer.Argument(..., help="Input: a file, a folder (searched recursively) or a quoted glob"),
    output: Path = typer.Argument(
        ..., help="local: a .jsonl / .parquet file, or a folder of .spacy shards; ray: a folder of shards"
    ),
    engine: AnnotateEngine = typer.Option(ENGINE, help="local: nlp.pipe in this process; ray: Ray Data"),
    address: Optional[str] = typer.Option(
        DEFAULTS["address"], help="ray: join this cluster ('auto', 'ray://HEAD:10001'); default: start Ray here"
    ),
    workers: int = typer.Option(
        DEFAULTS["workers"], min=1, help="local: nlp.pipe n_process; ray: actors, one CPU and one torch thread each"
    ),
    batch_size: int = typer.Option(
        DEFAULTS["batch_size"], min=1, help="Records per batch (ray: map_batches batch_size)"
    ),
    pipe_batch_size: Optional[int] = typer.Option(
        DEFAULTS["pipe_batch_size"], min=1, help="nlp.pipe batch_size (default: the pipeline's)"
    ),
    input_format: Optional[str] = typer.Option(
        DEFAULTS["input_format"], help="jsonl, txt or parquet (default: from the file extensions)"
    ),
    output_format: Optional[str] = typer.Option(
        DEFAULTS["output_format"], help="jsonl, parquet or docbin (default: from OUTPUT's extension; ray: jsonl)"
    ),
    id_field: str = typer.Option(DEFAULTS["id_field"], help="JSON Lines field / Parquet column of the ids"),
    text_field: str = typer.Option(DEFAULTS["text_field"], help="JSON Lines field / Parquet column of the texts"),
    max_chars: int = typer.Option(
        DEFAULTS["max_chars"], min=0, help="Reject longer texts (spaCy's default max_length; 0: no limit)"
    ),
    include_text: bool = typer.Option(
        DEFAULTS["include_text"], "--include-text", help="Copy each text into its output record"
    ),
    rejects: Optional[Path] = typer.Option(
        DEFAULTS["rejects_path"],
        help="Rejects file (JSON Lines; default: OUTPUT.rejects.jsonl next to OUTPUT, e.g. out.jsonl.rejects.jsonl)",
    ),
    num_cpus: Optional[int] = typer.Option(
        DEFAULTS["num_cpus"], min=1, help="ray, without --address: CPUs of the local Ray instance (default: --workers)"
    ),
    max_restarts: int = typer.Option(
        DEFAULTS["max_restarts"], min=-1, help="ray: restarts of each actor whose process died (-1: no limit)"
    ),
    max_task_retries: int = typer.Option(
        DEFAULTS["max_task_retries"], min=-1, help="ray: retries of a batch whose actor died (-1: no limit)"
    ),
    shard_size: int = typer.Option(
        DEFAULTS["shard_size"], min=1, help="local, docbin output: documents per .spacy shard"
    ),
    overwrite: bool = typer.Option(
        DEFAULTS["overwrite"],
        "--overwrite",
        help="Replace an existing OUTPUT, rejects file and manifest when the run completes, and remove the "
        "temporaries of a killed run",
    ),
    marginals: bool = typer.Option(
        DEFAULTS["marginals"],
        "--marginals",
        help="docbin: also store each hybrid_ner component's tag marginals in the Docs (soft targets for "
        "distillation, GoldSilverCorpus soft_weight)",
    ),
    precision: Optional[str] = precision_option(DEFAULTS["precision"]),
    runtime: Optional[str] = runtime_option(DEFAULTS["runtime"]),
) -> None:
    """Annotate a corpus: JSON Lines, plain text (one document per line) or Parquet in;
    JSON Lines, Parquet or DocBin shards out, one record per document (id, entities with
    confidences). Records without a usable text or id go to the rejects file and the run goes
    on. OUTPUT, its rejects file and OUTPUT.manifest.json appear only when the run completes.
    Exit status: 0 all annotated, 3 some rejected, 2 unreadable or missing input or an existing
    OUTPUT, 1 the run failed, 130 / 143 interrupted (SIGINT / SIGTERM): nothing was written."""
    try:
        summary = annotate(
            model,
            input_path,
            output,
            engine=engine.value,
            address=address,
            workers=workers,
            batch_size=batch_size,
            pipe_batch_size=pipe_batch_size,
            input_format=input_format,
            output_format=output_format,
            id_field=id_field,
            text_field=text_field,
            max_chars=max_chars or None,
            include_text=include_text,
            rejects_path=rejects,
            num_cpus=num_cpus,
            max_restarts=max_restarts,
            max_task_retries=max_task_retries,
            shard_size=shard_size,
            overwrite=overwrite,
            marginals=marginals,
            precision=precision,
            runtime=runtime,
            echo=typer.echo,
        )
    except AnnotateInputError as e:
        raise typer.BadParameter(str(e)) from e
    except AnnotateRunError as e:
        typer.echo(f"annotate failed: {e}", err=True)
        raise typer.Exit(1) from e
    except KeyboardInterrupt as e:
        signum = getattr(e, "signum", signal.SIGINT)
        typer.echo(
            f"annotate interrupted ({signal.Signals(signum).name}): nothing was written to {output}; "
            f"its temporaries were removed. Run the command again to start over.",
            err=True,
        )
        raise typer.Exit(128 + signum) from e
    raise typer.Exit(summary.exit_code)
