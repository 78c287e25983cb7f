"""The HTTP API (FastAPI's TestClient): same entities as nlp(text), every limit and error."""

import json
import re
import threading
import time

import pytest
import spacy
from fastapi.testclient import TestClient

from spacy_hybridner.annotate.annotator import Annotator
from spacy_hybridner.serve import ServeSettings, create_app

from conftest import TRAIN_DATA

TEXTS = [text for text, _ in TRAIN_DATA] + ["Tim Cook visited Berlin and Paris .", "Obama met Merkel in Kenya ."]
LIMITS = dict(max_texts=4, max_text_chars=200, max_body_bytes=4000)


@pytest.fixture(scope="module")
def nlp(model_dir):
    return spacy.load(model_dir)


def wait_ready(client: TestClient, timeout: float = 300.0, headers=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get("/ready", headers=headers).status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError("the server did not become ready")


@pytest.fixture(scope="module")
def client(model_dir):
    app = create_app(Annotator(str(model_dir)), ServeSettings(**LIMITS))
    with TestClient(app) as c:
        wait_ready(c)
        yield c


def expected_ents(nlp, text):
    return [(e.start_char, e.end_char, e.label_, e.text, e._.confidence) for e in nlp(text).ents]


def close_to(value):
    """A confidence as computed in another batch, thread count or machine: equal to rel 1e-5
    (float32 sums round differently in the last digits when the batch composition or the
    number of threads changes), and None stays None."""
    return None if value is None else pytest.approx(value, rel=1e-5, abs=1e-6)


def assert_same_records(got, expected):
    """Entity records (one list per text) from two runs: everything exactly but the
    confidences, which are compared with :func:`close_to`."""

    def without_confidence(docs):
        return [[{k: v for k, v in r.items() if k != "confidence"} for r in doc] for doc in docs]

    assert without_confidence(got) == without_confidence(expected)
    assert [[r["confidence"] for r in doc] for doc in got] == [
        [close_to(r["confidence"]) for r in doc] for doc in expected
    ]


def assert_same(got, expected):
    assert [(e["start_char"], e["end_char"], e["label"], e["text"]) for e in got] == [e[:4] for e in expected]
    assert [e["confidence"] for e in got] == [close_to(e[4]) for e in expected]


def post(client, path, body, **kwargs):
    return client.post(
        path,
        content=json.dumps(body) if not isinstance(body, bytes) else body,
        headers={"Content-Type": "application/json", **kwargs.pop("headers", {})},
        **kwargs,
    )


# --- answers -------------------------------------------------------------------------------


def test_one_text_gives_the_entities_of_nlp(client, nlp):
    for text in TEXTS:
        response = client.post("/v1/ents", json={"text": text})
        assert response.status_code == 200, response.text
        docs = response.json()["docs"]
        assert len(docs) == 1 and docs[0]["id"] is None
        assert_same(docs[0]["ents"], expected_ents(nlp, text))
    assert any(expected_ents(nlp, t) for t in TEXTS), "the tiny model should find entities"


def test_texts_and_docs_keep_order_and_ids(client, nlp):
    texts = TEXTS[:4]
    response = client.post("/v1/ents", json={"texts": texts})
    assert response.status_code == 200
    for doc, text in zip(response.json()["docs"], texts):
        assert doc["id"] is None
        assert_same(doc["ents"], expected_ents(nlp, text))
    ids = ["first", 2, "three", 4]
    response = client.post("/v1/ents", json={"docs": [{"id": i, "text": t} for i, t in zip(ids, reversed(texts))]})
    assert response.status_code == 200
    docs = response.json()["docs"]
    assert [d["id"] for d in docs] == ids
    for doc, text in zip(docs, reversed(texts)):
        assert_same(doc["ents"], expected_ents(nlp, text))


def test_min_confidence_drops_less_confident_entities(client, nlp):
    text = "Tim Cook visited Berlin and Paris ."
    everything = client.post("/v1/ents", json={"text": text}).json()["docs"][0]["ents"]
    confidences = sorted({e["confidence"] for e in everything})
    assert len(confidences) >= 2, "need entities of different confidence"
    # Halfway between the two highest: the same entities pass on any machine, even if the
    # second request's confidences differ from the first's in the last digits.
    threshold = (confidences[-1] + confidences[-2]) / 2
    kept = client.post("/v1/ents", json={"text": text, "min_confidence": threshold}).json()["docs"][0]["ents"]
    assert_same_records([kept], [[e for e in everything if e["confidence"] >= threshold]])
    assert 0 < len(kept) < len(everything)


def test_render_is_displacy_markup_with_confidences(client, nlp):
    text = "Tim Cook <visited> Berlin and Paris ."
    response = client.post("/v1/render", json={"docs": [{"id": "a", "text": text}, {"id": "b", "text": "Hi ."}]})
    assert response.status_code == 200
    body = response.json()
    assert [d["id"] for d in body["docs"]] == ["a", "b"]
    assert_same(body["docs"][0]["ents"], expected_ents(nlp, text))
    html = body["html"]
    assert html.count('<div class="entities"') == 2  # displaCy's ent container, one per text
    marks = re.findall(
        r'<mark class="entity" data-doc="(\d+)" data-ent="(\d+)" data-label="(\w+)" '
        r'data-confidence="([\d.]*)"',
        html,
    )
    ents = body["docs"][0]["ents"]
    assert len(marks) == len(ents) > 0
    for (doc, i, label, confidence), ent in zip(marks, ents):
        assert (doc, int(i), label) == ("0", ents.index(ent), ent["label"])
        assert float(confidence) == pytest.approx(ent["confidence"], abs=1e-6)
    assert "&lt;visited&gt;" in html and "<visited>" not in html  # displaCy escapes the text


def test_model_info(client, model_dir):
    response = client.get("/v1/model")
    assert response.status_code == 200
    info = response.json()
    assert info == json.loads(json.dumps(Annotator(str(model_dir)).info()))
    assert info["pipeline"] == ["ner"] and info["labels"] == ["LOC", "ORG", "PER"]
    assert info["spacy_version"] == spacy.__version__


def test_health_ready_and_page(client):
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {"status": "ready"}
    page = client.get("/")
    assert page.status_code == 200 and 'id="threshold"' in page.text
    for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text):
        assert client.get(asset).status_code == 200, asset
    assert "cdn" not in page.text.lower() and "https://" not in page.text


