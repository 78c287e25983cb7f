"""The Ray engine: Ray Data, ``read_datasource`` -> ``map_batches`` with an actor pool
(:class:`RayAnnotator`: the pipeline loaded once per actor, torch on one thread) -> shards
written by the workers, locally or on a Ray cluster.

Importing this module does not import Ray; :func:`run_ray` does.
"""

import hashlib
import os
import signal
import threading
import time
import warnings
from typing import Any, Dict, List, Optional, Tuple

from .batch import BatchAnnotator
from .errors import AnnotateInterrupted
from .job import AnnotateSummary, Job
from .lifetime import die_with_parent
from .outputs import OUTPUTS
from .records import RecordSettings, count_duplicates

# Seconds the Ray engine waits for all its actors to start (load the pipeline) before the run.
ACTOR_START_TIMEOUT_S = 600


class RayAnnotator(BatchAnnotator):
    """The Ray Data actor: loads the pipeline once (torch on one thread), then turns
    each batch of input columns into output rows with :class:`~.batch.BatchAnnotator`, and
    reports its counts and rejects to the run's tally actor.

    model, batch_size, marginals, precision, runtime: the Annotator's. settings
    (RecordSettings), output_format (str), tally: the handle of the run's :class:`_Tally` actor.

    Fault injection in tests: subclass it and SIGKILL the process in ``__call__``
    (``os.kill(os.getpid(), signal.SIGKILL)``), then pass the subclass as
    ``actor_class`` to :func:`~.run.annotate`.
    """

    def __init__(
        self,
        model: str,
        batch_size: Optional[int],
        settings: RecordSettings,
        output_format: str,
        tally,
        marginals: bool = False,
        precision: Optional[str] = None,
        runtime: Optional[str] = None,
    ) -> None:
        super().__init__(
            model,
            batch_size,
            settings,
            output_format,
            torch_threads=1,
            marginals=marginals,
            precision=precision,
            runtime=runtime,
        )
        # The actor's parent is Ray's raylet: if it is gone (its driver killed outright),
        # the actor, which holds a pipeline, ends too (the watchdog only: Ray owns the process).
        die_with_parent(os.getppid(), kernel=False)
        self.annotator.load()
        self.tally = tally

    def __call__(self, table):
        import ray

        batch = table.to_pydict()
        out = BatchAnnotator.__call__(self, batch)
        # One key per batch: a batch retried after its actor died is counted once.
        key = hashlib.sha1(repr(list(zip(batch["path"], batch["line"]))).encode("utf8")).hexdigest()
        ray.get(self.tally.add.remote(key, out.n_records, out.n_words, out.rejects, out.digests))
        return OUTPUTS[self.output_format].actor_output(out.encoded, out.n_records)


class _Tally:
    """Counts, id digests and rejects of a Ray run, per batch key (a retried batch
    replaces its own entry), held by one small Ray actor (no CPU) for the driver to read
    at the end. Rejects are expected to be few: each is a short record (no text) kept in
    memory; the digests take 8 bytes per record."""

    def __init__(self) -> None:
        self.batches: Dict[str, Tuple[int, int, List[Dict[str, Any]], Any]] = {}

    def add(self, key: str, annotated: int, words: int, rejects: List[Dict[str, Any]], digests=None) -> None:
        self.batches[key] = (annotated, words, rejects, digests)

    def totals(self) -> Tuple[int, int, List[Dict[str, Any]], int]:
        annotated = sum(b[0] for b in self.batches.values())
        words = sum(b[1] for b in self.batches.values())
        duplicates = count_duplicates([b[3] for b in self.batches.values() if b[3] is not None])
        return annotated, words, [r for b in self.batches.values() for r in b[2]], duplicates


