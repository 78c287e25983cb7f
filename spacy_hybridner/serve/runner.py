"""Run the app with uvicorn: the socket (bound before the models load), uvicorn's
configuration (the bounded HTTP protocol, logging, the graceful stop) and :func:`serve`,
which runs until SIGTERM or SIGINT (:class:`~spacy_hybridner.serve.server.GracefulServer`)."""

import copy
import errno
import logging
import signal
import socket
from pathlib import Path
from typing import Any, Dict, List, Optional

import spacy
import uvicorn
from uvicorn.config import LOGGING_CONFIG

from ..annotate.annotator import Annotator
from .app import create_app
from .model_process import ProcessAnnotator
from .protocol import bounded_protocol
from .server import GracefulServer, stop_signals
from .settings import ServeSettings, default_model_workers, default_torch_threads

logger = logging.getLogger("spacy_hybridner.serve")

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")  # no warning when served there without an API key


def _log_config(level: str) -> Dict[str, Any]:
    """uvicorn's logging set-up, with the server's own logger on uvicorn's handler."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["spacy_hybridner"] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    return config


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind the server's TCP socket, before anything slow (loading the models) happens.

    RETURNS (socket.socket): bound, not yet listening (uvicorn listens on it).
    Raises SystemExit with a message naming the address and what to do if it cannot bind.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise SystemExit(
            f"Cannot listen on {host}:{port}: {host!r} is not an address of this machine ({error}); "
            "give --host an IP address such as 127.0.0.1"
        ) from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: rebind after a restart
        sock.bind(address)
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise SystemExit(
                f"Cannot listen on {host}:{port}: the port is already in use (another server, or an earlier one "
                f"still running?): stop it, or choose another port with --port"
            ) from None
        if error.errno == errno.EACCES:
            raise SystemExit(
                f"Cannot listen on {host}:{port}: permission denied (ports below 1024 need privileges): "
                "choose a port of 1024 or more with --port"
            ) from None
        raise SystemExit(
            f"Cannot listen on {host}:{port}: {error.strerror or error}: check --host and --port"
        ) from None
    sock.set_inheritable(True)
    return sock


def server_config(app: Any, settings: ServeSettings, configure_logging: bool = True) -> Any:
    """uvicorn's configuration for the app: the bounded HTTP protocol
    (:mod:`~spacy_hybridner.serve.protocol`: 431 beyond ``max_header_bytes``, 408 beyond
    ``receive_timeout_s``), no WebSockets, a graceful stop bounded by
    ``shutdown_timeout_s``, and uvicorn's log handlers for the server's logger too
    (``configure_logging=False``: leave the process's logging as it is)."""
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=_log_config(settings.log_level) if configure_logging else None,
        log_level=settings.log_level,
        access_log=settings.access_log,
        lifespan="on",
        http=bounded_protocol(settings.max_header_bytes, settings.receive_timeout_s),
        ws="none",
        timeout_graceful_shutdown=settings.shutdown_timeout_s,
    )


def _check_model_workers(model: str, model_process: bool, model_workers: Optional[int]) -> int:
    """The number of model workers to run (``model_workers``, or the default), once the
    model is known to exist; SystemExit with what to change if not, or if the number is wrong."""
    if not Path(model).exists() and not spacy.util.is_package(model):
        raise SystemExit(f"Cannot serve {model!r}: it is neither a folder nor an installed pipeline package")
    if model_workers is None:
        model_workers = default_model_workers(model_process)
    if model_workers < 1 or (model_workers > 1 and not model_process):
        raise SystemExit(
            f"--model-workers {model_workers}: give at least 1, and more than 1 only with --model-process "
            "(copies of the pipeline in threads of one process would share its GIL)"
        )
    return model_workers


def _annotators(model: str, model_workers: int, *, model_process: bool, **settings: Any) -> Any:
    """One Annotator of ``model`` (``settings``: its batch size, threads, GPU, precision and
    runtime), or, with ``model_process``, ``model_workers`` ProcessAnnotators of it."""
    annotator: Any = Annotator(model, **settings)
    if model_process:
        annotator = [ProcessAnnotator(annotator) for _ in range(model_workers)]
    return annotator


def _log_listening(sock: socket.socket, settings: ServeSettings) -> None:
    """Log where the server listens and how it stops; warn when it is open to others without a key."""
    host, port = sock.getsockname()[:2]
    how = (
        "Ctrl-C or SIGTERM to stop"
        if signal.SIGINT in stop_signals()
        else ("SIGTERM to stop; SIGINT is ignored, as it was when the process started")
    )
    logger.info("Listening on http://%s:%d (%s)", f"[{host}]" if ":" in host else host, port, how)
    if settings.host not in LOCAL_HOSTS and settings.api_key is None:
        logger.warning(
            "Listening on %s without an API key: anyone who can reach this host can use the model "
            "(set --api-key or SPACY_HYBRIDNER_API_KEY)",
            settings.host,
        )


def serve(
    model: str,
    settings: ServeSettings,
    *,
    batch_size: Optional[int] = None,
    torch_threads: Optional[int] = None,
    gpu_id: int = -1,
    model_process: bool = True,
    model_workers: Optional[int] = None,
) -> None:
    """Serve a pipeline over HTTP with uvicorn until SIGTERM or SIGINT (SIGINT only if it was
    not ignored when the process started), then exit cleanly (exit code 0) once the requests
    in flight are answered, or ``settings.shutdown_timeout_s`` after the signal; a second
    signal stops it at once (:class:`~spacy_hybridner.serve.server.GracefulServer`).

    model (str): a pipeline package name or the path of a saved pipeline.
    settings (ServeSettings): host, port, limits, batching, API key, the inference
        settings of the model processes (precision, runtime).
    batch_size (Optional[int]): ``nlp.pipe``'s batch size (None: the pipeline's own).
    torch_threads (Optional[int]): torch's intra-op threads for the model (None:
        :func:`~spacy_hybridner.serve.settings.default_torch_threads`: one less than the cores,
        shared among the model processes, at least 1 each).
    gpu_id (int): -1 for the CPU, else the GPU to run on.
    model_process (bool): run the pipeline in a child process of its own (default), so that
        the event loop and the model do not share a GIL; False: in the worker thread.
    model_workers (Optional[int]): how many model processes (copies of the pipeline) take
        batches from the queue in turn; each gets ``torch_threads`` threads. None:
        :func:`~spacy_hybridner.serve.settings.default_model_workers` (2 with
        ``model_process``, 1 without). More than 1 needs ``model_process``.
    Raises SystemExit(1) if the pipeline cannot be loaded.
    """
    model_workers = _check_model_workers(model, model_process, model_workers)
    if torch_threads is None:
        torch_threads = default_torch_threads(model_workers)
    # Bind before the models load: a taken port fails at once, not after minutes of loading.
    sock = bind_socket(settings.host, settings.port)
    annotator = _annotators(
        model,
        model_workers,
        model_process=model_process,
        batch_size=batch_size,
        torch_threads=torch_threads,
        gpu_id=gpu_id,
        precision=settings.precision,
        runtime=settings.runtime,
    )
    failed: List[BaseException] = []
    server: Optional[GracefulServer] = None

    def stop_on_load_error(error: BaseException) -> None:
        failed.append(error)
        if server is not None:
            server.should_exit = True

    app = create_app(annotator, settings, on_load_error=stop_on_load_error)
    server = GracefulServer(server_config(app, settings))
    _log_listening(sock, settings)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    if failed:
        raise SystemExit(f"Could not serve {model!r}: {failed[0]}")
