"""What the server answers before, around and instead of the endpoints: the ASGI middlewares
(errors as JSON, the API key, the body size: each before any parsing) and the rewriting of
validation errors into FastAPI's 422 format, without the echo of the input."""

import hmac
import json
import logging
import uuid
from typing import Any, Callable, Dict, List, Optional

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

logger = logging.getLogger("spacy_hybridner.serve")

OPEN_PATHS = ("/health", "/", "/favicon.ico")  # no API key needed (the page holds no data)
OPEN_PREFIXES = ("/static/",)


class AsciiJSONResponse(JSONResponse):
    """JSON with every non-ASCII character escaped: for error bodies, which may name a field
    the client sent (an unknown key), and a key may hold a lone surrogate that UTF-8 cannot
    encode (the escape is the JSON the client sent)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


# --- the 422 body: FastAPI's format, without the input ------------------------------------


def is_json(content_type: Optional[str]) -> bool:
    """A body is read as JSON with Content-Type application/json or application/*+json (as
    FastAPI does; not without a Content-Type)."""
    if not content_type:
        return False
    media = content_type.split(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type: null, boolean, number, string or array."""
    for kind, name in (
        (bool, "boolean"),
        ((int, float), "number"),
        (str, "string"),
        (list, "array"),
        (type(None), "null"),
    ):
        if isinstance(value, kind):
            return name
    return type(value).__name__


def validation_error_body(errors: List[Dict[str, Any]], content_type: Optional[str] = None) -> Dict[str, Any]:
    """FastAPI's 422 body (``detail``: a list with ``loc``, ``msg``, ``type``) without the
    echo of the input, which could be a whole long text. A body that is not a JSON object
    gets a message that says what is expected (and which Content-Type it came with)."""
    detail = []
    for raw, error in zip(errors, jsonable_encoder(errors, custom_encoder={bytes: lambda b: None})):
        if list(error.get("loc", ())) == ["body"] and error.get("type") in ("model_attributes_type", "dict_type"):
            if not is_json(content_type):
                error["msg"] = (
                    f"the body must be a JSON object sent with 'Content-Type: application/json' (this request's "
                    f"Content-Type is {content_type!r}; with curl, add -H 'Content-Type: application/json')"
                )
            else:
                error["msg"] = (
                    'the body must be a JSON object such as {"text": "..."}, got a JSON '
                    f"{json_type(raw.get('input'))}"
                )
        error = {k: v for k, v in error.items() if k not in ("input", "url")}
        if not isinstance(error.get("ctx", {}).get("error", ""), str):  # an exception, already in "msg"
            error["ctx"] = {k: v for k, v in error["ctx"].items() if k != "error"}
            if not error["ctx"]:
                del error["ctx"]
        detail.append(error)
    return {"detail": detail}


async def validation_error_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
    """The app's handler of FastAPI's RequestValidationError: :func:`validation_error_body`, as ASCII JSON."""
    body = validation_error_body(list(exc.errors()), request.headers.get("content-type"))
    return AsciiJSONResponse(body, status_code=422)


# --- ASGI middleware: errors as JSON, API key and body size, before any parsing -----------


async def _send_json(
    scope: Dict,
    receive: Callable,
    send: Callable,
    status: int,
    content: Dict[str, Any],
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
                "The server failed on %s %s; error id %s", scope.get("method"), scope.get("path"), error_id
            )
            if not started:
                await _send_json(
                    scope,
                    receive,
                    send,
                    500,
                    {
                        "detail": "the server failed on this request; its log has the traceback under "
                        f"error id {error_id}",
                        "error_id": error_id,
                    },
                )


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
            await _send_json(
                scope,
                receive,
                send,
                401,
                {
                    "detail": f"{what}: send the server's key as the header 'X-API-Key: KEY' or "
                    "'Authorization: Bearer KEY'"
                },
                {"WWW-Authenticate": "Bearer"},
            )
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
