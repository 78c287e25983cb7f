"""One ``annotate`` run: check the input and the output paths, lock OUTPUT, run an engine
under temporary names, and publish the outputs with their manifest (or nothing)."""

import datetime
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from ..about import __version__
from .batch import BatchAnnotator, inference_problem
from .errors import AnnotateInputError, AnnotateInterrupted, AnnotateRunError
from .inputs import check_inputs, resolve_inputs, source_names
from .job import AnnotateSummary, Job
from .local import run_local
from .outputs import OUTPUTS, output_format_of
from .publish import OutputLock, OutputPaths, default_rejects_path, manifest_path, os_error_text
from .ray_engine import RayAnnotator, run_ray
from .records import DEFAULT_MAX_CHARS, RecordSettings


class _signals_interrupt:
    """Within it, SIGTERM stops the run as Ctrl-C does (an :class:`AnnotateInterrupted`,
    so the temporaries are removed); the previous handler is put back afterwards. Signal
    handlers can only be set in the main thread: elsewhere this does nothing."""

    def __enter__(self):
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, _interrupt)
        return self

    def __exit__(self, *exc) -> bool:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
        return False


def _interrupt(signum, frame):
    raise AnnotateInterrupted(signum)


@dataclass(frozen=True)
class AnnotateOptions:
    """The arguments of one :func:`annotate` run (its defaults are ``annotate``'s).

    model (str): pipeline name or path (on a cluster: installed, or on a path every node sees).
    input_path (str): a file, a folder (searched recursively) or a glob.
    output (Path): local engine: a file (JSON Lines / Parquet) or a folder of DocBin shards;
        ray engine: a folder of shards.
    engine (str): "local" or "ray". workers (int): local: worker processes; ray: actors.
    batch_size (int): records per batch (the Ray actors' ``map_batches`` batch, the local
        engine's batch). pipe_batch_size: ``nlp.pipe``'s (None: the pipeline's).
    max_chars (Optional[int]): longer texts are rejected. rejects_path: default
        ``OUTPUT.rejects.jsonl`` next to OUTPUT (``out.jsonl.rejects.jsonl``; a folder
        ``out``: ``out.rejects.jsonl``). The manifest is ``OUTPUT.manifest.json``.
    overwrite (bool): replace an existing OUTPUT, rejects file or manifest (when the run
        completes), and remove the temporaries a killed run left.
    marginals (bool): DocBin output only: each Doc also holds the ``hybrid_ner`` components'
        tag marginals (``readers.MARGINALS_KEY``), soft targets for distillation.
    precision (Optional[str]), runtime (Optional[str]): if either is given, the pipeline's
        transformers run at this precision ("fp32", "int8") in this runtime ("torch",
        "onnxruntime"), in every worker or actor (the Annotator's); None: as saved.
    actor_class / worker_class: subclasses of RayAnnotator / BatchAnnotator (fault injection).
    The other arguments: see the CLI's help.
    """

    model: str
    input_path: str
    output: Path
    engine: str
    input_format: Optional[str]
    output_format: Optional[str]
    rejects_path: Optional[Path]
    id_field: str
    text_field: str
    max_chars: Optional[int]
    include_text: bool
    workers: int
    batch_size: int
    pipe_batch_size: Optional[int]
    address: Optional[str]
    num_cpus: Optional[int]
    max_restarts: int
    max_task_retries: int
    shard_size: int
    overwrite: bool
    progress: bool
    marginals: bool
    precision: Optional[str]
    runtime: Optional[str]
    actor_class: Optional[type]
    worker_class: Optional[type]
    echo: Callable[[str], None]


