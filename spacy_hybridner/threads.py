"""Thread policy: how many threads torch and numpy's BLAS use, in one place.

Two thread pools share the cores when a ``hybrid_ner`` pipeline runs on a CPU: torch's
(OpenMP: the encoder's Transformer and LSTM layers) and numpy's BLAS (OpenBLAS or MKL:
the thinc layers' matrix products, see :func:`numpy_gemm`). This module is
the only code of the package that changes either. Its public entry point,
:func:`use_threads`, is for applications that own their process (a worker, a model
process, a benchmark): they call it explicitly; importing the package or building a
pipeline changes nothing process-wide. Two narrower things live here too, each with its
reason:

- :func:`one_blas_thread`, which ``hybrid_ner``'s ``predict`` wraps around its own work
  and which puts back the BLAS thread count it found when the call returns;
- the fork handler that ``nlp.pipe(n_process > 1)`` needs (:func:`track_for_fork`).
"""

import os
import threading
import weakref
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, Iterator, Optional

import torch
from thinc.api import Model, NumpyOps


@lru_cache(maxsize=1)
def _blas_pools():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController().select(user_api="blas")


def blas_threads() -> Optional[int]:
    """The thread count of numpy's BLAS (the first pool's), or None without a BLAS pool."""
    info = _blas_pools().info()
    return info[0]["num_threads"] if info else None


def use_threads(n: int) -> None:
    """Run this process's torch and numpy BLAS on ``n`` threads each, from now on.

    For applications that own their process: ``annotate``'s worker processes and Ray
    actors and ``serve``'s model processes (one thread each, one process per core), the
    benchmarks (the same count for every system compared), and a program about to call
    ``nlp.pipe(n_process > 1)`` that wants its workers set up before they fork.

    n (int): threads per pool, at least 1.
    """
    if n < 1:
        raise ValueError(f"use_threads needs at least 1 thread, got {n}.")
    torch.set_num_threads(n)
    _blas_pools().limit(limits=n)


# Prediction runs numpy's BLAS (the thinc layers' gemm, see numpy_gemm) on one thread. Its
# threads and torch's (the encoder) take turns on the same cores, and each pool keeps its
# threads spinning for a while after its work, so with both at the core count they slow
# each other down: one BLAS thread is 1.1-1.2x as fast for batches on 2 cores and halves
# the latency of one sentence (docs/benchmarks.md, "CPU inference, third round").
_ONE_BLAS_THREAD = threading.Lock()


@contextmanager
def one_blas_thread(ops: Any) -> Iterator[None]:
    """Run the block with numpy's BLAS on one thread when ``ops`` is the CPU's, and put
    back the count it found afterwards. The count is process-wide, so one block at a
    time sets it (a lock taken without waiting: a block that finds it taken runs with
    whatever the holder set) and numpy code on other threads runs single-threaded
    meanwhile."""
    if not isinstance(ops, NumpyOps) or not _ONE_BLAS_THREAD.acquire(blocking=False):
        yield
        return
    try:
        with _blas_pools().limit(limits=1):
            yield
    finally:
        _ONE_BLAS_THREAD.release()


# nlp.pipe(n_process > 1) forks workers. A process forked after torch has used its
# thread pool (OpenMP) hangs in torch's first parallel op unless the child runs torch
# single-threaded, which is also what one worker process per core wants. The child must
# be set up at the fork, not in the component's first predict: an upstream torch
# component (spacy-transformers' transformer) runs in the child before it, and spaCy has
# no hook in the child before its pipes run. So the handler is installed when the first
# hybrid_ner component is made (importing the package installs nothing) and acts only
# while one is alive in the forking process: programs that never build a hybrid_ner
# pipeline keep their children's thread count, and the parent's own count never changes.
_LIVE_COMPONENTS: "weakref.WeakSet" = weakref.WeakSet()
_FORK_HANDLER = {"installed": False}


def _single_threaded_in_child() -> None:
    if len(_LIVE_COMPONENTS):
        use_threads(1)


def track_for_fork(component: Any) -> None:
    """Make children forked while ``component`` is alive run torch and BLAS on one
    thread (see above); installs the fork handler once per process."""
    _LIVE_COMPONENTS.add(component)
    if not _FORK_HANDLER["installed"]:
        os.register_at_fork(after_in_child=_single_threaded_in_child)
        _FORK_HANDLER["installed"] = True


def numpy_gemm(model: Model) -> None:
    """Run the matrix products of the model's thinc layers (the tok2vec's Maxout layers,
    the character CNN) through numpy's BLAS instead of thinc's default, blis.

    thinc's ``NumpyOps`` multiplies with blis on one thread; ``NumpyOps(use_blis=False)``
    hands ``gemm`` to numpy, whose OpenBLAS uses every core that torch's layers use too.
    Everything else ``NumpyOps`` does stays the same. Applied by the ``HybridNER``
    architectures when they build a model, so that training, the in-memory model and a
    reloaded one compute alike: on CoNLL-2003 test the default pipeline then annotates 1.1 (batches
    of 32) to 1.6 (of 1000) times as fast on 2 cores, with the same entities as with blis
    (``docs/benchmarks.md``, "CPU inference"). Models on a GPU (``CupyOps``) are left alone.
    """
    if type(model.ops) is not NumpyOps or not model.ops.use_blis:
        return
    ops = NumpyOps(use_blis=False)
    for node in model.walk():
        if type(node.ops) is NumpyOps:
            node.ops = ops
