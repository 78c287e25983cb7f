"""Settings of the server: where it listens, its limits, and how requests are batched."""

import os
from dataclasses import dataclass
from typing import Optional

from ..annotate.batch import inference_problem

API_KEY_ENV = "SPACY_HYBRIDNER_API_KEY"


def default_model_workers(model_process: bool = True) -> int:
    """Model processes of the server: 2 (1 with the model in a thread). Two copies of the
    pipeline keep the model busy: one annotates a batch while the other's batch gathers
    and its answers go out (on 2 cores, 1.2-1.4x the words/s of one under 16 clients;
    ``docs/benchmarks.md``, "serve"). More rarely pay for their memory; ``--model-workers``
    sets it."""
    return 2 if model_process else 1


def default_torch_threads(model_workers: int = 1) -> int:
    """torch intra-op threads of each of the server's ``model_workers`` model processes: one
    less than the cores shared among them (at least 1 each), leaving a core to the event loop
    that parses and answers HTTP. With as many threads as cores, torch's threads and the
    event loop fight over the cores and both slow down."""
    return max(1, ((os.cpu_count() or 1) - 1) // model_workers)


@dataclass
class ServeSettings:
    """Everything the server needs besides the pipeline (defaults are the CLI's).

    host (str): interface to bind; 127.0.0.1 (loopback only) unless told otherwise.
    port (int): TCP port.
    api_key (Optional[str]): if set, every request except ``GET /health`` and the static page
        must send it as ``X-API-Key: KEY`` or ``Authorization: Bearer KEY`` (else 401).
    max_body_bytes (int): largest request body (413 beyond it, checked on Content-Length and
        on the bytes actually received).
    max_text_chars (int): most characters in one text (422 naming the text).
    max_texts (int): most texts in one request (422).
    queue_size (int): requests waiting for the model at most; one more gets 503 + Retry-After.
    max_batch_texts (int): most texts the worker gathers into one ``nlp.pipe`` call (a
        request with more texts runs as a batch of its own).
    batch_wait_ms (float): how long the worker waits for more requests after the first one
        of a batch arrived (only while the queue is empty; a busy server batches at once).
    retry_after_s (int): the Retry-After value sent with 503.
    max_header_bytes (int): most bytes of a request's line and headers; beyond it the
        server answers 431 and closes the connection, before any header is parsed into the
        request (so before the API key and the model).
    receive_timeout_s (float): seconds to receive a whole request (line, headers and body)
        from its first byte, or from the connection's opening; beyond it 408 and the
        connection is closed (a connection that sent nothing is closed without an answer).
        The model's time is not counted: it starts once the whole request is in.
    shutdown_timeout_s (float): after SIGTERM or SIGINT, how long the requests in flight
        (and their answers) have before they are cancelled and the server exits; a second
        signal exits at once.
    access_log (bool): uvicorn's per-request log lines.
    log_level (str): uvicorn's and the server's log level.
    precision (Optional[str]), runtime (Optional[str]): if either is given, each copy of the
        pipeline runs its transformers at this precision ("fp32", "int8") in this runtime
        ("torch", "onnxruntime": exported when the pipeline loads), whatever it was saved
        with (:class:`~spacy_hybridner.annotate.annotator.Annotator`); None: as saved.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    api_key: Optional[str] = None
    max_body_bytes: int = 1_048_576
    max_text_chars: int = 100_000
    max_texts: int = 128
    queue_size: int = 64
    max_batch_texts: int = 64
    batch_wait_ms: float = 2.0
    retry_after_s: int = 1
    max_header_bytes: int = 65_536
    receive_timeout_s: float = 30.0
    shutdown_timeout_s: float = 10.0
    access_log: bool = True
    log_level: str = "info"
    precision: Optional[str] = None
    runtime: Optional[str] = None

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_text_chars", "max_texts", "queue_size", "max_batch_texts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_header_bytes < 1024:
            raise ValueError(
                "max_header_bytes must be at least 1024 (a request line and a few headers), "
                f"got {self.max_header_bytes}"
            )
        if not self.receive_timeout_s > 0:
            raise ValueError(f"receive_timeout_s must be more than 0 seconds, got {self.receive_timeout_s}")
        if not self.shutdown_timeout_s >= 0:
            raise ValueError(f"shutdown_timeout_s must be 0 seconds or more, got {self.shutdown_timeout_s}")
        if self.batch_wait_ms < 0:
            raise ValueError(f"batch_wait_ms must be 0 or more, got {self.batch_wait_ms}")
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError(f"the API key is empty: give a non-empty --api-key or unset {API_KEY_ENV}")
        problem = inference_problem(self.precision, self.runtime)
        if problem is not None:
            raise ValueError(problem)