def annotate(
    model: str,
    input_path: str,
    output: Path,
    *,
    engine: str = "local",
    input_format: Optional[str] = None,
    output_format: Optional[str] = None,
    rejects_path: Optional[Path] = None,
    id_field: str = "id",
    text_field: str = "text",
    max_chars: Optional[int] = DEFAULT_MAX_CHARS,
    include_text: bool = False,
    workers: int = 1,
    batch_size: int = 256,
    pipe_batch_size: Optional[int] = None,
    address: Optional[str] = None,
    num_cpus: Optional[int] = None,
    max_restarts: int = 8,
    max_task_retries: int = 4,
    shard_size: int = 10_000,
    overwrite: bool = False,
    progress: bool = True,
    marginals: bool = False,
    precision: Optional[str] = None,
    runtime: Optional[str] = None,
    actor_class: Optional[type] = None,
    worker_class: Optional[type] = None,
    echo: Callable[[str], None] = print,
) -> AnnotateSummary:
    """Annotate INPUT with MODEL and write OUTPUT, its rejects file and its manifest. The
    arguments: see :class:`AnnotateOptions`. Returns the AnnotateSummary.

    Everything is written under temporary names and published only when the run
    completes (see :class:`~.publish.OutputPaths`): an interrupted (KeyboardInterrupt,
    SIGTERM: :class:`~.errors.AnnotateInterrupted`) or failed run publishes nothing and
    removes its temporaries. The run holds a lock on OUTPUT (:class:`~.publish.OutputLock`)
    throughout; its own outputs are never read as input. SIGINT is left as the process
    found it (ignored, if it started ignored: nohup, a script's background job).

    Raises AnnotateInputError for a missing, unreadable or malformed input, an existing
    output, an output that is (or holds) an input, an OUTPUT another run holds, or a folder
    that cannot be written; AnnotateRunError for a run that could not complete (an OSError
    while writing or publishing among them: a full or read-only disk).
    """
    # The first statement, so that locals() holds the arguments and nothing else.
    return _annotate(AnnotateOptions(**locals()))


@dataclass(frozen=True)
class _Plan:
    """What the checks of a run found: its output and paths, input format and files, output
    format and record settings."""

    output: Path
    paths: OutputPaths
    input_format: str
    files: List[Path]
    output_format: str
    settings: RecordSettings


def _plan(o: AnnotateOptions) -> _Plan:
    """Check the options, the inputs and the output paths before anything is written."""
    if o.engine not in ("local", "ray"):
        raise AnnotateInputError(f"unknown engine {o.engine!r}: use local or ray.")
    if o.workers < 1 or o.batch_size < 1:
        raise AnnotateInputError("--workers and --batch-size must be at least 1.")
    problem = inference_problem(o.precision, o.runtime)
    if problem is not None:
        raise AnnotateInputError(problem)
    output = Path(o.output)
    paths = OutputPaths(
        output, Path(o.rejects_path) if o.rejects_path else default_rejects_path(output), manifest_path(output)
    )
    paths.refuse_inputs(str(o.input_path), [])
    fmt, files = resolve_inputs(str(o.input_path), o.input_format, exclude=paths.owned())
    out_fmt = output_format_of(output, o.output_format) if o.output_format or output.suffix else "jsonl"
    if o.engine == "local" and not OUTPUTS[out_fmt].local_shards and not output.suffix:
        raise AnnotateInputError(
            f"the local engine writes {out_fmt} to one file: give OUTPUT a file name "
            f"such as {output}.{OUTPUTS[out_fmt].ext}."
        )
    if o.marginals and out_fmt != "docbin":
        raise AnnotateInputError(
            f"--marginals needs DocBin output (--output-format docbin), not {out_fmt}: only a Doc can hold them."
        )
    settings = RecordSettings(
        fmt, o.id_field, o.text_field, o.max_chars, o.include_text, source_names(files), len(files) > 1
    )
    check_inputs(files, settings)
    paths.refuse_inputs(str(o.input_path), files)
    return _Plan(output, paths, fmt, files, out_fmt, settings)


