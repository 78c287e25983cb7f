"""The FastAPI application: a JSON API under ``/v1``, health checks and a static page.

``create_app(annotator, settings)`` builds it around an
:class:`~spacy_hybridner.annotator.Annotator` (or a list of them); :func:`serve` runs it with
uvicorn. A pipeline is called from its :class:`~spacy_hybridner.serve.batcher.Batcher` worker
thread only; :func:`serve` puts each copy in a child process of its own
(:class:`~spacy_hybridner.serve.model_process.ProcessAnnotator`).
Nothing in a request names a file or a model: the pipeline is the one given at start-up.
"""
import copy
import hmac
import logging
import signal
import threading
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, model_validator
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from typing_extensions import Annotated

from ..annotator import filter_records
from .batcher import Batcher, ModelError, NotReady, QueueFull
from .render import render_html
from .settings import ServeSettings, default_model_workers, default_torch_threads

logger = logging.getLogger("spacy_hybridner.serve")

STATIC_DIR = Path(__file__).parent / "static"
OPEN_PATHS = ("/health", "/", "/favicon.ico")  # no API key needed (the page holds no data)
OPEN_PREFIXES = ("/static/",)


# --- response models (fixed) -------------------------------------------------------------

class Entity(BaseModel):
    """One entity: character offsets into the text, label, text and confidence."""

    start_char: int
    end_char: int
    label: str
    text: str
    confidence: Optional[float] = Field(description="ent._.confidence; null where the component gives none")


class DocEntities(BaseModel):
    """The entities of one input text, with the id it was sent with (null if none)."""

    id: Optional[Union[StrictStr, StrictInt]] = None
    ents: List[Entity]


class EntsResponse(BaseModel):
    """``POST /v1/ents``: one entry per input text, in order."""

    docs: List[DocEntities]


class RenderResponse(BaseModel):
    """``POST /v1/render``: displaCy's ent markup of all texts, and the same entities as
    ``/v1/ents`` (the ``i``-th ``<mark>`` of doc ``j`` carries ``data-doc="j" data-ent="i"``
    and ``data-confidence``)."""

    html: str
    docs: List[DocEntities]


# --- request models (built with the configured limits, so they are in the OpenAPI schema) --

def build_request_model(settings: ServeSettings) -> type:
    """The pydantic model of ``/v1/ents`` and ``/v1/render`` bodies, with the limits of
    ``settings`` (characters per text, texts per request) as validation constraints."""
    Text = Annotated[StrictStr, Field(max_length=settings.max_text_chars)]

    class Doc(BaseModel):
        """A text with an id of your choosing, returned with its entities."""

        model_config = ConfigDict(extra="forbid")
        id: Optional[Union[StrictStr, StrictInt]] = None
        text: Text

    class AnnotateRequest(BaseModel):
        """Exactly one of ``text``, ``texts`` or ``docs``; ``min_confidence`` drops entities
        whose confidence is lower (and those without one)."""

        model_config = ConfigDict(extra="forbid")
        text: Optional[Text] = None
        texts: Optional[List[Text]] = Field(None, min_length=1, max_length=settings.max_texts)
        docs: Optional[List[Doc]] = Field(None, min_length=1, max_length=settings.max_texts)
        min_confidence: Optional[float] = Field(None, ge=0.0, le=1.0)

        @model_validator(mode="after")
        def _exactly_one_input(self) -> "AnnotateRequest":
            given = [name for name in ("text", "texts", "docs") if getattr(self, name) is not None]
            if len(given) != 1:
                raise ValueError(
                    f"give exactly one of 'text', 'texts' or 'docs' (got {', '.join(given) or 'none'})"
                )
            return self

        def items(self) -> List[Dict[str, Any]]:
            """The input as ``[{"id": ..., "text": ...}]`` in order."""
            if self.text is not None:
                return [{"id": None, "text": self.text}]
            if self.texts is not None:
                return [{"id": None, "text": t} for t in self.texts]
            return [{"id": d.id, "text": d.text} for d in self.docs]

    return AnnotateRequest


ERROR_RESPONSES: Dict[Union[int, str], Dict[str, Any]] = {
    401: {"description": "No or a wrong API key (when the server has one)"},
    413: {"description": "Request body larger than --max-body-bytes"},
    422: {"description": "Malformed JSON, wrong types, unknown fields, too many texts or too long a text; "
                         "`detail` lists each problem with the `loc` of its field"},
    500: {"description": "The model raised on this request: `error_id` names the logged traceback"},
    503: {"description": "Queue full or model still loading; see Retry-After"},
}


# --- ASGI middleware: API key and body size, before any parsing ----------------------------

async def _send_json(
    scope: Dict, receive: Callable, send: Callable, status: int, content: Dict[str, Any],
    headers: Optional[Dict[str, str]] = None,
) -> None:
    await JSONResponse(content, status_code=status, headers=headers)(scope, receive, send)


