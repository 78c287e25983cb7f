"""Fuzz the served API (issue 25): requests generated from its OpenAPI document by
schemathesis (valid ones and invalid ones: wrong types, unknown fields, bytes that are not
JSON) and, with Hypothesis, bodies of the right shape whose texts and ids hold what JSON
allows but Unicode does not (lone surrogates) and control characters. For every one: no
5xx, every error is JSON with a ``detail``, and nothing that is not Unicode text reaches the
model. A stand-in for the model keeps it fast; the examples are derandomized (the same in
every run) and bounded in number."""

import json

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from test_serve import StandIn, wait_ready

from spacy_hybridner.serve import ServeSettings, create_app

SETTINGS = ServeSettings(max_texts=4, max_text_chars=200, max_body_bytes=4000, queue_size=16, batch_wait_ms=0)
FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)


class Recording(StandIn):
    """The stand-in model, checking that every text it gets is Unicode text."""

    def annotate(self, texts):
        for text in texts:
            text.encode("utf8")  # raises (a 500 the fuzz would catch) on a lone surrogate
        return super().annotate(texts)


MODEL = Recording()
APP = create_app(MODEL, SETTINGS)
SCHEMA = schemathesis.openapi.from_dict(APP.openapi())


@pytest.fixture(scope="module")
def client():
    with TestClient(APP, raise_server_exceptions=False) as c:
        wait_ready(c)
        yield c


def assert_json_answer(response, request_summary) -> None:
    """No 5xx; every answer JSON; every error has a ``detail``."""
    assert response.status_code < 500, (request_summary, response.status_code, response.text[:500])
    assert response.headers.get("content-type", "").startswith("application/json"), (
        request_summary,
        response.status_code,
        response.headers,
        response.text[:500],
    )
    body = response.json()
    if response.status_code >= 400:
        assert "detail" in body, (request_summary, body)


def send(client, case):
    """A schemathesis case (as the keyword arguments of ``requests``) sent with the test client."""
    kwargs = case.as_transport_kwargs(base_url="http://testserver")
    if "json" in kwargs:
        content = json.dumps(kwargs["json"]).encode("ascii")  # as requests sends it
    else:
        data = kwargs.get("data", b"")
        content = data.encode("utf8") if isinstance(data, str) else (data or b"")
        if isinstance(data, dict):
            content = "&".join(f"{k}={v}" for k, v in data.items()).encode("utf8", "surrogatepass")
    headers = {k: v for k, v in kwargs["headers"].items() if k.lower() != "connection"}
    return client.request(
        kwargs["method"],
        kwargs["url"],
        headers=headers,
        params=kwargs.get("params") or None,
        cookies=kwargs.get("cookies") or None,
        content=content,
    )


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_schema_driven_fuzz_no_5xx_and_every_error_is_json(client, mode):
    seen = []

    @FUZZ
    @given(case=SCHEMA.as_strategy(mode))
    def run(case):
        response = send(client, case)
        seen.append(response.status_code)
        assert_json_answer(response, (case.method, case.path, case.media_type, repr(case.body)[:300]))

    run()
    assert len(seen) >= 50
    if mode is GenerationMode.NEGATIVE:
        assert any(400 <= status < 500 for status in seen)


# Strings that JSON can carry: ordinary text, control characters, BOMs, line separators,
# astral characters (a pair of surrogates in JSON), and lone surrogates (not Unicode).
PIECES = st.sampled_from(
    ["\ud800", "\udfff", "\ud83d", "\x00", "\x1b", "\u2028", "\ufeff", "\r\n\t", "\U0001f600", "Tim Cook", " ", "."]
)
HOSTILE = st.one_of(st.text(max_size=20), st.lists(PIECES, max_size=6).map("".join))
IDS = st.one_of(st.none(), st.integers(min_value=-(2**70), max_value=2**70), HOSTILE)
BODIES = st.one_of(
    st.fixed_dictionaries({"text": HOSTILE}),
    st.fixed_dictionaries({"texts": st.lists(HOSTILE, min_size=1, max_size=4)}),
    st.fixed_dictionaries(
        {"docs": st.lists(st.fixed_dictionaries({"id": IDS, "text": HOSTILE}), min_size=1, max_size=4)}
    ),
)


def is_unicode(value) -> bool:
    """Whether ``value``, sent as JSON, arrives as Unicode text: JSON decodes two escapes that
    form a surrogate pair (``"\\ud800\\udfff"``) to one character (U+103FF), so only a lone
    surrogate is not Unicode."""
    try:
        json.dumps(json.loads(json.dumps(value)), ensure_ascii=False).encode("utf8")
    except UnicodeEncodeError:
        return False
    return True


@FUZZ
@given(body=BODIES)
@example(body={"docs": [{"id": "\ud800", "text": "fine"}]})  # the id alone (issue 25: a 500 after the model ran)
@example(body={"docs": [{"id": 2**64, "text": "\x00\u2028"}, {"id": "a\udfffb", "text": "Tim Cook ."}]})
@example(body={"text": "\ud83d"})
@example(body={"texts": ["\U0001f600 Tim Cook", "\ufeff"]})
@example(body={"text": "\ud800\udfff"})  # two escapes that JSON decodes as one pair: U+103FF, Unicode
def test_texts_and_ids_that_are_not_unicode_are_422_before_the_model(client, body):
    """Sent as JSON escapes (``"\\ud800"``): valid JSON. Unicode text is annotated (200, with
    the ids back as sent); a lone surrogate anywhere is a 422 naming its field."""
    for path in ("/v1/ents", "/v1/render"):
        response = client.post(
            path, content=json.dumps(body).encode("ascii"), headers={"Content-Type": "application/json"}
        )
        assert_json_answer(response, body)
        if is_unicode(body):
            assert response.status_code == 200, (body, response.text)
            if "docs" in body:  # the ids back as sent (as JSON decodes them)
                sent = json.loads(json.dumps(body))
                assert [d["id"] for d in response.json()["docs"]] == [d["id"] for d in sent["docs"]]
        else:
            assert response.status_code == 422, (body, response.text)
            locs = [e["loc"] for e in response.json()["detail"]]
            assert all(loc[0] == "body" and len(loc) >= 2 for loc in locs), locs