# --- bad input and limits ------------------------------------------------------------------


def assert_422_naming(client, body, loc):
    """Both endpoints answer ``body`` with a JSON 422 whose errors name the field ``loc``."""
    for path in ("/v1/ents", "/v1/render"):
        response = post(client, path, body)
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/json"
        errors = response.json()["detail"]
        assert any(e["loc"][: len(loc)] == loc for e in errors), errors


@pytest.mark.parametrize(
    "body,loc",
    [
        (b'{"text": "unterminated', ["body", 9]),  # where the JSON breaks
        ({"text": 5}, ["body", "text"]),
        ({"texts": "not a list"}, ["body", "texts"]),
        ({"texts": ["fine", 3]}, ["body", "texts", 1]),
        ({"docs": [{"id": "x", "text": None}]}, ["body", "docs", 0, "text"]),
        ({"docs": [{"id": [1], "text": "a"}]}, ["body", "docs", 0, "id"]),
        ({"text": "a", "min_confidence": "high"}, ["body", "min_confidence"]),
        ({"text": "a", "min_confidence": 1.5}, ["body", "min_confidence"]),
        ({"text": "a", "model": "/etc/passwd"}, ["body", "model"]),  # nothing in a request picks a model
        ({"texts": []}, ["body", "texts"]),
    ],
)
def test_wrong_input_is_422_naming_the_field(client, body, loc):
    assert_422_naming(client, body, loc)


