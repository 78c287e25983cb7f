"""Run an :class:`~spacy_hybridner.annotate.annotator.Annotator` in a child process of its own.

Why: a spaCy pipeline spends much of its time in Python (the pipe loop, thinc, small torch
ops), holding the GIL. In a thread of the server, every request the event loop parses takes
the GIL from the model, and the model's throughput halves under load. In a child process the
model has its own interpreter and GIL; the server's worker thread only sends it texts and
waits (without the GIL) for the records. The Annotator is picklable without its pipeline,
so the child loads its own copy once.
"""

import logging
import multiprocessing
import signal
import threading
import traceback
from typing import Any, Dict, List, Optional, Sequence

from ..annotate.annotator import Annotator, EntityRecord

logger = logging.getLogger("spacy_hybridner.serve")


class ModelProcessError(RuntimeError):
    """The model raised in the child process (the message carries its traceback), or the
    child died (:class:`ModelProcessDied`)."""


class ModelProcessDied(ModelProcessError):
    """The child died during a call (killed, out of memory): the call may succeed in the
    new process that the next call starts."""


def describe_exit(code: Optional[int]) -> str:
    """A child's exit status in words: "killed by SIGKILL" (a negative exit code is the
    signal), "exit code 1", or "exit status unknown" (it had not exited when asked)."""
    if code is None:
        return "exit status unknown"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _model_loop(annotator: Annotator, conn: Any) -> None:
    """The child: answer ("load" | "annotate", payload) messages until "stop" or EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the server stops us
    while True:
        try:
            op, payload = conn.recv()
        except (EOFError, OSError):  # the server is gone
            return
        if op == "stop":
            return
        try:
            if op == "load":
                value: Any = annotator.load().info()
            else:
                value = annotator.annotate(payload)
            conn.send((True, value))
        except Exception:  # noqa: BLE001 - sent to the server, which logs it with an error id
            conn.send((False, traceback.format_exc()))


class ProcessAnnotator:
    """The same interface as Annotator (``load``, ``annotate``, ``info``), with the pipeline
    in a spawned child process. If the child dies (killed, out of memory), the call that saw
    it fails and the next one starts a new child.

    annotator (Annotator): what the child runs (its settings: model, batch size, threads, GPU).
    """

    def __init__(self, annotator: Annotator) -> None:
        self.annotator = annotator
        self._context = multiprocessing.get_context("spawn")  # no fork of a process with threads
        self._proc: Optional[Any] = None
        self._conn: Optional[Any] = None
        self._info: Optional[Dict[str, Any]] = None
        self._lock = threading.Lock()
        self._death: Optional[str] = None  # how the last child died, until a new one is started

    @property
    def pid(self) -> Optional[int]:
        """The child's process id (None before :meth:`load`)."""
        return None if self._proc is None else self._proc.pid

    def join(self, timeout: Optional[float] = None) -> Optional[int]:
        """Wait up to ``timeout`` seconds for the child to exit (one that was killed, say),
        as ``multiprocessing.Process.join``. RETURNS: its exit code, or None if it has not
        exited (or there is no child)."""
        proc = self._proc
        if proc is None:
            return None
        proc.join(timeout)
        return proc.exitcode

    def _start(self) -> None:
        parent, child = self._context.Pipe()
        self._proc = self._context.Process(
            target=_model_loop, args=(self.annotator, child), name="spacy-hybridner-model", daemon=True
        )
        self._proc.start()
        child.close()
        self._conn = parent
        self._info = self._exchange("load", None)
        logger.info("Model %s loaded in process %d", self.annotator.model, self._proc.pid)

    def _exchange(self, op: str, payload: Any) -> Any:
        assert self._conn is not None and self._proc is not None
        try:
            self._conn.send((op, payload))
            ok, value = self._conn.recv()
        except (EOFError, OSError, BrokenPipeError):
            self._proc.join(5)
            pid, how = self._proc.pid, describe_exit(self._proc.exitcode)
            doing = f"annotating a batch of {len(payload)} text(s)" if op == "annotate" else "loading the model"
            logger.error(
                "The model process %d died (%s) while %s; a new process is started for the next call", pid, how, doing
            )
            self._death = f"process {pid} ({how})"
            self._conn.close()
            self._proc = self._conn = None
            raise ModelProcessDied(
                f"the model process {pid} died ({how}) while {doing}; the next call starts a new one"
            ) from None
        if not ok:
            raise ModelProcessError(f"the model raised in its process:\n{value}")
        return value

    def load(self) -> "ProcessAnnotator":
        """Start the child and load the pipeline there (once)."""
        with self._lock:
            if self._proc is None:
                self._start()
        return self

    def annotate(self, texts: Sequence[str]) -> List[List[EntityRecord]]:
        """As :meth:`Annotator.annotate`, run in the child."""
        with self._lock:
            if self._proc is None or not self._proc.is_alive():
                if self._proc is not None:  # died between calls
                    self._proc.join(5)
                    how = describe_exit(self._proc.exitcode)
                    logger.error("The model process %d died (%s) between batches", self._proc.pid, how)
                    self._death = f"process {self._proc.pid} ({how})"
                    self._conn.close()
                    self._proc = self._conn = None
                if self._death is not None:
                    logger.warning("Restarting the model: a new process replaces %s", self._death)
                self._start()
                self._death = None
            return self._exchange("annotate", list(texts))

    def info(self) -> Dict[str, Any]:
        """As :meth:`Annotator.info` (read in the child when it loaded)."""
        self.load()
        assert self._info is not None
        return self._info

    def close(self, timeout: float = 10.0) -> None:
        """Stop the child (it finishes nothing: call when no request is waiting)."""
        with self._lock:
            if self._proc is None:
                return
            try:
                self._conn.send(("stop", None))
            except (OSError, BrokenPipeError):
                pass
            self._proc.join(timeout)
            if self._proc.is_alive():
                self._proc.terminate()
                self._proc.join(timeout)
            self._conn.close()
            self._proc = self._conn = None