class _own_signal_handlers:
    """Around ``ray.init``: put back the SIGTERM and SIGINT handlers it replaces. Ray's
    driver installs a SIGTERM handler of its own (``sys.exit(15)``, and its core's stack
    dump, which ended the process with SIGABRT), so a SIGTERM ended the run with exit
    status 15 or -6 and a stack dump instead of :class:`~.errors.AnnotateInterrupted`
    (exit status 143, a one-line message, nothing published). A SIGTERM while Ray starts
    (Ray's handler, ``SystemExit(15)``) is turned into AnnotateInterrupted too. Signal
    handlers belong to the main thread: elsewhere this does nothing."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __enter__(self):
        self.main = threading.current_thread() is threading.main_thread()
        self.previous = {s: signal.getsignal(s) for s in self.SIGNALS} if self.main else {}
        return self

    def __exit__(self, kind, value, traceback) -> bool:
        for signum, handler in self.previous.items():
            if handler is not None:  # None: a handler not set from Python, which cannot be put back
                signal.signal(signum, handler)
        if isinstance(value, SystemExit) and value.code == signal.SIGTERM and self.main:
            raise AnnotateInterrupted(signal.SIGTERM) from None
        return False


def run_ray(
    job: Job,
    *,
    address: Optional[str],
    num_cpus: Optional[int],
    max_restarts: int,
    max_task_retries: int,
    actor_class: type,
) -> AnnotateSummary:
    """The Ray engine: Ray Data read -> ``map_batches(actor_class)`` on a fixed pool of
    ``job.workers`` actors (one CPU each) -> JSON Lines / Parquet / DocBin shards into the
    folder OUTPUT, one file per write task, written by the workers in parallel.

    Without ``address`` (and no Ray session yet) Ray starts here with ``num_cpus``
    (default: ``job.workers``) and stops at the end; ``address`` ("auto", "ray://...")
    joins a cluster. A worker process that dies is restarted (``max_restarts`` per
    actor) and its batches retried (``max_task_retries`` per batch), so OUTPUT holds
    each valid input record exactly once.
    """
    import ray

    start = time.perf_counter()
    started_here = not ray.is_initialized()
    if started_here:
        _start_ray(address, num_cpus or job.workers)
    try:
        ds, tally = _annotated_dataset(job, actor_class, max_restarts, max_task_retries)
        # Reading lines and writing shards is light next to the model: those tasks take no
        # CPU slot, so `workers` actors may hold every CPU without starving them (with a
        # slot each, a pool as large as the cluster would wait forever for its input).
        OUTPUTS[job.output_format].write_dataset(ds, str(job.output.resolve()), {"num_cpus": 0})
        job.output.mkdir(parents=True, exist_ok=True)  # a run whose records were all rejected writes no shard
        n_annotated, n_words, rejects, duplicates = ray.get(tally.totals.remote())
    finally:
        if started_here:
            ray.shutdown()
    return job.finish("ray", start, n_annotated, n_words, rejects, duplicates)


def _start_ray(address: Optional[str], num_cpus: int) -> None:
    """Join the cluster at ``address``, or start Ray here with ``num_cpus`` (no dashboard),
    keeping this process's signal handlers (:class:`_own_signal_handlers`)."""
    import ray

    with _own_signal_handlers():
        if address:
            ray.init(address=address)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False)


def _actor_kwargs(job: Job, settings: RecordSettings, tally: Any) -> Dict[str, Any]:
    """The arguments each actor (:class:`RayAnnotator` or a subclass) is built with."""
    return {
        "model": job.model,
        "batch_size": job.pipe_batch_size,
        "settings": settings,
        "output_format": job.output_format,
        "tally": tally,
        "marginals": job.marginals,
        "precision": job.precision,
        "runtime": job.runtime,
    }


def _annotated_dataset(job: Job, actor_class: type, max_restarts: int, max_task_retries: int) -> Tuple[Any, Any]:
    """The Ray dataset of the run, the inputs read (:class:`~.ray_io.InputDatasource`) and
    annotated by a pool of ``job.workers`` actors of ``actor_class``, and the handle of the
    :class:`_Tally` actor they report to."""
    import ray
    from ray.data import ActorPoolStrategy, DataContext

    from .ray_io import InputDatasource

    context = DataContext.get_current()
    context.enable_progress_bars = job.progress
    # Start work only once every actor has loaded the pipeline: otherwise the first
    # ready actor takes the queued batches while the others are still loading, and a
    # short corpus runs on one actor. A pool the cluster cannot host fails after this.
    context.wait_for_min_actors_s = ACTOR_START_TIMEOUT_S
    tally = ray.remote(num_cpus=0)(_Tally).remote()
    paths = [str(f.resolve()) for f in job.files]
    names = {str(f.resolve()): job.settings.source_name(str(f)) for f in job.files}
    settings = RecordSettings(**{**job.settings.__dict__, "source_names": names})
    ds = ray.data.read_datasource(InputDatasource(paths, settings, job.batch_size), num_cpus=0)
    with warnings.catch_warnings():
        # Ray 2.60 takes max_restarts / max_task_retries only as extra keyword arguments
        # of map_batches, which it flags as deprecated; there is no named parameter yet.
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        ds = ds.map_batches(
            actor_class,
            fn_constructor_kwargs=_actor_kwargs(job, settings, tally),
            batch_size=job.batch_size,
            batch_format="pyarrow",
            compute=ActorPoolStrategy(size=job.workers),
            num_cpus=1,
            # Set explicitly: Ray Data's defaults are -1 (forever), so a document that
            # kills its worker every time would loop; bounded, the run fails instead.
            max_restarts=max_restarts,
            max_task_retries=max_task_retries,
        )
    return ds, tally