@pytest.mark.parametrize("body", [{}, {"text": "a", "texts": ["b"]}, {"min_confidence": 0.5}])
def test_exactly_one_input_form(client, body):
    response = post(client, "/v1/ents", body)
    assert response.status_code == 422
    assert "exactly one of 'text', 'texts' or 'docs'" in response.json()["detail"][0]["msg"]


def test_too_many_texts(client):
    response = client.post("/v1/ents", json={"texts": ["a ."] * (LIMITS["max_texts"] + 1)})
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "texts"] and str(LIMITS["max_texts"]) in error["msg"]
    assert client.post("/v1/ents", json={"texts": ["a ."] * LIMITS["max_texts"]}).status_code == 200


def test_too_long_text_is_named(client):
    long_text = "word " * 41  # 205 characters, over the limit of 200
    response = client.post("/v1/ents", json={"docs": [{"id": 1, "text": "ok"}, {"id": 2, "text": long_text}]})
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "docs", 1, "text"] and "200 characters" in error["msg"]
    assert long_text not in response.text  # the input is not echoed back
    assert client.post("/v1/ents", json={"text": long_text[:200]}).status_code == 200


def test_body_too_large_is_413(client):
    big = {"texts": ["x" * 150] * 30}  # > 4000 bytes
    response = client.post("/v1/ents", json=big)
    assert response.status_code == 413
    assert "4000 bytes" in response.json()["detail"]
    # Without Content-Length (chunked), counted on the bytes that arrive.
    chunks = [b'{"texts": [', b'"' + b"y" * 2500 + b'",', b'"' + b"y" * 2500 + b'"]}']
    response = client.post("/v1/ents", content=iter(chunks), headers={"Content-Type": "application/json"})
    assert "content-length" not in response.request.headers
    assert response.status_code == 413 and "4000 bytes" in response.json()["detail"]
    small = [b'{"texts": [', b'"Tim Cook ."', b"]}"]
    assert client.post("/v1/ents", content=iter(small), headers={"Content-Type": "application/json"}).status_code == 200


# --- queue, failures, readiness: a stand-in for the model ----------------------------------


class StandIn:
    """A test double of Annotator: "block" waits for `release`; "BOOM" raises; else no entities."""

    def __init__(self, load_gate: threading.Event = None) -> None:
        self.load_gate = load_gate
        self.loading = threading.Event()  # set when load() begins
        self.started = threading.Event()
        self.release = threading.Event()
        self.batches = []

    def load(self):
        self.loading.set()
        if self.load_gate is not None:
            assert self.load_gate.wait(30)
        return self

    def annotate(self, texts):
        texts = list(texts)
        self.batches.append(texts)
        if any("block" in t for t in texts):
            self.started.set()
            assert self.release.wait(30)
        if any("BOOM" in t for t in texts):
            raise RuntimeError("the model broke")
        return [[{"start_char": 0, "end_char": len(t), "label": "X", "text": t, "confidence": 0.5}] for t in texts]

    def info(self):
        return {"labels": ["X"]}


def in_thread(fn, *args, **kwargs):
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("value", fn(*args, **kwargs)))
    thread.start()
    return thread, result


