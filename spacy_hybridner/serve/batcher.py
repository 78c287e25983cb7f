"""Gather concurrent requests into ``nlp.pipe`` batches, off the event loop.

The event loop puts each request (its texts and an asyncio future) into a bounded,
thread-safe queue without waiting: a full queue is refused at once (the server answers
503). Each worker thread owns one annotator (one copy of the pipeline): it loads it,
answers a warm-up text, then takes a request, gathers whatever else arrives within a short
window (up to a number of texts), runs :meth:`Annotator.annotate` once on all of their texts
and hands each request its share back on the event loop with ``loop.call_soon_threadsafe``.
The event loop never runs the model. With one annotator, one thread and one copy of the
model's working memory; with several (each a
:class:`~spacy_hybridner.serve.model_process.ProcessAnnotator`, which runs its pipeline in a
child process while its thread only waits), the workers take batches from the same queue
in turn, so one batch is annotated while the next one gathers and another is answered.
"""

import asyncio
import logging
import queue
import threading
import time
import uuid
from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence, Tuple

from ..annotate.annotator import EntityRecord
from .model_process import ModelProcessDied

logger = logging.getLogger("spacy_hybridner.serve")

WARMUP_TEXT = "Angela Merkel met Tim Cook in Berlin."


class QueueFull(Exception):
    """The queue of requests waiting for the model is full."""


class NotReady(Exception):
    """The model is still loading, or failed to load (``error`` says why)."""

    def __init__(self, error: Optional[str] = None) -> None:
        super().__init__(error or "the model is still loading")
        self.error = error


class ClientGone(Exception):
    """The client closed its connection before its request reached the model: the request
    was withdrawn from the queue (the worker drops it)."""


class ModelError(Exception):
    """The model raised on a request's texts; ``error_id`` names the logged traceback."""

    def __init__(self, error_id: str) -> None:
        super().__init__(f"the model failed (error id {error_id})")
        self.error_id = error_id


class _Request:
    __slots__ = ("texts", "future", "loop")

    def __init__(self, texts: Sequence[str], future: "asyncio.Future", loop: asyncio.AbstractEventLoop) -> None:
        self.texts = texts
        self.future = future
        self.loop = loop


_STOP = object()


