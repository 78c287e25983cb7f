"""The FastAPI application: a JSON API under ``/v1``, health checks and a static page.

``create_app(annotator, settings)`` builds it around an
:class:`~spacy_hybridner.annotate.annotator.Annotator` (or a list of them);
:func:`~spacy_hybridner.serve.runner.serve` runs it with uvicorn. A pipeline is called from
its :class:`~spacy_hybridner.serve.batcher.Batcher` worker thread only; ``serve`` puts each
copy in a child process of its own
(:class:`~spacy_hybridner.serve.model_process.ProcessAnnotator`).
Nothing in a request names a file or a model: the pipeline is the one given at start-up.

The parts: :mod:`~spacy_hybridner.serve.schemas` (the request and response models),
:mod:`~spacy_hybridner.serve.routes` (the endpoints and the reading of their bodies),
:mod:`~spacy_hybridner.serve.middleware` (the API key, the body size, errors as JSON) and
:mod:`~spacy_hybridner.serve.runner` (uvicorn, the socket, the signals).
"""

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable, Dict, Optional

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from .batcher import Batcher
from .middleware import ApiKeyMiddleware, BodySizeMiddleware, JsonErrorMiddleware, validation_error_handler
from .routes import STATIC_DIR, router
from .schemas import build_request_model
from .settings import ServeSettings


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start the batcher's workers with the app, and stop them after it."""
    batcher = app.state.batcher
    batcher.start()  # loads in the background: /health answers at once, /ready when warm
    try:
        yield
    finally:
        await run_in_threadpool(batcher.stop)


def create_app(
    annotator: Any, settings: ServeSettings, on_load_error: Optional[Callable[[BaseException], None]] = None
) -> FastAPI:
    """Build the server around an annotator, or several copies of one.

    annotator: an :class:`~spacy_hybridner.annotate.annotator.Annotator` (or anything with ``load()``,
        ``annotate(texts)`` and ``info()``), loaded by the worker thread at start-up; or a
        list of them, one worker thread each (``/v1/model`` answers from the first).
    settings (ServeSettings): limits, batching, API key.
    on_load_error: called if the pipeline cannot be loaded (``serve`` stops the server then).
    RETURNS (FastAPI): the application. Its lifespan starts the worker (which loads the
        pipeline and answers a warm-up text: ``/ready`` is 503 until then) and stops it.
    """
    app = FastAPI(
        title="spacy-hybridner",
        summary="Named entities with confidences from a spaCy pipeline",
        lifespan=lifespan,
        docs_url=None,  # Swagger UI and ReDoc load scripts from a CDN; /openapi.json stays
        redoc_url=None,
    )
    # What the endpoints of routes.py serve.
    app.state.batcher = Batcher(
        annotator,
        queue_size=settings.queue_size,
        max_batch_texts=settings.max_batch_texts,
        batch_wait_ms=settings.batch_wait_ms,
        on_load_error=on_load_error,
    )
    app.state.settings = settings
    app.state.request_model = build_request_model(settings)
    app.state.model_info = {}
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    _add_request_schema(app, app.state.request_model)
    # The last added is the outermost: errors as JSON around everything, then the key
    # (checked before the body is read), then the size (before parsing).
    app.add_middleware(BodySizeMiddleware, max_bytes=settings.max_body_bytes)
    if settings.api_key is not None:
        app.add_middleware(ApiKeyMiddleware, api_key=settings.api_key)
    app.add_middleware(JsonErrorMiddleware)
    return app


def _add_request_schema(app: FastAPI, model: type) -> None:
    """Put the request model's JSON schema (and its ``Doc``) into the app's OpenAPI
    components, where the routes' ``requestBody`` refers to it."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas = {**schema.pop("$defs", {}), model.__name__: schema}
    openapi = app.openapi

    def openapi_with_request_schema() -> Dict[str, Any]:
        document = openapi()  # built once, then cached by FastAPI
        document.setdefault("components", {}).setdefault("schemas", {}).update(schemas)
        return document

    app.openapi = openapi_with_request_schema  # type: ignore[method-assign]


def __getattr__(name: str) -> Any:
    # serve (and its socket and uvicorn set-up) moved to runner, which imports create_app
    # from here: imported when asked for, so that neither module imports the other at load.
    if name in ("serve", "bind_socket", "server_config"):
        from . import runner

        return getattr(runner, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