def _annotate(o: AnnotateOptions) -> AnnotateSummary:
    """:func:`annotate`: check, lock OUTPUT, run and publish, unlock, report."""
    plan = _plan(o)
    output, paths = plan.output, plan.paths
    paths.make_folders()
    lock = OutputLock(output)
    try:
        lock.acquire()
    except OSError as e:
        raise AnnotateInputError(f"cannot write {output}: {os_error_text(e)}.") from e
    try:
        paths.prepare(o.overwrite)
        o.echo(
            f"{len(plan.files)} {plan.input_format} input file(s) -> {output} "
            f"({plan.output_format}, {o.engine} engine, {o.workers} worker(s))"
        )
        job = Job(
            o.model,
            plan.files,
            plan.settings,
            paths.temporaries()[0],
            plan.output_format,
            paths.temporaries()[1],
            o.workers,
            o.batch_size,
            o.pipe_batch_size,
            o.progress,
            o.marginals,
            o.precision,
            o.runtime,
        )
        summary = _run_and_publish(
            job,
            paths,
            o.engine,
            o.overwrite,
            _described(o, plan),
            dict(shard_size=o.shard_size, worker_class=o.worker_class or BatchAnnotator),
            dict(
                address=o.address,
                num_cpus=o.num_cpus,
                max_restarts=o.max_restarts,
                max_task_retries=o.max_task_retries,
                actor_class=o.actor_class or RayAnnotator,
            ),
        )
    finally:
        lock.release()
    for line in summary.lines():
        o.echo(line)
    return summary


def _described(o: AnnotateOptions, plan: _Plan) -> Dict[str, Any]:
    """What the manifest says of the run besides its counts."""
    return {
        "output": str(plan.output),
        "output_format": plan.output_format,
        "rejects": str(plan.paths.rejects),
        "input": str(o.input_path),
        "input_format": plan.input_format,
        "input_files": len(plan.files),
        "id_field": o.id_field,
        "text_field": o.text_field,
        "model": str(o.model),
        "engine": o.engine,
        "workers": o.workers,
    }


def _run_and_publish(
    job: Job,
    paths: OutputPaths,
    engine: str,
    overwrite: bool,
    described: Dict[str, Any],
    local_options: Dict[str, Any],
    ray_options: Dict[str, Any],
) -> AnnotateSummary:
    """Run the engine on ``job`` (its outputs at the temporaries of ``paths``) and publish
    them with their manifest (``described``: what the manifest says of the run besides its
    counts); on any error remove the temporaries. An OSError (a full or read-only disk) is
    an AnnotateRunError naming the path and the system's reason."""
    started = datetime.datetime.now(datetime.timezone.utc)
    try:
        with _signals_interrupt():
            if engine == "local":
                summary = run_local(job, **local_options)
            else:
                summary = run_ray(job, **ray_options)
            summary.output, summary.rejects, summary.manifest = (
                str(paths.output),
                str(paths.rejects),
                str(paths.manifest),
            )
            paths.publish(
                {
                    "complete": True,
                    "output": described["output"],
                    "output_format": described["output_format"],
                    "files": paths.output_files(),
                    **{k: v for k, v in described.items() if k not in ("output", "output_format")},
                    "read": summary.read,
                    "annotated": summary.annotated,
                    "rejected": summary.rejected,
                    "duplicate_ids": summary.duplicate_ids,
                    "words": summary.words,
                    "seconds": round(summary.seconds, 3),
                    "started": started.isoformat(timespec="seconds"),
                    "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    "spacy_hybridner_version": __version__,
                },
                overwrite,
            )
    except OSError as e:
        paths.discard()
        where = {str(t): f for t, f in zip(paths.temporaries(), paths.finals())}.get(str(e.filename or job.output))
        written = f" (where {where} is written until the run completes)" if where else ""
        raise AnnotateRunError(
            f"{os_error_text(e, job.output)}{written}: the run stopped and nothing was published."
        ) from e
    except BaseException:
        paths.discard()
        raise
    return summary