class ApiKeyMiddleware:
    """401 for any request without the right key, except the open paths. The key is read
    from ``X-API-Key`` or ``Authorization: Bearer`` and compared in constant time."""

    def __init__(self, app: Any, api_key: str) -> None:
        self.app = app
        self.key = api_key.encode("utf8")

    async def __call__(self, scope: Dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or scope["path"].startswith(OPEN_PREFIXES):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v for k, v in scope["headers"]}
        given = headers.get("x-api-key")
        if given is None:
            auth = headers.get("authorization", b"")
            if auth[:7].lower() == b"bearer ":
                given = auth[7:].strip()
        if given is None or not hmac.compare_digest(given, self.key):
            what = "a wrong API key" if given is not None else "no API key"
            await _send_json(scope, receive, send, 401, {
                "detail": f"{what}: send the server's key as the header 'X-API-Key: KEY' or "
                          "'Authorization: Bearer KEY'",
            }, {"WWW-Authenticate": "Bearer"})
            return
        await self.app(scope, receive, send)


class BodySizeMiddleware:
    """413 when a body is larger than ``max_bytes``: at once if its Content-Length says so,
    else as soon as more bytes than that have arrived (chunked bodies, lying headers)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.detail = f"request body too large: the limit is {max_bytes} bytes (--max-body-bytes)"

    async def __call__(self, scope: Dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope["headers"]:
            if key.lower() == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    await _send_json(scope, receive, send, 400, {"detail": "the Content-Length header is not a number"})
                    return
                if length > self.max_bytes:
                    await _send_json(scope, receive, send, 413, {"detail": self.detail})
                    return
        received = 0

        async def limited_receive() -> Dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Raised inside the body read: FastAPI passes HTTPException on, and the
                    # app's exception handling answers it as JSON.
                    raise HTTPException(status_code=413, detail=self.detail)
            return message

        await self.app(scope, limited_receive, send)


# --- the app ------------------------------------------------------------------------------

def _validation_error_body(errors: List[Dict[str, Any]]) -> Dict[str, Any]:
    """FastAPI's 422 body (``detail``: a list with ``loc``, ``msg``, ``type``) without the
    echo of the input, which could be a whole long text."""
    detail = []
    for error in jsonable_encoder(errors):
        error = {k: v for k, v in error.items() if k not in ("input", "url")}
        if not isinstance(error.get("ctx", {}).get("error", ""), str):  # an exception, already in "msg"
            error["ctx"] = {k: v for k, v in error["ctx"].items() if k != "error"}
            if not error["ctx"]:
                del error["ctx"]
        detail.append(error)
    return {"detail": detail}


def create_app(
    annotator: Any, settings: ServeSettings, on_load_error: Optional[Callable[[BaseException], None]] = None,
) -> FastAPI:
    """Build the server around an annotator, or several copies of one.

    annotator: an :class:`~spacy_hybridner.annotator.Annotator` (or anything with ``load()``,
        ``annotate(texts)`` and ``info()``), loaded by the worker thread at start-up; or a
        list of them, one worker thread each (``/v1/model`` answers from the first).
    settings (ServeSettings): limits, batching, API key.
    on_load_error: called if the pipeline cannot be loaded (``serve`` stops the server then).
    RETURNS (FastAPI): the application. Its lifespan starts the worker (which loads the
        pipeline and answers a warm-up text: ``/ready`` is 503 until then) and stops it.
    """
    batcher = Batcher(
        annotator, queue_size=settings.queue_size, max_batch_texts=settings.max_batch_texts,
        batch_wait_ms=settings.batch_wait_ms, on_load_error=on_load_error,
    )
    AnnotateRequest = build_request_model(settings)
    info: Dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()  # loads in the background: /health answers at once, /ready when warm
        try:
            yield
        finally:
            await run_in_threadpool(batcher.stop)

    app = FastAPI(
        title="spacy-hybridner",
        summary="Named entities with confidences from a spaCy pipeline",
        lifespan=lifespan,
        docs_url=None,  # Swagger UI and ReDoc load scripts from a CDN; /openapi.json stays
        redoc_url=None,
    )
    app.state.batcher = batcher
    app.state.settings = settings

    @app.exception_handler(RequestValidationError)
    async def _on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(_validation_error_body(list(exc.errors())), status_code=422)

    def _unavailable(error: NotReady) -> JSONResponse:
        detail = error.error or "the model is still loading: retry when GET /ready answers 200"
        return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": str(settings.retry_after_s)})

    async def _annotate(body: Any) -> Union[JSONResponse, List[Dict[str, Any]]]:
        items = body.items()
        try:
            results = await batcher.annotate([item["text"] for item in items])
        except NotReady as error:
            return _unavailable(error)
        except QueueFull:
            return JSONResponse(
                {"detail": f"the server is busy: {settings.queue_size} requests are already waiting for the model; "
                           f"retry after {settings.retry_after_s} s"},
                status_code=503, headers={"Retry-After": str(settings.retry_after_s)},
            )
        except ModelError as error:
            return JSONResponse(
                {"detail": f"the model failed on this request; the server log has the traceback under error id "
                           f"{error.error_id}", "error_id": error.error_id},
                status_code=500,
            )
        return [
            {"id": item["id"], "text": item["text"], "ents": filter_records(records, body.min_confidence)}
            for item, records in zip(items, results)
        ]

    async def _info() -> Dict[str, Any]:
        if not info:  # read once the worker has loaded the pipeline
            info.update(await run_in_threadpool(batcher.annotators[0].info))
        return info

    def _public(docs: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        return [{"id": d["id"], "ents": d["ents"]} for d in docs]

    @app.post("/v1/ents", response_model=EntsResponse, responses=ERROR_RESPONSES, tags=["v1"])
    async def ents(body: AnnotateRequest) -> Any:
        """The entities of each text: ``start_char``, ``end_char``, ``label``, ``text``,
        ``confidence``."""
        docs = await _annotate(body)
        if isinstance(docs, JSONResponse):
            return docs
        # Plain records, already the response model's shape: sent as they are (no second
        # validation per request; response_model documents the schema).
        return JSONResponse({"docs": _public(docs)})

    @app.post("/v1/render", response_model=RenderResponse, responses=ERROR_RESPONSES, tags=["v1"])
    async def render(body: AnnotateRequest) -> Any:
        """displaCy's entity markup (``displacy.render(style="ent")``) of the texts, with the
        entities as in ``/v1/ents``."""
        docs = await _annotate(body)
        if isinstance(docs, JSONResponse):
            return docs
        html = await run_in_threadpool(render_html, docs, (await _info())["labels"])
        return JSONResponse({"html": html, "docs": _public(docs)})

    @app.get("/v1/model", tags=["v1"])
    async def model() -> Any:
        """The loaded pipeline: name, version, language, pipes, labels, the scores in its
        meta.json, and the versions of spaCy and spacy-hybridner."""
        if not batcher.ready:
            return _unavailable(NotReady(batcher.load_error))
        return await _info()

    @app.get("/health", tags=["checks"])
    async def health() -> Dict[str, str]:
        """200 while the process serves HTTP (the model may still be loading)."""
        return {"status": "ok"}

    @app.get("/ready", tags=["checks"])
    async def ready() -> Any:
        """200 once the model is loaded and has answered a warm-up text, else 503."""
        if not batcher.ready:
            return _unavailable(NotReady(batcher.load_error))
        return {"status": "ready"}

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    # Outermost first: the key is checked before the body is read, the size before parsing.
    app.add_middleware(BodySizeMiddleware, max_bytes=settings.max_body_bytes)
    if settings.api_key is not None:
        app.add_middleware(ApiKeyMiddleware, api_key=settings.api_key)
    return app


def _log_config(level: str) -> Dict[str, Any]:
    """uvicorn's logging set-up, with the server's own logger on uvicorn's handler."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["spacy_hybridner"] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    return config


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
    """Serve a pipeline over HTTP with uvicorn until SIGINT or SIGTERM (then exit cleanly,
    after the requests in flight are answered).

    model (str): a pipeline package name or the path of a saved pipeline.
    settings (ServeSettings): host, port, limits, batching, API key.
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
    import spacy
    import uvicorn

    from ..annotator import Annotator

    if not Path(model).exists() and not spacy.util.is_package(model):
        raise SystemExit(f"Cannot serve {model!r}: it is neither a folder nor an installed pipeline package")
    if model_workers is None:
        model_workers = default_model_workers(model_process)
    if model_workers < 1 or (model_workers > 1 and not model_process):
        raise SystemExit(
            f"--model-workers {model_workers}: give at least 1, and more than 1 only with --model-process "
            "(copies of the pipeline in threads of one process would share its GIL)"
        )
    if torch_threads is None:
        torch_threads = default_torch_threads(model_workers)
    annotator: Any = Annotator(model, batch_size=batch_size, torch_threads=torch_threads, gpu_id=gpu_id)
    if model_process:
        from .model_process import ProcessAnnotator

        annotator = [ProcessAnnotator(annotator) for _ in range(model_workers)]
    failed: List[BaseException] = []
    server: Optional[uvicorn.Server] = None

    def stop_on_load_error(error: BaseException) -> None:
        failed.append(error)
        if server is not None:
            server.should_exit = True

    app = create_app(annotator, settings, on_load_error=stop_on_load_error)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_config=_log_config(settings.log_level),
        log_level=settings.log_level, access_log=settings.access_log, lifespan="on",
    )
    server = uvicorn.Server(config)
    if settings.host not in ("127.0.0.1", "localhost", "::1") and settings.api_key is None:
        logger.warning(
            "Listening on %s without an API key: anyone who can reach this host can use the model "
            "(set --api-key or SPACY_HYBRIDNER_API_KEY)", settings.host,
        )
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then raises the signal again with the
    # handlers found at start; with these it returns instead of dying of it, so exit is 0.
    main_thread = threading.current_thread() is threading.main_thread()
    signals = (signal.SIGINT, signal.SIGTERM) if main_thread else ()
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in signals}
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failed:
        raise SystemExit(f"Could not serve {model!r}: {failed[0]}")
