"""The FastAPI application: a JSON API under ``/v1``, health checks and a static page.

``create_app(annotator, settings)`` builds it around an
:class:`~spacy_hybridner.annotate.annotator.Annotator` (or a list of them); :func:`serve` runs it with
uvicorn. A pipeline is called from its :class:`~spacy_hybridner.serve.batcher.Batcher` worker
thread only; :func:`serve` puts each copy in a child process of its own
(:class:`~spacy_hybridner.serve.model_process.ProcessAnnotator`).
Nothing in a request names a file or a model: the pipeline is the one given at start-up.
"""
import copy
import errno
import hmac
import json
import logging
import signal
import socket
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from typing_extensions import Annotated

from ..annotate.annotator import filter_records
from .batcher import Batcher, ClientGone, ModelError, NotReady, QueueFull
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

def _unicode_text(value: Any) -> Any:
    """Refuse a string that is not Unicode text: JSON can escape a lone surrogate
    (``"\\ud800"``), which Python decodes into a string that cannot be encoded as UTF-8 (nor
    sent back, nor stored)."""
    if isinstance(value, str):
        try:
            value.encode("utf8")
        except UnicodeEncodeError as error:
            raise ValueError(
                f"holds a lone surrogate ({ascii(value[error.start])} at character {error.start}), which is not a "
                "Unicode character: escape a character beyond U+FFFF as a pair of surrogates, or remove it"
            ) from None
    return value


def build_request_model(settings: ServeSettings) -> type:
    """The pydantic model of ``/v1/ents`` and ``/v1/render`` bodies, with the limits of
    ``settings`` (characters per text, texts per request) as validation constraints. Texts
    and ids must be Unicode text (no lone surrogates), ``min_confidence`` a JSON number."""
    Text = Annotated[StrictStr, Field(max_length=settings.max_text_chars), AfterValidator(_unicode_text)]
    Id = Annotated[Union[StrictStr, StrictInt], AfterValidator(_unicode_text)]

    class Doc(BaseModel):
        """A text with an id of your choosing, returned with its entities."""

        model_config = ConfigDict(extra="forbid")
        id: Optional[Id] = None
        text: Text

    class AnnotateRequest(BaseModel):
        """Exactly one of ``text``, ``texts`` or ``docs``; ``min_confidence`` drops entities
        whose confidence is lower (and those without one)."""

        model_config = ConfigDict(extra="forbid")
        text: Optional[Text] = None
        texts: Optional[List[Text]] = Field(None, min_length=1, max_length=settings.max_texts)
        docs: Optional[List[Doc]] = Field(None, min_length=1, max_length=settings.max_texts)
        min_confidence: Optional[StrictFloat] = Field(None, ge=0.0, le=1.0, allow_inf_nan=False)

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


# --- reading a request body: bounded work, off the event loop -------------------------------

REQUEST_FIELDS = frozenset(("text", "texts", "docs", "min_confidence"))
DOC_FIELDS = frozenset(("id", "text"))
MAX_NAMED_FIELDS = 5  # unknown fields named in a 422 (the rest are counted)
MAX_FIELD_CHARS = 64  # characters of an unknown field's name shown in a 422
MAX_LISTED_ERRORS = 20  # errors listed in a 422 (the rest are counted)


class BodyRefused(Exception):
    """A request body refused before it reaches the model: ``status`` and the JSON
    ``content`` of the answer (``{"detail": ...}``)."""

    def __init__(self, status: int, content: Dict[str, Any]) -> None:
        super().__init__(status)
        self.status = status
        self.content = content


def _not_utf8(detail: str) -> BodyRefused:
    return BodyRefused(400, {"detail": f"the body is not UTF-8 text: {detail}; send JSON encoded as UTF-8 "
                                       "(without a byte order mark)"})


def _decode_utf8(raw: bytes) -> str:
    """The body as text: UTF-8, strictly, without a byte order mark (RFC 8259: JSON sent
    over a network is UTF-8; ``json.loads`` of bytes would guess UTF-16 and UTF-32 too)."""
    if b"\x00" in raw:
        # A NUL byte is never part of JSON text (in a string it must be escaped as \u0000):
        # UTF-16 or UTF-32, even without a byte order mark.
        raise _not_utf8(f"it holds a NUL byte (at byte {raw.index(0)}), as UTF-16 and UTF-32 do")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _not_utf8(f"byte {error.start} (0x{raw[error.start]:02x}) cannot be decoded") from None
    if text.startswith("\ufeff"):
        raise _not_utf8("it starts with a byte order mark")
    return text