def wait_for(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the server"
        time.sleep(0.01)


def test_full_queue_is_503_with_retry_after():
    model = StandIn()
    app = create_app(model, ServeSettings(queue_size=1, batch_wait_ms=0))
    with TestClient(app) as client:
        wait_ready(client)
        first, first_result = in_thread(client.post, "/v1/ents", json={"text": "block"})
        assert model.started.wait(10)  # the worker holds the first request
        second, second_result = in_thread(client.post, "/v1/ents", json={"text": "queued"})
        wait_for(lambda: app.state.batcher.pending == 1)  # the second waits in the queue
        third = client.post("/v1/ents", json={"text": "refused"})
        assert third.status_code == 503
        assert third.headers["retry-after"] == "1"
        assert "busy" in third.json()["detail"]
        model.release.set()
        first.join(10)
        second.join(10)
        assert first_result["value"].status_code == 200
        assert second_result["value"].json()["docs"][0]["ents"][0]["text"] == "queued"
        assert client.post("/v1/ents", json={"text": "again"}).status_code == 200
    assert ["refused"] not in model.batches


def test_model_failure_is_500_with_logged_error_id_and_the_server_goes_on(caplog):
    model = StandIn()
    app = create_app(model, ServeSettings(queue_size=8, batch_wait_ms=0))
    with TestClient(app) as client, caplog.at_level("ERROR", logger="spacy_hybridner.serve"):
        wait_ready(client)
        response = client.post("/v1/ents", json={"text": "BOOM"})
        assert response.status_code == 500
        error_id = response.json()["error_id"]
        assert re.fullmatch(r"[0-9a-f]{32}", error_id) and error_id in response.json()["detail"]
        logged = [r for r in caplog.records if error_id in r.getMessage()]
        assert logged and "the model broke" in caplog.text and logged[0].exc_info is not None
        assert client.post("/v1/ents", json={"text": "fine"}).status_code == 200

        # A failing request batched with others fails alone: block the worker, queue both, release.
        first, first_result = in_thread(client.post, "/v1/ents", json={"text": "block"})
        assert model.started.wait(10)
        bad, bad_result = in_thread(client.post, "/v1/ents", json={"text": "BOOM again"})
        good, good_result = in_thread(client.post, "/v1/ents", json={"texts": ["good", "better"]})
        wait_for(lambda: app.state.batcher.pending == 2)
        model.release.set()
        for thread in (first, bad, good):
            thread.join(10)
        assert sorted(["BOOM again", "good", "better"]) in [sorted(b) for b in model.batches]  # one batch
        assert bad_result["value"].status_code == 500
        assert good_result["value"].status_code == 200
        assert [d["ents"][0]["text"] for d in good_result["value"].json()["docs"]] == ["good", "better"]


def test_not_ready_until_loaded_and_warmed_up():
    gate = threading.Event()
    model = StandIn(load_gate=gate)
    with TestClient(create_app(model, ServeSettings())) as client:
        assert client.get("/health").status_code == 200
        for path in ("/ready", "/v1/model"):
            response = client.get(path)
            assert response.status_code == 503 and response.headers["retry-after"] == "1"
        response = client.post("/v1/ents", json={"text": "early"})
        assert response.status_code == 503 and "loading" in response.json()["detail"]
        gate.set()
        wait_ready(client)
        assert model.batches[0] and "early" not in model.batches[0][0]  # the warm-up text came first
        assert client.post("/v1/ents", json={"text": "now"}).status_code == 200


def test_load_failure_is_reported():
    class Broken(StandIn):
        def load(self):
            raise OSError("[E050] Can't find model 'nowhere'")

    errors = []
    with TestClient(create_app(Broken(), ServeSettings(), on_load_error=errors.append)) as client:
        wait_for(lambda: errors)
        response = client.get("/ready")
        assert response.status_code == 503 and "E050" in response.json()["detail"]
        assert "E050" in client.post("/v1/ents", json={"text": "a"}).json()["detail"]


def test_model_workers_take_batches_in_turn():
    """With two copies of the model, a request is annotated while the other copy is busy."""
    first_model, second_model = StandIn(), StandIn()
    app = create_app([first_model, second_model], ServeSettings(queue_size=8, batch_wait_ms=0))
    with TestClient(app) as client:
        wait_ready(client)
        assert first_model.batches and second_model.batches  # both loaded and warmed up before ready
        blocked_request, blocked_result = in_thread(client.post, "/v1/ents", json={"text": "block"})
        wait_for(lambda: first_model.started.is_set() or second_model.started.is_set())
        busy, free = (first_model, second_model) if first_model.started.is_set() else (second_model, first_model)
        response = client.post("/v1/ents", json={"text": "meanwhile"})
        assert response.status_code == 200 and response.json()["docs"][0]["ents"][0]["text"] == "meanwhile"
        assert ["meanwhile"] in free.batches and ["meanwhile"] not in busy.batches
        busy.release.set()
        blocked_request.join(10)
        assert blocked_result["value"].json()["docs"][0]["ents"][0]["text"] == "block"


def test_not_ready_until_every_worker_loaded():
    gate = threading.Event()
    second = StandIn(load_gate=gate)
    app = create_app([StandIn(), second], ServeSettings())
    with TestClient(app) as client:
        # The first worker has loaded and warmed up; the second waits at the gate.
        wait_for(lambda: app.state.batcher.loaded == 1)
        assert second.loading.wait(10)
        assert client.get("/ready").status_code == 503
        gate.set()
        wait_ready(client)


def test_several_model_workers_need_model_processes(model_dir):
    from spacy_hybridner.serve.runner import serve

    with pytest.raises(SystemExit, match="--model-workers 2.*--model-process"):
        serve(str(model_dir), ServeSettings(), model_process=False, model_workers=2)


# --- API key -------------------------------------------------------------------------------


def test_api_key():
    key = "s3cret-key-0123"
    app = create_app(StandIn(), ServeSettings(api_key=key))
    good = {"X-API-Key": key}
    with TestClient(app) as client:
        wait_ready(client, headers=good)
        assert client.get("/health").status_code == 200  # open, for liveness probes
        assert client.get("/").status_code == 200  # the static page holds no data; it asks for the key
        for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}, {"Authorization": key}):
            for method, path in (
                ("post", "/v1/ents"),
                ("post", "/v1/render"),
                ("get", "/v1/model"),
                ("get", "/ready"),
                ("get", "/openapi.json"),
            ):
                extra = {"json": {"text": "a"}} if method == "post" else {}
                response = getattr(client, method)(path, headers=headers, **extra)
                assert response.status_code == 401, (headers, path)
                assert "X-API-Key" in response.json()["detail"]
                assert response.headers["www-authenticate"] == "Bearer"
        # 401 comes before the body is even parsed
        assert post(client, "/v1/ents", b"{not json").status_code == 401
        assert client.post("/v1/ents", json={"text": "a"}, headers=good).status_code == 200
        bearer = {"Authorization": f"Bearer {key}"}
        assert client.post("/v1/ents", json={"text": "a"}, headers=bearer).status_code == 200
        assert client.get("/v1/model", headers=good).status_code == 200