def _resolve(future: "asyncio.Future", result: Any = None, error: Optional[BaseException] = None) -> None:
    """Set a future's outcome unless its request was given up (client gone, shutdown)."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _last_line(error: BaseException) -> str:
    """An exception's type and the last line of its message (a child's traceback ends with
    the error itself)."""
    return f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[-1]}"


def _resolve_all(pairs: List[Tuple["asyncio.Future", Any]]) -> None:
    for future, result in pairs:
        _resolve(future, result)


class Batcher:
    """Worker threads, one per annotator, running ``annotate`` on batches of queued requests.

    annotator: an :class:`~spacy_hybridner.annotate.annotator.Annotator` (anything with ``load()``
        and ``annotate(texts) -> List[List[EntityRecord]]``), or a list of them: one worker
        thread each, all taking batches from the one queue (for several copies of the
        pipeline, each in a process of its own).
    queue_size (int): requests that may wait at most; :meth:`submit` refuses the next one.
    max_batch_texts (int): most texts per ``annotate`` call (a larger request runs alone).
    batch_wait_ms (float): after the first request of a batch, wait this long for more
        while the queue is empty.
    on_load_error (Optional[Callable[[BaseException], None]]): called (in the worker thread)
        if the pipeline cannot be loaded or fails on the warm-up text.
    """

    def __init__(
        self,
        annotator: Any,
        *,
        queue_size: int,
        max_batch_texts: int,
        batch_wait_ms: float,
        on_load_error: Optional[Callable[[BaseException], None]] = None,
    ) -> None:
        self.annotators = list(annotator) if isinstance(annotator, (list, tuple)) else [annotator]
        if not self.annotators:
            raise ValueError("Batcher needs at least one annotator")
        self.max_batch_texts = max_batch_texts
        self.batch_wait_s = batch_wait_ms / 1000.0
        self.on_load_error = on_load_error
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._ready = threading.Event()
        self._load_error: Optional[str] = None
        self._loaded = 0
        self._loaded_lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(a,), name=f"spacy-hybridner-model-{i}", daemon=True)
            for i, a in enumerate(self.annotators)
        ]

    @property
    def ready(self) -> bool:
        """True once every worker's pipeline is loaded and has annotated the warm-up text."""
        return self._ready.is_set()

    @property
    def pending(self) -> int:
        """How many requests wait in the queue (not counting the batch being annotated)."""
        return self._queue.qsize()

    @property
    def live_pending(self) -> int:
        """How many of the :attr:`pending` requests are still wanted: not withdrawn (their
        client left), which a worker drops when it takes them."""
        with self._queue.mutex:
            queued = list(self._queue.queue)
        return sum(1 for item in queued if isinstance(item, _Request) and not item.future.done())

    @property
    def loaded(self) -> int:
        """How many workers have loaded their pipeline and annotated the warm-up text."""
        return self._loaded

    @property
    def load_error(self) -> Optional[str]:
        """Why the pipeline could not be loaded, or None."""
        return self._load_error

    def start(self) -> None:
        """Start the workers: each loads its pipeline, warms it up, then serves the queue."""
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Let the workers finish the batches they run, refuse what still waits, and end them."""
        pending = []
        while True:
            try:
                pending.append(self._queue.get_nowait())
            except queue.Empty:
                break
        for item in pending:
            if isinstance(item, _Request):
                item.loop.call_soon_threadsafe(_resolve, item.future, None, NotReady("the server is shutting down"))
        for _ in self._threads:
            self._queue.put(_STOP)  # one each: a worker that takes it ends
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout)
        for annotator in self.annotators:
            close = getattr(annotator, "close", None)  # a ProcessAnnotator's child process
            if close is not None:
                close()

    async def annotate(self, texts: Sequence[str], gone: Optional[Awaitable[Any]] = None) -> List[List[EntityRecord]]:
        """Queue the texts of one request and wait for their records (one list per text).

        gone: an awaitable that completes when the client has left (its connection
            closed). If it does before the answer, the request is withdrawn: a worker that
            has not yet given it to the model drops it. The same happens if the awaiting
            task is cancelled.
        Raises NotReady (still loading or failed to load), QueueFull (the queue is full:
        nothing was queued), ModelError (the model raised on these texts), ClientGone.
        """
        if not self._ready.is_set():
            if gone is not None and asyncio.iscoroutine(gone):
                gone.close()
            raise NotReady(self._load_error)
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        try:
            self._queue.put_nowait(_Request(list(texts), future, loop))
        except queue.Full:
            if gone is not None and asyncio.iscoroutine(gone):
                gone.close()
            raise QueueFull() from None
        watcher = asyncio.ensure_future(gone) if gone is not None else None
        try:
            if watcher is None:
                return await future
            await asyncio.wait({future, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if future.done():
                return future.result()
            if not watcher.cancelled():
                watcher.exception()  # retrieved: a receive that failed counts as the client gone
            raise ClientGone()
        finally:
            if not future.done():
                future.cancel()  # withdrawn: the worker skips a cancelled request
            if watcher is not None and not watcher.done():
                watcher.cancel()

    # --- the worker thread -------------------------------------------------------------

    def _run(self, annotator: Any) -> None:
        try:
            annotator.load()
            annotator.annotate([WARMUP_TEXT])
        except Exception as error:  # noqa: BLE001 - reported, and the server says so
            # Clients see the last line (the error itself); the log has the whole traceback.
            last_line = (str(error).strip().splitlines() or [""])[-1]
            self._load_error = f"the model could not be loaded: {type(error).__name__}: {last_line}"
            logger.exception("The model could not be loaded or failed on the warm-up text")
            if self.on_load_error is not None:
                self.on_load_error(error)
            return
        with self._loaded_lock:
            self._loaded += 1
            if self._loaded == len(self.annotators):
                self._ready.set()
                logger.info("Model loaded and warmed up (%d worker(s)): ready", self._loaded)
        carry: List[Any] = []  # a request that did not fit this worker's last batch
        while True:
            batch = self._next_batch(carry)
            if batch is None:
                return
            self._process(annotator, batch)

    def _next_batch(self, carry: List[Any]) -> Optional[List[_Request]]:
        """Block for a first request (or take the one carried over in ``carry``), then
        gather more until the window closes or the batch holds max_batch_texts texts.
        None when told to stop."""
        first = carry.pop() if carry else self._queue.get()
        if first is _STOP:
            return None
        batch = [first]
        n_texts = len(first.texts)
        deadline = time.monotonic() + self.batch_wait_s
        while n_texts < self.max_batch_texts:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            if item is _STOP or n_texts + len(item.texts) > self.max_batch_texts:
                carry.append(item)  # starts this worker's next batch (or stops it after this one)
                break
            batch.append(item)
            n_texts += len(item.texts)
        return batch

    def _process(self, annotator: Any, batch: List[_Request]) -> None:
        """Annotate a batch at once; if the model raises, run its requests one by one so
        that only the request(s) it fails on get the error; if its process died, run each
        request once more on its own (a batch of one too), in the new process. Requests
        withdrawn meanwhile (their client left) are dropped before they reach the model."""
        live = self._live(batch)
        if not live:
            return
        try:
            results = annotator.annotate([t for r in live for t in r.texts])
        except Exception as error:  # noqa: BLE001 - isolated below
            if isinstance(error, ModelProcessDied):
                # Whatever killed the process (memory, a signal) may not be this batch's
                # doing: each request runs again, alone, in the new process.
                logger.warning(
                    "The model process died on a batch of %d request(s) (%d text(s)); running each request again "
                    "on its own in a new process",
                    len(live),
                    sum(len(r.texts) for r in live),
                )
            elif len(live) == 1:
                self._fail(live[0], len(live[0].texts))
                return
            else:
                logger.warning(
                    "The model failed on a batch of %d requests (%d texts): %s; running each request again on its own",
                    len(live),
                    sum(len(r.texts) for r in live),
                    _last_line(error),
                )
            for request in self._live(live):
                try:
                    own = annotator.annotate(request.texts)
                except Exception:  # noqa: BLE001 - logged with an id, returned as 500
                    self._fail(request, len(request.texts))
                else:
                    request.loop.call_soon_threadsafe(_resolve, request.future, own)
            return
        # One wake-up of the event loop for the whole batch (requests share the server's loop).
        shares: Dict[asyncio.AbstractEventLoop, List[Tuple[asyncio.Future, Any]]] = {}
        start = 0
        for request in live:
            end = start + len(request.texts)
            shares.setdefault(request.loop, []).append((request.future, results[start:end]))
            start = end
        for loop, pairs in shares.items():
            loop.call_soon_threadsafe(_resolve_all, pairs)

    @staticmethod
    def _live(batch: List[_Request]) -> List[_Request]:
        """The requests of a batch that were not withdrawn (a withdrawn one's future is
        cancelled by the event loop); logs how many were dropped."""
        live = [r for r in batch if not r.future.done()]
        if len(live) < len(batch):
            dropped = [r for r in batch if r.future.done()]
            logger.info(
                "Dropped %d request(s) (%d text(s)) whose client left before they reached the model",
                len(dropped),
                sum(len(r.texts) for r in dropped),
            )
        return live

    def _fail(self, request: _Request, n_texts: int) -> None:
        error_id = uuid.uuid4().hex
        logger.exception("The model failed on a request of %d text(s); error id %s", n_texts, error_id)
        request.loop.call_soon_threadsafe(_resolve, request.future, None, ModelError(error_id))