def _unknown_field_errors(data: Dict[str, Any], max_texts: int) -> List[Dict[str, Any]]:
    """422 errors for unknown fields (of the body and of each of its ``docs``), found before
    pydantic, which would build one error per field: at most MAX_NAMED_FIELDS are named
    (names cut at MAX_FIELD_CHARS characters), and one more error counts them all."""
    found: List[Tuple[List[Any], str]] = []
    count = 0

    def collect(obj: Dict[str, Any], allowed: frozenset, loc: List[Any]) -> None:
        nonlocal count
        unknown = obj.keys() - allowed  # a set operation: no Python loop over the keys
        if not unknown:
            return
        count += len(unknown)
        for key in obj:  # the first few in the order sent
            if len(found) >= MAX_NAMED_FIELDS:
                break
            if key in unknown:
                found.append((loc, key))

    collect(data, REQUEST_FIELDS, ["body"])
    docs = data.get("docs")
    if isinstance(docs, list) and len(docs) <= max_texts:  # a longer list is refused as too long
        for i, doc in enumerate(docs):
            if isinstance(doc, dict):
                collect(doc, DOC_FIELDS, ["body", "docs", i])
    errors: List[Dict[str, Any]] = []
    for loc, key in found:
        allowed = DOC_FIELDS if len(loc) > 1 else REQUEST_FIELDS
        shown = key if len(key) <= MAX_FIELD_CHARS else key[:MAX_FIELD_CHARS] + "..."
        cut = f" (its name cut at {MAX_FIELD_CHARS} characters)" if shown != key else ""
        errors.append({
            "type": "extra_forbidden", "loc": [*loc, shown],
            "msg": f"unknown field{cut}: the fields are {', '.join(repr(f) for f in sorted(allowed))}",
        })
    if count > len(errors):
        errors.append({
            "type": "extra_forbidden", "loc": ["body"],
            "msg": f"{count} unknown fields in all; the first {len(errors)} are listed",
        })
    return errors


def _bounded(errors: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """At most MAX_LISTED_ERRORS errors, and one that counts the others."""
    if len(errors) <= MAX_LISTED_ERRORS:
        return errors
    return errors[:MAX_LISTED_ERRORS] + [{
        "type": "too_many_errors", "loc": ["body"],
        "msg": f"{len(errors)} errors in all; the first {MAX_LISTED_ERRORS} are listed",
    }]


def _not_an_object_msg(content_type: Optional[str], value: Any) -> str:
    if not _is_json(content_type):
        sent = f"is {content_type!r}" if content_type else "is missing"
        return (f"the body must be a JSON object sent with 'Content-Type: application/json' (this request's "
                f"Content-Type {sent}; with curl, add -H 'Content-Type: application/json')")
    return f'the body must be a JSON object such as {{"text": "..."}}, got a JSON {_json_type(value)}'


def read_request(raw: bytes, content_type: Optional[str], model: type, max_texts: int) -> Any:
    """Parse and validate a ``/v1/ents`` or ``/v1/render`` body: the server runs this in a
    worker thread, not on the event loop, and its work is linear in the body's size.

    raw (bytes): the body (at most --max-body-bytes: the middleware refused larger ones).
    content_type (Optional[str]): the request's Content-Type (JSON, or refused).
    model (type): the request model of :func:`build_request_model`.
    max_texts (int): the limit on ``docs``, up to which each doc's fields are checked early.
    RETURNS: the validated request. Raises BodyRefused: 400 for a body that is not UTF-8;
        422 for anything else wrong, in FastAPI's format (``detail``: a list of ``loc``,
        ``msg``, ``type``; no input echoed), with unknown fields refused before pydantic and
        at most MAX_LISTED_ERRORS errors listed.
    """
    if not raw:
        raise BodyRefused(422, {"detail": [{
            "type": "missing", "loc": ["body"], "msg": 'the body is empty: send a JSON object such as {"text": "..."}',
        }]})
    if not _is_json(content_type):
        raise BodyRefused(422, {"detail": [{
            "type": "model_attributes_type", "loc": ["body"], "msg": _not_an_object_msg(content_type, raw),
        }]})
    text = _decode_utf8(raw)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise BodyRefused(422, {"detail": [{
            "type": "json_invalid", "loc": ["body", error.pos], "msg": "JSON decode error", "ctx": {"error": error.msg},
        }]}) from None
    except RecursionError:
        raise BodyRefused(422, {"detail": [{
            "type": "json_invalid", "loc": ["body"], "msg": "JSON decode error",
            "ctx": {"error": "arrays or objects nested too deeply"},
        }]}) from None
    except ValueError as error:  # e.g. an integer of more digits than Python converts
        raise BodyRefused(422, {"detail": [{
            "type": "json_invalid", "loc": ["body"], "msg": "JSON decode error",
            "ctx": {"error": str(error).split(":")[0][:200]},
        }]}) from None
    if not isinstance(data, dict):
        raise BodyRefused(422, {"detail": [{
            "type": "model_attributes_type", "loc": ["body"], "msg": _not_an_object_msg(content_type, data),
        }]})
    unknown = _unknown_field_errors(data, max_texts)
    if unknown:
        raise BodyRefused(422, {"detail": unknown})
    try:
        return model.model_validate(data)
    except ValidationError as error:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in error.errors(include_url=False)]
        raise BodyRefused(422, {"detail": _bounded(_validation_error_body(errors, content_type)["detail"])}) from None