def test_settings_reject_nonsense():
    with pytest.raises(ValueError, match="max_texts"):
        ServeSettings(max_texts=0)
    with pytest.raises(ValueError, match="API key is empty"):
        ServeSettings(api_key=" ")
    with pytest.raises(ValueError, match="shutdown_timeout_s"):
        ServeSettings(shutdown_timeout_s=-1)
    assert ServeSettings().host == "127.0.0.1"


def test_each_label_of_a_pipeline_gets_its_own_colour():
    from spacy.displacy.render import DEFAULT_LABEL_COLORS

    from spacy_hybridner.serve.render import label_colors

    gmb = ["art", "eve", "geo", "gpe", "nat", "org", "per", "tim"]
    colors = label_colors(gmb)
    shown = [colors.get(label, DEFAULT_LABEL_COLORS.get(label.upper())) for label in gmb]
    assert len(set(shown)) == len(gmb)
    assert "gpe" not in colors and "org" not in colors  # displaCy's own colours are kept


# --- the command line ----------------------------------------------------------------------


def test_cli_refuses_what_it_cannot_serve(tmp_path):
    import subprocess
    import sys

    from spacy_hybridner.serve.process import ServerProcess

    result = subprocess.run(
        [sys.executable, "-m", "spacy_hybridner", "serve", str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "neither a folder nor an installed pipeline package" in result.stderr
    # A folder that is not a pipeline: the server starts, the model fails to load, it exits 1.
    server = ServerProcess(str(tmp_path), ["--no-access-log"])
    with pytest.raises(RuntimeError, match=r"exited with code 1(.|\n)*Could not serve(.|\n)*meta\.json"):
        with server:
            pass


# --- the model in a child process (serve's default) ----------------------------------------


def test_process_annotator_same_records_errors_and_restart(model_dir):
    import os
    import signal as signals

    from spacy_hybridner.serve.model_process import ModelProcessError, ProcessAnnotator

    expected = Annotator(str(model_dir)).annotate(TEXTS)
    model = ProcessAnnotator(Annotator(str(model_dir), torch_threads=1))
    try:
        got = model.load().annotate(TEXTS)
        assert_same_records(got, expected)
        assert model.info()["labels"] == ["LOC", "ORG", "PER"]
        first_pid = model.pid
        assert first_pid != os.getpid()
        with pytest.raises(ModelProcessError, match=r"raised in its process(.|\n)*Traceback"):
            model.annotate([None])  # the pipeline's own error, with the child's traceback
        # The same child goes on. One text alone is another batch than all of TEXTS: its
        # confidences may differ in the last digits (issue 25), so they are compared with a tolerance.
        assert_same_records(model.annotate(TEXTS[:1]), got[:1])
        assert model.pid == first_pid
        os.kill(first_pid, signals.SIGKILL)
        assert model.join(10) == -signals.SIGKILL
        assert model.annotate(TEXTS[:1])[0][0]["text"] == got[0][0]["text"]  # a new child took over
        assert model.pid not in (None, first_pid)
    finally:
        model.close()
    assert model.pid is None


# --- hostile input (issue 25): checked before the model, every error JSON ---------------------


@pytest.mark.parametrize(
    "body,loc",
    [
        (b'{"docs": [{"id": "\\ud800", "text": "a"}]}', ["body", "docs", 0, "id"]),
        (b'{"docs": [{"id": "ok", "text": "x\\udfff y"}]}', ["body", "docs", 0, "text"]),
        (b'{"text": "\\ud83d"}', ["body", "text"]),
        (b'{"texts": ["fine", "\\udc00"]}', ["body", "texts", 1]),
        (b'{"text": "a", "\\ud800": 1}', ["body"]),
        (b'{"text": "a", "min_confidence": true}', ["body", "min_confidence"]),
        (b'{"text": "a", "min_confidence": "0.5"}', ["body", "min_confidence"]),
        (b'{"text": "a", "min_confidence": NaN}', ["body", "min_confidence"]),
        (b'{"docs": [{"id": true, "text": "a"}]}', ["body", "docs", 0, "id"]),
        (b'{"docs": [{"id": 1.5, "text": "a"}]}', ["body", "docs", 0, "id"]),
    ],
)
def test_hostile_input_is_422_naming_the_field_before_the_model(body, loc):
    """Lone surrogates (valid JSON escapes, not Unicode), booleans and strings for numbers:
    a 422 naming the field, before anything reaches the model."""
    model = StandIn()
    with TestClient(create_app(model, ServeSettings())) as client:
        wait_ready(client)
        warm = len(model.batches)
        assert_422_naming(client, body, loc)
        assert len(model.batches) == warm  # the model saw none of it


def test_surrogate_message_says_what_is_wrong_and_valid_pairs_pass(client):
    response = post(client, "/v1/ents", b'{"docs": [{"id": "\\ud800", "text": "a"}]}')
    [error] = response.json()["detail"]
    assert "lone surrogate" in error["msg"] and "\\ud800" in error["msg"]
    # A pair of surrogates is one character (U+1F600): fine, in a text and an id.
    response = post(client, "/v1/ents", b'{"docs": [{"id": "\\ud83d\\ude00", "text": "Tim Cook \\ud83d\\ude00 ."}]}')
    assert response.status_code == 200 and response.json()["docs"][0]["id"] == "\U0001f600"


def test_min_confidence_takes_json_numbers_only(client):
    for value in (0, 1, 0.5):
        assert post(client, "/v1/ents", {"text": "Tim Cook .", "min_confidence": value}).status_code == 200
    for value in (True, False, "0.5", [0.5], -0.1):
        response = post(client, "/v1/ents", {"text": "Tim Cook .", "min_confidence": value})
        assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "min_confidence"]


def test_a_body_that_is_not_a_json_object_says_what_is_expected(client):
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        response = client.post("/v1/ents", content=b'{"text": "a"}', headers={"Content-Type": content_type})
        assert response.status_code == 422 and response.headers["content-type"] == "application/json"
        [error] = response.json()["detail"]
        assert "Content-Type: application/json" in error["msg"] and repr(content_type) in error["msg"]
    for body, kind in ((b"[1, 2]", "array"), (b'"text"', "string"), (b"3", "number"), (b"null", "null")):
        response = post(client, "/v1/ents", body)
        assert response.status_code == 422
        assert "must be a JSON object" in response.json()["detail"][0]["msg"]
        assert response.json()["detail"][0]["msg"].endswith(f"got a JSON {kind}")
    # application/*+json is JSON too
    response = client.post("/v1/ents", content=b'{"text": "a"}', headers={"Content-Type": "application/vnd.api+json"})
    assert response.status_code == 200


def test_an_unexpected_server_error_is_json_500_with_a_logged_error_id(caplog):
    class BrokenInfo(StandIn):
        def info(self):
            raise RuntimeError("info broke")

    with (
        TestClient(create_app(BrokenInfo(), ServeSettings()), raise_server_exceptions=False) as client,
        caplog.at_level("ERROR", logger="spacy_hybridner.serve"),
    ):
        wait_ready(client)
        response = client.get("/v1/model")
        assert response.status_code == 500 and response.headers["content-type"] == "application/json"
        error_id = response.json()["error_id"]
        assert error_id in response.json()["detail"]
        assert [r for r in caplog.records if error_id in r.getMessage() and r.exc_info is not None]
        assert client.get("/health").status_code == 200  # and the server goes on


# --- a model process that dies is logged (issue 25) ------------------------------------------


class DyingAnnotator:
    """Runs in a model process: "hold" creates ``holding`` (a file), then waits for ``gate``
    to exist; a batch of several texts with "DIE" among them kills its own process with
    SIGKILL (alone, "DIE" is annotated: each new process costs seconds of imports); else
    one entity per text."""

    model = "dying-stand-in"

    def __init__(self, gate: str, holding: str) -> None:
        self.gate = gate
        self.holding = holding

    def load(self):
        return self

    def info(self):
        return {"labels": ["X"]}

    def annotate(self, texts):
        import os
        import signal as signals
        from pathlib import Path

        texts = list(texts)
        if "hold" in texts:
            Path(self.holding).touch()
            deadline = time.monotonic() + 300
            while not Path(self.gate).exists() and time.monotonic() < deadline:
                time.sleep(0.01)
        if len(texts) > 1 and any("DIE" in t for t in texts):
            os.kill(os.getpid(), signals.SIGKILL)
        return [[{"start_char": 0, "end_char": len(t), "label": "X", "text": t, "confidence": 0.5}] for t in texts]


def test_a_model_process_that_dies_is_logged_restarted_and_its_batch_retried(tmp_path, caplog):
    from spacy_hybridner.serve.model_process import ProcessAnnotator

    gate, holding = tmp_path / "gate", tmp_path / "holding"
    model = ProcessAnnotator(DyingAnnotator(str(gate), str(holding)))
    app = create_app(model, ServeSettings(queue_size=8, batch_wait_ms=0))
    with TestClient(app) as client, caplog.at_level("INFO", logger="spacy_hybridner.serve"):
        wait_ready(client)
        first_pid = model.pid
        # Hold the model, queue a request that kills it and one that does not: one batch.
        held, held_result = in_thread(client.post, "/v1/ents", json={"text": "hold"})
        # Generous bounds: a new model process imports torch and spaCy, which takes
        # seconds on an idle machine and can take a minute on a loaded one.
        wait_for(holding.exists, timeout=120)  # the model process is inside "hold", alone
        dying, dying_result = in_thread(client.post, "/v1/ents", json={"text": "DIE now"})
        fine, fine_result = in_thread(client.post, "/v1/ents", json={"texts": ["fine", "too"]})
        wait_for(lambda: app.state.batcher.pending == 2, timeout=120)
        gate.touch()
        for thread in (held, dying, fine):
            thread.join(600)
            assert not thread.is_alive(), "a request got no answer"
        assert held_result["value"].status_code == 200
        assert fine_result["value"].status_code == 200  # retried on its own, in the new process
        assert [d["ents"][0]["text"] for d in fine_result["value"].json()["docs"]] == ["fine", "too"]
        assert dying_result["value"].status_code == 200  # alone, it is annotated
        assert model.pid not in (None, first_pid)
    log = caplog.text
    assert f"The model process {first_pid} died (killed by SIGKILL) while annotating a batch of 3 text(s)" in log
    assert "The model process died on a batch of 2 request(s) (3 text(s)); running each request again" in log
    assert f"Restarting the model: a new process replaces process {first_pid} (killed by SIGKILL)" in log
    model.close()


class DieOnceAnnotator:
    """Runs in a model process: a text with "DIE once" kills its process with SIGKILL the
    first time (``marker``, a file, records that it did), a text with "DIE always" every
    time; else one entity per text."""

    model = "die-once-stand-in"

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def load(self):
        return self

    def info(self):
        return {"labels": ["X"]}

    def annotate(self, texts):
        import os
        import signal as signals
        from pathlib import Path

        texts = list(texts)
        if any("DIE once" in t for t in texts) and not Path(self.marker).exists():
            Path(self.marker).touch()
            os.kill(os.getpid(), signals.SIGKILL)
        if any("DIE always" in t for t in texts):
            os.kill(os.getpid(), signals.SIGKILL)
        return [[{"start_char": 0, "end_char": len(t), "label": "X", "text": t, "confidence": 0.5}] for t in texts]


def test_a_lone_request_whose_model_process_died_is_run_again_in_a_new_process(tmp_path, caplog):
    """Issue 37, item 11: a batch of one request whose process dies is run again once, in
    the new process (200); one that kills that process too gets a 500, and the server goes on."""
    from spacy_hybridner.serve.model_process import ProcessAnnotator

    marker = tmp_path / "died"
    model = ProcessAnnotator(DieOnceAnnotator(str(marker)))
    app = create_app(model, ServeSettings(batch_wait_ms=0))
    try:
        with TestClient(app) as client, caplog.at_level("INFO", logger="spacy_hybridner.serve"):
            wait_ready(client)
            first_pid = model.pid
            response = client.post("/v1/ents", json={"text": "DIE once"})
            assert marker.exists()  # it did kill its process
            assert response.status_code == 200, response.text
            assert response.json()["docs"][0]["ents"][0]["text"] == "DIE once"
            second_pid = model.pid
            assert second_pid not in (None, first_pid)
            log = caplog.text
            assert f"The model process {first_pid} died (killed by SIGKILL) while annotating a batch of 1 text" in log
            assert "The model process died on a batch of 1 request(s) (1 text(s)); running each request again" in log
            assert f"Restarting the model: a new process replaces process {first_pid} (killed by SIGKILL)" in log

            response = client.post("/v1/ents", json={"text": "DIE always"})
            assert response.status_code == 500 and response.json()["error_id"] in response.json()["detail"]
            assert client.post("/v1/ents", json={"text": "fine"}).status_code == 200
            assert model.pid not in (None, first_pid, second_pid)
    finally:
        model.close()


def test_describe_exit():
    from spacy_hybridner.serve.model_process import describe_exit

    assert describe_exit(-9) == "killed by SIGKILL" and describe_exit(-15) == "killed by SIGTERM"
    assert describe_exit(1) == "exit code 1" and describe_exit(None) == "exit status unknown"
