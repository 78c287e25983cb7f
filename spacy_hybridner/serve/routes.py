"""The endpoints (an ``APIRouter`` that :func:`~spacy_hybridner.serve.app.create_app`
includes) and the reading of their request bodies.

A body is read by :func:`read_request`, in a worker thread (not by FastAPI, on the event
loop): its work is linear in the body's size, and the event loop goes on answering other
requests meanwhile. The endpoints find what they serve in ``request.app.state``: the
``batcher``, the ``settings``, the ``request_model`` and ``model_info`` (the pipeline's
:meth:`~spacy_hybridner.annotate.annotator.Annotator.info`, read once it is loaded).
"""

import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from ..annotate.annotator import filter_records
from .batcher import ClientGone, ModelError, NotReady, QueueFull
from .middleware import AsciiJSONResponse, is_json, json_type, validation_error_body
from .render import render_html
from .schemas import DOC_FIELDS, ERROR_RESPONSES, REQUEST_FIELDS, EntsResponse, RenderResponse

logger = logging.getLogger("spacy_hybridner.serve")

STATIC_DIR = Path(__file__).parent / "static"
MAX_NAMED_FIELDS = 5  # unknown fields named in a 422 (the rest are counted)
MAX_FIELD_CHARS = 64  # characters of an unknown field's name shown in a 422
MAX_LISTED_ERRORS = 20  # errors listed in a 422 (the rest are counted)


# --- reading a request body: bounded work, off the event loop -------------------------------


class BodyRefused(Exception):
    """A request body refused before it reaches the model: ``status`` and the JSON
    ``content`` of the answer (``{"detail": ...}``)."""

    def __init__(self, status: int, content: Dict[str, Any]) -> None:
        super().__init__(status)
        self.status = status
        self.content = content


def _not_utf8(detail: str) -> BodyRefused:
    return BodyRefused(
        400, {"detail": f"the body is not UTF-8 text: {detail}; send JSON encoded as UTF-8 (without a byte order mark)"}
    )


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
        errors.append(
            {
                "type": "extra_forbidden",
                "loc": [*loc, shown],
                "msg": f"unknown field{cut}: the fields are {', '.join(repr(f) for f in sorted(allowed))}",
            }
        )
    if count > len(errors):
        errors.append(
            {
                "type": "extra_forbidden",
                "loc": ["body"],
                "msg": f"{count} unknown fields in all; the first {len(errors)} are listed",
            }
        )
    return errors


