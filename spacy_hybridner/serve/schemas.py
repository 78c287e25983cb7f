"""The API's pydantic models: the fixed response models, the request model (built with the
configured limits, so that they are in the OpenAPI schema) and the error answers each
endpoint documents."""

from typing import Any, Dict, List, Optional, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, model_validator
from typing_extensions import Annotated

from .settings import ServeSettings

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


ERROR_RESPONSES: Dict[Union[int, str], Dict[str, Any]] = {
    400: {
        "description": "A body that is not UTF-8 (UTF-16 or UTF-32, a byte order mark, bytes that do not "
        "decode), bytes that are not HTTP, or a bad Content-Length"
    },
    401: {"description": "No or a wrong API key (when the server has one)"},
    408: {"description": "The whole request did not arrive within --receive-timeout seconds"},
    413: {"description": "Request body larger than --max-body-bytes"},
    422: {
        "description": "Malformed JSON, not a JSON object (or not sent as application/json), wrong types, unknown "
        "fields, text that is not Unicode, too many texts or too long a text; `detail` lists each "
        "problem with the `loc` of its field"
    },
    431: {"description": "Request line and headers larger than --max-header-bytes"},
    500: {"description": "The model (or the server) failed on this request: `error_id` names the logged traceback"},
    503: {"description": "Queue full or model still loading; see Retry-After"},
}


# --- request models (built with the configured limits, so they are in the OpenAPI schema) --

REQUEST_FIELDS = frozenset(("text", "texts", "docs", "min_confidence"))  # the fields of AnnotateRequest
DOC_FIELDS = frozenset(("id", "text"))  # the fields of its Doc


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
                raise ValueError(f"give exactly one of 'text', 'texts' or 'docs' (got {', '.join(given) or 'none'})")
            return self

        def items(self) -> List[Dict[str, Any]]:
            """The input as ``[{"id": ..., "text": ...}]`` in order."""
            if self.text is not None:
                return [{"id": None, "text": self.text}]
            if self.texts is not None:
                return [{"id": None, "text": t} for t in self.texts]
            return [{"id": d.id, "text": d.text} for d in self.docs]

    return AnnotateRequest