ERROR_RESPONSES: Dict[Union[int, str], Dict[str, Any]] = {
    400: {"description": "A body that is not UTF-8 (UTF-16 or UTF-32, a byte order mark, bytes that do not "
                         "decode), bytes that are not HTTP, or a bad Content-Length"},
    401: {"description": "No or a wrong API key (when the server has one)"},
    408: {"description": "The whole request did not arrive within --receive-timeout seconds"},
    413: {"description": "Request body larger than --max-body-bytes"},
    422: {"description": "Malformed JSON, not a JSON object (or not sent as application/json), wrong types, unknown "
                         "fields, text that is not Unicode, too many texts or too long a text; `detail` lists each "
                         "problem with the `loc` of its field"},
    431: {"description": "Request line and headers larger than --max-header-bytes"},
    500: {"description": "The model (or the server) failed on this request: `error_id` names the logged traceback"},
    503: {"description": "Queue full or model still loading; see Retry-After"},
}


class AsciiJSONResponse(JSONResponse):
    """JSON with every non-ASCII character escaped: for error bodies, which may name a field
    the client sent (an unknown key), and a key may hold a lone surrogate that UTF-8 cannot
    encode (the escape is the JSON the client sent)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


# --- ASGI middleware: errors as JSON, API key and body size, before any parsing -----------

async def _send_json(
    scope: Dict, receive: Callable, send: Callable, status: int, content: Dict[str, Any],
    headers: Optional[Dict[str, str]] = None,
) -> None:
    await JSONResponse(content, status_code=status, headers=headers)(scope, receive, send)


class JsonErrorMiddleware:
    """The outermost layer: an exception that nothing else answered becomes a JSON 500 with
    an ``error_id`` (logged once with its traceback under that id), never Starlette's or
    uvicorn's plain-text "Internal Server Error"."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched_send(message: Dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        except Exception:  # noqa: BLE001 - answered as JSON and logged under an id
            error_id = uuid.uuid4().hex
            logger.exception(
                "The server failed on %s %s; error id %s", scope.get("method"), scope.get("path"), error_id,
            )
            if not started:
                await _send_json(scope, receive, send, 500, {
                    "detail": f"the server failed on this request; its log has the traceback under error id {error_id}",
                    "error_id": error_id,
                })


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