def _bounded(errors: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """At most MAX_LISTED_ERRORS errors, and one that counts the others."""
    if len(errors) <= MAX_LISTED_ERRORS:
        return errors
    return errors[:MAX_LISTED_ERRORS] + [
        {
            "type": "too_many_errors",
            "loc": ["body"],
            "msg": f"{len(errors)} errors in all; the first {MAX_LISTED_ERRORS} are listed",
        }
    ]


def _not_an_object_msg(content_type: Optional[str], value: Any) -> str:
    if not is_json(content_type):
        sent = f"is {content_type!r}" if content_type else "is missing"
        return (
            f"the body must be a JSON object sent with 'Content-Type: application/json' (this request's "
            f"Content-Type {sent}; with curl, add -H 'Content-Type: application/json')"
        )
    return f'the body must be a JSON object such as {{"text": "..."}}, got a JSON {json_type(value)}'


def _decode_json(text: str) -> Any:
    """``json.loads``, its errors refused as FastAPI's 422 ``json_invalid``."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise BodyRefused(
            422,
            {
                "detail": [
                    {
                        "type": "json_invalid",
                        "loc": ["body", error.pos],
                        "msg": "JSON decode error",
                        "ctx": {"error": error.msg},
                    }
                ]
            },
        ) from None
    except RecursionError:
        raise BodyRefused(
            422,
            {
                "detail": [
                    {
                        "type": "json_invalid",
                        "loc": ["body"],
                        "msg": "JSON decode error",
                        "ctx": {"error": "arrays or objects nested too deeply"},
                    }
                ]
            },
        ) from None
    except ValueError as error:  # e.g. an integer of more digits than Python converts
        raise BodyRefused(
            422,
            {
                "detail": [
                    {
                        "type": "json_invalid",
                        "loc": ["body"],
                        "msg": "JSON decode error",
                        "ctx": {"error": str(error).split(":")[0][:200]},
                    }
                ]
            },
        ) from None


def read_request(raw: bytes, content_type: Optional[str], model: type, max_texts: int) -> Any:
    """Parse and validate a ``/v1/ents`` or ``/v1/render`` body: the server runs this in a
    worker thread, not on the event loop, and its work is linear in the body's size.

    raw (bytes): the body (at most --max-body-bytes: the middleware refused larger ones).
    content_type (Optional[str]): the request's Content-Type (JSON, or refused).
    model (type): the request model of :func:`~spacy_hybridner.serve.schemas.build_request_model`.
    max_texts (int): the limit on ``docs``, up to which each doc's fields are checked early.
    RETURNS: the validated request. Raises BodyRefused: 400 for a body that is not UTF-8;
        422 for anything else wrong, in FastAPI's format (``detail``: a list of ``loc``,
        ``msg``, ``type``; no input echoed), with unknown fields refused before pydantic and
        at most MAX_LISTED_ERRORS errors listed.
    """
    if not raw:
        raise BodyRefused(
            422,
            {
                "detail": [
                    {
                        "type": "missing",
                        "loc": ["body"],
                        "msg": 'the body is empty: send a JSON object such as {"text": "..."}',
                    }
                ]
            },
        )
    if not is_json(content_type):
        raise BodyRefused(
            422,
            {
                "detail": [
                    {"type": "model_attributes_type", "loc": ["body"], "msg": _not_an_object_msg(content_type, raw)}
                ]
            },
        )
    data = _decode_json(_decode_utf8(raw))
    if not isinstance(data, dict):
        raise BodyRefused(
            422,
            {
                "detail": [
                    {"type": "model_attributes_type", "loc": ["body"], "msg": _not_an_object_msg(content_type, data)}
                ]
            },
        )
    unknown = _unknown_field_errors(data, max_texts)
    if unknown:
        raise BodyRefused(422, {"detail": unknown})
    try:
        return model.model_validate(data)
    except ValidationError as error:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in error.errors(include_url=False)]
        raise BodyRefused(422, {"detail": _bounded(validation_error_body(errors, content_type)["detail"])}) from None


# --- the endpoints ------------------------------------------------------------------------

router = APIRouter()
GONE = "the client closed the connection before its answer"
# The body is read by read_request (in a worker thread), not by FastAPI (on the event
# loop); the schema is documented as FastAPI would.
REQUEST_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/AnnotateRequest"}}},
    }
}


def _unavailable(request: Request, error: NotReady) -> JSONResponse:
    detail = error.error or "the model is still loading: retry when GET /ready answers 200"
    retry_after = request.app.state.settings.retry_after_s
    return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": str(retry_after)})


async def _model_info(request: Request) -> Dict[str, Any]:
    info = request.app.state.model_info
    if not info:  # read once the worker has loaded the pipeline
        info.update(await run_in_threadpool(request.app.state.batcher.annotators[0].info))
    return info


async def _client_gone(request: Request) -> None:
    """Return once the client has gone (its connection closed). Called after the body was
    read: the server's next ``receive`` message is ``http.disconnect``, sent when the
    connection closes (or, once the answer is out, at once)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _annotate(request: Request) -> Union[JSONResponse, List[Dict[str, Any]]]:
    """The texts of a request and their entity records, or the answer that refuses it."""
    state = request.app.state
    settings = state.settings
    raw = await request.body()
    try:
        # JSON parsing and validation of up to --max-body-bytes in a worker thread: the
        # event loop goes on answering other requests meanwhile.
        body = await run_in_threadpool(
            read_request, raw, request.headers.get("content-type"), state.request_model, settings.max_texts
        )
    except BodyRefused as refused:
        return AsciiJSONResponse(refused.content, status_code=refused.status)
    if await request.is_disconnected():
        # The client left while its body was read or validated: it never reaches the queue.
        logger.info("Dropped a request (%d text(s)) whose client left before it was queued", len(body.items()))
        return JSONResponse({"detail": GONE}, status_code=499)
    items = body.items()
    try:
        results = await state.batcher.annotate([item["text"] for item in items], gone=_client_gone(request))
    except ClientGone:
        # Nobody reads this answer (the server drops it); the request never reached the model.
        return JSONResponse({"detail": GONE}, status_code=499)
    except NotReady as error:
        return _unavailable(request, error)
    except QueueFull:
        return JSONResponse(
            {
                "detail": f"the server is busy: {settings.queue_size} requests are already waiting for the model; "
                f"retry after {settings.retry_after_s} s"
            },
            status_code=503,
            headers={"Retry-After": str(settings.retry_after_s)},
        )
    except ModelError as error:
        return JSONResponse(
            {
                "detail": f"the model failed on this request; the server log has the traceback under error id "
                f"{error.error_id}",
                "error_id": error.error_id,
            },
            status_code=500,
        )
    return [
        {"id": item["id"], "text": item["text"], "ents": filter_records(records, body.min_confidence)}
        for item, records in zip(items, results)
    ]


def _public(docs: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    return [{"id": d["id"], "ents": d["ents"]} for d in docs]


@router.post(
    "/v1/ents", response_model=EntsResponse, responses=ERROR_RESPONSES, tags=["v1"], openapi_extra=REQUEST_BODY
)
async def ents(request: Request) -> Any:
    """The entities of each text: ``start_char``, ``end_char``, ``label``, ``text``,
    ``confidence``."""
    docs = await _annotate(request)
    if isinstance(docs, JSONResponse):
        return docs
    # Plain records, already the response model's shape: sent as they are (no second
    # validation per request; response_model documents the schema).
    return JSONResponse({"docs": _public(docs)})


@router.post(
    "/v1/render", response_model=RenderResponse, responses=ERROR_RESPONSES, tags=["v1"], openapi_extra=REQUEST_BODY
)
async def render(request: Request) -> Any:
    """displaCy's entity markup (``displacy.render(style="ent")``) of the texts, with the
    entities as in ``/v1/ents``."""
    docs = await _annotate(request)
    if isinstance(docs, JSONResponse):
        return docs
    html = await run_in_threadpool(render_html, docs, (await _model_info(request))["labels"])
    return JSONResponse({"html": html, "docs": _public(docs)})


@router.get("/v1/model", tags=["v1"])
async def model(request: Request) -> Any:
    """The loaded pipeline: name, version, language, pipes, labels, the scores in its
    meta.json, and the versions of spaCy and spacy-hybridner."""
    batcher = request.app.state.batcher
    if not batcher.ready:
        return _unavailable(request, NotReady(batcher.load_error))
    return await _model_info(request)


@router.get("/health", tags=["checks"])
async def health() -> Dict[str, str]:
    """200 while the process serves HTTP (the model may still be loading)."""
    return {"status": "ok"}


@router.get("/ready", tags=["checks"])
async def ready(request: Request) -> Any:
    """200 once the model is loaded and has answered a warm-up text, else 503."""
    batcher = request.app.state.batcher
    if not batcher.ready:
        return _unavailable(request, NotReady(batcher.load_error))
    return {"status": "ready"}


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html")
