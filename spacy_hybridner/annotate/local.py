"""The local engine: ``nlp.pipe`` in this process, or in a pool of worker processes
(spawned, one torch and BLAS thread each), batches annotated and written in input order."""

import concurrent.futures
import contextlib
import multiprocessing
import os
import signal
import time
from collections import deque
from typing import Any, Dict, Iterator, List, Optional

from .batch import BatchAnnotator, BatchOutput
from .errors import AnnotateInputError, AnnotateRunError
from .inputs import describe_batch, iter_input_batches
from .job import AnnotateSummary, Job
from .lifetime import die_with_parent
from .outputs import OUTPUTS
from .records import RecordSettings, count_duplicates

# The worker processes of the local engine: each holds one BatchAnnotator.
_WORKER: Optional[BatchAnnotator] = None


def _init_worker(worker_class: type, kwargs: Dict[str, Any], parent_pid: int) -> None:
    global _WORKER
    # A main process killed outright (SIGKILL) cannot end its workers: they end themselves.
    die_with_parent(parent_pid)
    # Ctrl-C reaches the whole process group: the parent stops the run and ends its workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _WORKER = worker_class(**kwargs)


def _run_worker(batch: Dict[str, list]) -> BatchOutput:
    return _WORKER(batch)


def _end_pool(pool: concurrent.futures.ProcessPoolExecutor) -> None:
    """Stop a process pool now, without waiting for the batches it is running."""
    if hasattr(pool, "terminate_workers"):  # Python 3.14
        pool.terminate_workers()
        return
    # Python < 3.14 has no public way to end the workers of a pool: its process table.
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for process in processes:
        process.terminate()
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.join(10)


def _pool_result(where: str, future: concurrent.futures.Future) -> BatchOutput:
    """The output of the batch ``where`` from its future, or AnnotateRunError naming it."""
    try:
        return future.result()
    except concurrent.futures.process.BrokenProcessPool as e:
        raise AnnotateRunError(
            f"a worker process died while annotating {where} (killed, out of memory, or a crash in "
            f"native code): the run stopped and nothing was published. Rerun with --workers 1 to see "
            f"the error, or with --engine ray, which restarts dead workers and retries their batches."
        ) from e
    except Exception as e:
        raise AnnotateRunError(f"a worker process failed while annotating {where}: {type(e).__name__}: {e}") from e


def _pool_results(
    batches: Iterator[Dict[str, list]],
    settings: RecordSettings,
    workers: int,
    worker_class: type,
    kwargs: Dict[str, Any],
) -> Iterator[BatchOutput]:
    """The outputs of the batches, in order, from ``workers`` processes (spawned, each
    with one torch and BLAS thread and its own pipeline), at most two batches per worker in
    flight. A worker that dies or fails ends the run with :class:`AnnotateRunError`
    naming the batch, rather than a hang (the pool notices a dead worker); a worker whose
    main process was killed ends itself (:func:`~.lifetime.die_with_parent`)."""
    kwargs = {**kwargs, "torch_threads": 1}
    pool = concurrent.futures.ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(worker_class, kwargs, os.getpid()),
    )
    pending: deque = deque()
    completed = False
    try:
        for batch in batches:
            pending.append((describe_batch(batch, settings), pool.submit(_run_worker, batch)))
            if len(pending) >= 2 * workers:
                yield _pool_result(*pending.popleft())
        while pending:
            yield _pool_result(*pending.popleft())
        completed = True
    finally:
        if completed:
            pool.shutdown(wait=True)
        else:
            _end_pool(pool)


def run_local(job: Job, *, shard_size: int, worker_class: type) -> AnnotateSummary:
    """The local engine: batches of ``job.batch_size`` input records, annotated in this
    process (``job.workers`` 1) or by a pool of ``job.workers`` processes (instances of
    ``worker_class``), in order, with a progress bar; writes OUTPUT (a file; a folder of
    shards of ``shard_size`` Docs for DocBin) and the rejects."""
    from tqdm import tqdm

    start = time.perf_counter()
    settings = job.settings
    kwargs = {
        "model": job.model,
        "batch_size": job.pipe_batch_size,
        "settings": settings,
        "output_format": job.output_format,
        "marginals": job.marginals,
        "precision": job.precision,
        "runtime": job.runtime,
    }
    batches = iter_input_batches(job.files, settings, job.batch_size)
    if job.workers == 1:
        worker = worker_class(**kwargs)
        try:
            worker.annotator.load()
        except Exception as e:
            raise AnnotateInputError(f"cannot load the pipeline {job.model!r}: {type(e).__name__}: {e}") from e
        outputs = (worker(batch) for batch in batches)
    else:
        outputs = _pool_results(batches, settings, job.workers, worker_class, kwargs)
    rejects: List[Dict[str, Any]] = []
    digests: List[Any] = []
    n_annotated = n_words = 0
    try:
        writer = OUTPUTS[job.output_format].writer(job.output, settings.include_text, shard_size)
    except BaseException:
        outputs.close()
        raise
    completed = False
    try:
        with tqdm(desc="annotate", unit=" docs", disable=not job.progress, mininterval=1.0) as bar:
            for out in outputs:
                writer.write(out.encoded)
                rejects.extend(out.rejects)
                digests.append(out.digests)
                n_annotated += out.n_records
                n_words += out.n_words
                bar.update(out.n_records + len(out.rejects))
        completed = True
    finally:
        outputs.close()
        if completed:
            writer.close()
        else:  # the error that stopped the run is the one to tell (a full disk fails close() too)
            with contextlib.suppress(Exception):
                writer.close()
    return job.finish("local", start, n_annotated, n_words, rejects, count_duplicates(digests))
