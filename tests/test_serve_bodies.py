"""How the server reads a request body (issue 37, items 2 and 13): in a worker thread, not on
the event loop; unknown fields refused before pydantic, with a bounded answer; and only
UTF-8 (no UTF-16 or UTF-32, no byte order mark), as docs/serving.md says."""

import asyncio
import json
import threading

import pytest
from fastapi.testclient import TestClient
from test_serve import StandIn, post, wait_ready

from spacy_hybridner.serve import ServeSettings, create_app, routes

N_UNKNOWN = 90_000


@pytest.fixture()
def served(monkeypatch):
    """A stand-in model behind the app; ``calls`` records, for each body the app reads, the
    thread that read it and whether an event loop runs in that thread; ``loop_thread`` is
    the thread of the app's event loop."""
    model = StandIn()
    app = create_app(model, ServeSettings())
    calls = []
    read_request = routes.read_request

    def recording(*args):
        try:
            asyncio.get_running_loop()
            on_a_loop = True
        except RuntimeError:
            on_a_loop = False
        calls.append((threading.get_ident(), on_a_loop))
        return read_request(*args)

    monkeypatch.setattr(routes, "read_request", recording)

    @app.get("/test/loop-thread")
    async def loop_thread():
        return {"ident": threading.get_ident()}

    with TestClient(app) as client:
        wait_ready(client)
        yield client, model, calls, client.get("/test/loop-thread").json()["ident"]


def many_unknown_fields(inside_docs: bool) -> bytes:
    fields = {f"{i:x}": 0 for i in range(N_UNKNOWN)}
    body = {"docs": [{"id": 1, "text": "a", **fields}]} if inside_docs else {"text": "a", **fields}
    return json.dumps(body, separators=(",", ":")).encode()


@pytest.mark.parametrize("inside_docs", [False, True], ids=["body", "docs"])
def test_many_unknown_fields_get_a_small_422_naming_them_read_off_the_event_loop(served, inside_docs):
    client, model, calls, loop_thread = served
    warm = len(model.batches)
    body = many_unknown_fields(inside_docs)
    assert len(body) < ServeSettings().max_body_bytes  # under the limit: the body is read
    response = post(client, "/v1/ents", body)
    assert response.status_code == 422 and response.headers["content-type"] == "application/json"
    assert len(response.content) < 2048, len(response.content)  # not one error per field
    errors = response.json()["detail"]
    where = ["body", "docs", 0] if inside_docs else ["body"]
    named = [e for e in errors if e["loc"][:-1] == where]
    assert [e["loc"][-1] for e in named] == ["0", "1", "2", "3", "4"]  # the first ones, in the order sent
    assert all(e["type"] == "extra_forbidden" and "unknown field" in e["msg"] for e in named)
    assert f"{N_UNKNOWN} unknown fields in all" in errors[-1]["msg"]
    assert len(model.batches) == warm
    # Parsed and validated in a worker thread, not in the event loop's.
    [(thread, on_a_loop)] = calls
    assert thread != loop_thread and not on_a_loop


def test_valid_bodies_are_read_off_the_event_loop_too(served):
    client, model, calls, loop_thread = served
    response = client.post("/v1/ents", json={"docs": [{"id": "a", "text": "Zoë in Zürich ."}]})
    assert response.status_code == 200 and response.json()["docs"][0]["ents"][0]["text"] == "Zoë in Zürich ."
    [(thread, on_a_loop)] = calls
    assert thread != loop_thread and not on_a_loop


def test_a_long_field_name_is_cut_in_the_answer(served):
    client, _, _, _ = served
    response = post(client, "/v1/ents", json.dumps({"text": "a", "k" * 100_000: 1}).encode())
    assert response.status_code == 422 and len(response.content) < 2048
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "k" * 64 + "..."] and "cut at 64 characters" in error["msg"]


def test_many_errors_are_listed_up_to_a_bound(served):
    client, _, _, _ = served
    response = client.post("/v1/ents", json={"docs": [{"id": [i], "text": i} for i in range(128)]})
    assert response.status_code == 422
    errors = response.json()["detail"]
    assert len(errors) == routes.MAX_LISTED_ERRORS + 1
    assert errors[0]["loc"][:3] == ["body", "docs", 0]
    assert "errors in all; the first 20 are listed" in errors[-1]["msg"]


@pytest.mark.parametrize(
    "body",
    [
        '{"text": "Zoë ."}'.encode("utf-16"),  # with a byte order mark
        '{"text": "Zoë ."}'.encode("utf-16-le"),  # without one: valid UTF-8, with NUL bytes
        '{"text": "Zoë ."}'.encode("utf-32"),
        '{"text": "Zoë ."}'.encode("utf-32-be"),
        '{"text": "Zoë ."}'.encode("utf-8-sig"),  # UTF-8 with a byte order mark
        '{"text": "Zoë ."}'.encode("latin-1"),  # ë is not UTF-8
        b'{"text": "\xed\xa0\x80"}',  # an encoded surrogate (CESU-8), not UTF-8
    ],
    ids=["utf-16", "utf-16-le", "utf-32", "utf-32-be", "utf-8-bom", "latin-1", "cesu-8"],
)
def test_a_body_that_is_not_utf8_is_400_before_the_model(served, body):
    client, model, _, _ = served
    warm = len(model.batches)
    for path in ("/v1/ents", "/v1/render"):
        response = post(client, path, body)
        assert response.status_code == 400, (path, response.text)
        assert response.headers["content-type"] == "application/json"
        assert "not UTF-8" in response.json()["detail"]
    assert len(model.batches) == warm
    # The same body in UTF-8 is fine.
    assert post(client, "/v1/ents", '{"text": "Zoë ."}'.encode()).status_code == 200


@pytest.mark.parametrize(
    "body,kind,loc",
    [
        (b"", "missing", ["body"]),
        (b"[" * 100_000, "json_invalid", ["body"]),  # nested too deeply for the parser
        (b'{"docs": [{"id": 1' + b"0" * 5000 + b', "text": "a"}]}', "json_invalid", ["body"]),  # too many digits
    ],
)
def test_bodies_json_cannot_read_are_422(served, body, kind, loc):
    client, _, _, _ = served
    response = post(client, "/v1/ents", body)
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["type"] == kind and error["loc"] == loc


def test_without_a_content_type_the_answer_says_it_is_missing(served):
    client, _, _, _ = served
    response = client.post("/v1/ents", content=b'{"text": "a"}')
    assert response.status_code == 422
    assert "Content-Type is missing" in response.json()["detail"][0]["msg"]