def _is_json(content_type: Optional[str]) -> bool:
    """A body is read as JSON with Content-Type application/json or application/*+json (as
    FastAPI does; not without a Content-Type)."""
    if not content_type:
        return False
    media = content_type.split(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def _json_type(value: Any) -> str:
    for kind, name in ((bool, "boolean"), ((int, float), "number"), (str, "string"), (list, "array"),
                       (type(None), "null")):
        if isinstance(value, kind):
            return name
    return type(value).__name__


def _validation_error_body(errors: List[Dict[str, Any]], content_type: Optional[str] = None) -> Dict[str, Any]:
    """FastAPI's 422 body (``detail``: a list with ``loc``, ``msg``, ``type``) without the
    echo of the input, which could be a whole long text. A body that is not a JSON object
    gets a message that says what is expected (and which Content-Type it came with)."""
    detail = []
    for raw, error in zip(errors, jsonable_encoder(errors, custom_encoder={bytes: lambda b: None})):
        if list(error.get("loc", ())) == ["body"] and error.get("type") in ("model_attributes_type", "dict_type"):
            if not _is_json(content_type):
                error["msg"] = (
                    f"the body must be a JSON object sent with 'Content-Type: application/json' (this request's "
                    f"Content-Type is {content_type!r}; with curl, add -H 'Content-Type: application/json')"
                )
            else:
                error["msg"] = (
                    'the body must be a JSON object such as {"text": "..."}, got a JSON '
                    f"{_json_type(raw.get('input'))}"
                )
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

    annotator: an :class:`~spacy_hybridner.annotate.annotator.Annotator` (or anything with ``load()``,
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
        body = _validation_error_body(list(exc.errors()), request.headers.get("content-type"))
        return AsciiJSONResponse(body, status_code=422)

    def _unavailable(error: NotReady) -> JSONResponse:
        detail = error.error or "the model is still loading: retry when GET /ready answers 200"
        return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": str(settings.retry_after_s)})

    async def _annotate(request: Request) -> Union[JSONResponse, List[Dict[str, Any]]]:
        raw = await request.body()
        try:
            # JSON parsing and validation of up to --max-body-bytes in a worker thread: the
            # event loop goes on answering other requests meanwhile.
            body = await run_in_threadpool(
                read_request, raw, request.headers.get("content-type"), AnnotateRequest, settings.max_texts,
            )
        except BodyRefused as refused:
            return AsciiJSONResponse(refused.content, status_code=refused.status)
        if await request.is_disconnected():
            # The client left while its body was read or validated: it never reaches the queue.
            logger.info("Dropped a request (%d text(s)) whose client left before it was queued", len(body.items()))
            return JSONResponse({"detail": "the client closed the connection before its answer"}, status_code=499)
        items = body.items()
        try:
            results = await batcher.annotate([item["text"] for item in items], gone=_client_gone(request))
        except ClientGone:
            # Nobody reads this answer (the server drops it); the request never reached the model.
            return JSONResponse({"detail": "the client closed the connection before its answer"}, status_code=499)
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

    # The body is read by read_request (in a worker thread), not by FastAPI (on the event
    # loop); the schema is documented as FastAPI would.
    request_body = {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/AnnotateRequest"}}}}}

    @app.post("/v1/ents", response_model=EntsResponse, responses=ERROR_RESPONSES, tags=["v1"],
              openapi_extra=request_body)
    async def ents(request: Request) -> Any:
        """The entities of each text: ``start_char``, ``end_char``, ``label``, ``text``,
        ``confidence``."""
        docs = await _annotate(request)
        if isinstance(docs, JSONResponse):
            return docs
        # Plain records, already the response model's shape: sent as they are (no second
        # validation per request; response_model documents the schema).
        return JSONResponse({"docs": _public(docs)})

    @app.post("/v1/render", response_model=RenderResponse, responses=ERROR_RESPONSES, tags=["v1"],
              openapi_extra=request_body)
    async def render(request: Request) -> Any:
        """displaCy's entity markup (``displacy.render(style="ent")``) of the texts, with the
        entities as in ``/v1/ents``."""
        docs = await _annotate(request)
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
    _add_request_schema(app, AnnotateRequest)
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


async def _client_gone(request: Request) -> None:
    """Return once the client has gone (its connection closed). Called after the body was
    read: the server's next ``receive`` message is ``http.disconnect``, sent when the
    connection closes (or, once the answer is out, at once)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _log_config(level: str) -> Dict[str, Any]:
    """uvicorn's logging set-up, with the server's own logger on uvicorn's handler."""
    from uvicorn.config import LOGGING_CONFIG

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
        raise SystemExit(f"Cannot listen on {host}:{port}: {host!r} is not an address of this machine ({error}); "
                         "give --host an IP address such as 127.0.0.1") from None
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
    import uvicorn

    from .protocol import bounded_protocol

    return uvicorn.Config(
        app, host=settings.host, port=settings.port,
        log_config=_log_config(settings.log_level) if configure_logging else None,
        log_level=settings.log_level, access_log=settings.access_log, lifespan="on",
        http=bounded_protocol(settings.max_header_bytes, settings.receive_timeout_s), ws="none",
        timeout_graceful_shutdown=settings.shutdown_timeout_s,
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

    from ..annotate.annotator import Annotator
    from .server import GracefulServer, stop_signals

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
    # Bind before the models load: a taken port fails at once, not after minutes of loading.
    sock = bind_socket(settings.host, settings.port)
    annotator: Any = Annotator(model, batch_size=batch_size, torch_threads=torch_threads, gpu_id=gpu_id)
    if model_process:
        from .model_process import ProcessAnnotator

        annotator = [ProcessAnnotator(annotator) for _ in range(model_workers)]
    failed: List[BaseException] = []
    server: Optional[GracefulServer] = None

    def stop_on_load_error(error: BaseException) -> None:
        failed.append(error)
        if server is not None:
            server.should_exit = True

    app = create_app(annotator, settings, on_load_error=stop_on_load_error)
    server = GracefulServer(server_config(app, settings))
    host, port = sock.getsockname()[:2]
    how = "Ctrl-C or SIGTERM to stop" if signal.SIGINT in stop_signals() else (
        "SIGTERM to stop; SIGINT is ignored, as it was when the process started")
    logger.info("Listening on http://%s:%d (%s)", f"[{host}]" if ":" in host else host, port, how)
    if settings.host not in ("127.0.0.1", "localhost", "::1") and settings.api_key is None:
        logger.warning(
            "Listening on %s without an API key: anyone who can reach this host can use the model "
            "(set --api-key or SPACY_HYBRIDNER_API_KEY)", settings.host,
        )
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    if failed:
        raise SystemExit(f"Could not serve {model!r}: {failed[0]}")
