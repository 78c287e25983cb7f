"""A hostile client against the real HTTP server on loopback (uvicorn with the server's
bounded protocol, in a thread of this process, on a port the OS picks): oversized headers
(431), requests that never finish arriving (408), idle connections, clients that leave
before their answer (their requests never reach the model), and a taken port (the server
fails at once, before it loads anything). Each test is bounded in time."""

import json
import re
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
import uvicorn
from test_serve import StandIn, wait_for

from spacy_hybridner.serve import ServeSettings, create_app
from spacy_hybridner.serve.runner import bind_socket, server_config

KEY = "loopback-key-0123"


class ThreadedServer:
    """``create_app(model, settings)`` served by uvicorn (``server_config``: the bounded
    protocol) in a thread, on a free loopback port; a context manager."""

    def __init__(self, model, **settings) -> None:
        self.settings = ServeSettings(access_log=False, **settings)
        self.app = create_app(model, self.settings)
        self.sock = bind_socket("127.0.0.1", 0)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = server_config(self.app, self.settings, configure_logging=False)
        config.timeout_graceful_shutdown = 5
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> "ThreadedServer":
        self.thread.start()
        headers = {"X-API-Key": self.settings.api_key} if self.settings.api_key else {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/ready", headers=headers, timeout=5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.__exit__()
        raise AssertionError("the server was not ready within 30 s")

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()
        assert not self.thread.is_alive(), "the server did not stop"


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def read_answer(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """Everything the server sends until it closes the connection (bounded by ``timeout``)."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


def parse(answer: bytes):
    """(status, headers, JSON body) of one HTTP/1.1 answer."""
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    return status, headers, json.loads(body)


def request_head(length: int, extra: str = "", path: str = "/v1/ents") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n{extra}\r\n"
    ).encode("latin-1")


# --- header size: 431 before anything else ------------------------------------------------


def test_oversized_headers_are_431_json_before_auth_and_cheap():
    model = StandIn()
    limit = 4096
    with ThreadedServer(model, api_key=KEY, max_header_bytes=limit) as server:
        warm = len(model.batches)
        # 8 MiB of one header, streamed: refused after the first `limit` bytes, at once.
        started = time.monotonic()
        sock = connect(server.port)
        sock.sendall(b"GET /v1/model HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
        sent = 0
        try:
            for _ in range(128):
                sock.sendall(b"a" * 65536)
                sent += 65536
        except OSError:  # the server closed the connection: what we expect
            pass
        answer = read_answer(sock)
        sock.close()
        elapsed = time.monotonic() - started
        status, headers, body = parse(answer)
        assert status == 431, answer[:300]
        assert headers["content-type"] == "application/json" and headers["connection"] == "close"
        assert f"at most {limit} bytes" in body["detail"] and "--max-header-bytes" in body["detail"]
        assert elapsed < 10, f"431 took {elapsed:.1f} s"
        # Many small headers add up the same way (the request line and all headers count).
        sock = connect(server.port)
        many = "".join(f"X-H{i}: {'v' * 40}\r\n" for i in range(200))  # ~9 KB
        sock.sendall(request_head(2, many) + b"{}")
        assert parse(read_answer(sock))[0] == 431
        sock.close()
        # Under the limit, the same server goes on: 401 without the key, 200 with it.
        fine = httpx.post(server.url + "/v1/ents", json={"text": "fine"}, headers={"X-Pad": "p" * 2000})
        assert fine.status_code == 401
        fine = httpx.post(server.url + "/v1/ents", json={"text": "fine"}, headers={"X-API-Key": KEY})
        assert fine.status_code == 200
        assert model.batches[warm:] == [["fine"]]  # nothing of the refused requests reached the model


def test_bytes_that_are_not_http_get_a_json_400():
    with ThreadedServer(StandIn()) as server:
        sock = connect(server.port)
        sock.sendall(b"\x16\x03\x01 this is not HTTP\r\n\r\n")
        status, headers, body = parse(read_answer(sock))
        sock.close()
        assert status == 400 and headers["content-type"] == "application/json" and "HTTP" in body["detail"]


# --- time to receive a request: 408 ---------------------------------------------------------


def test_a_body_that_never_arrives_is_408_and_never_reaches_the_model():
    model = StandIn()
    with ThreadedServer(model, api_key=KEY, receive_timeout_s=1.0) as server:
        warm = len(model.batches)
        for with_key in (False, True):  # before auth, and with the key (the app is reading the body)
            sock = connect(server.port)
            started = time.monotonic()
            key = f"X-API-Key: {KEY}\r\n" if with_key else ""
            sock.sendall(request_head(100, key) + b'{"text": "nev')  # 13 of the 100 promised bytes
            answer = read_answer(sock, timeout=15)
            elapsed = time.monotonic() - started
            sock.close()
            if not with_key:
                # Without the key the app answers 401 at once, without reading the body; the
                # connection is then closed when the rest of the body does not come.
                status, _, body = parse(answer)
                assert status == 401
            else:
                status, headers, body = parse(answer)
                assert status == 408, answer[:300]
                assert headers["content-type"] == "application/json"
                assert "within 1 s" in body["detail"] and "--receive-timeout" in body["detail"]
            assert 0.5 < elapsed < 10, f"closed after {elapsed:.1f} s"
        # Headers that never end: 408 as well.
        sock = connect(server.port)
        started = time.monotonic()
        sock.sendall(b"POST /v1/ents HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        for _ in range(3):  # a byte now and then does not extend the deadline
            time.sleep(0.3)
            sock.sendall(b"a")
        status, _, body = parse(read_answer(sock, timeout=15))
        sock.close()
        assert status == 408 and time.monotonic() - started < 10
        # A request that arrives in pieces within the time is served.
        sock = connect(server.port)
        payload = json.dumps({"text": "slow but fine"}).encode()
        sock.sendall(request_head(len(payload), f"X-API-Key: {KEY}\r\nConnection: close\r\n"))
        time.sleep(0.3)
        sock.sendall(payload)
        status, _, body = parse(read_answer(sock))
        sock.close()
        assert status == 200 and body["docs"][0]["ents"][0]["text"] == "slow but fine"
        assert model.batches[warm:] == [["slow but fine"]]


def test_an_idle_connection_is_closed_without_an_answer():
    with ThreadedServer(StandIn(), receive_timeout_s=1.0) as server:
        sock = connect(server.port)
        started = time.monotonic()
        assert read_answer(sock, timeout=15) == b""  # closed, nothing sent
        assert 0.5 < time.monotonic() - started < 10
        sock.close()
        # Many of them do not stall the others.
        idle = [connect(server.port) for _ in range(50)]
        assert httpx.get(server.url + "/health", timeout=5).status_code == 200
        for sock in idle:
            sock.close()


# --- clients that leave -----------------------------------------------------------------------


def test_requests_of_clients_that_left_never_reach_the_model(caplog):
    model = StandIn()
    with (
        ThreadedServer(model, batch_wait_ms=0, max_batch_texts=64) as server,
        caplog.at_level("INFO", logger="spacy_hybridner.serve"),
    ):
        batcher = server.app.state.batcher
        # Hold the model with one request, queue four large ones, and let their clients go.
        held = threading.Thread(target=lambda: httpx.post(server.url + "/v1/ents", json={"text": "block"}, timeout=30))
        held.start()
        assert model.started.wait(10)
        leaving = []
        for i in range(4):
            payload = json.dumps({"texts": [f"gone {i}.{j}" for j in range(20)]}).encode()
            sock = connect(server.port)
            sock.sendall(request_head(len(payload)) + payload)
            leaving.append(sock)
        wait_for(lambda: batcher.pending == 4)
        for sock in leaving:
            sock.close()
        # The event loop notices each close and withdraws its request from the queue.
        wait_for(lambda: batcher.live_pending == 0)
        model.release.set()
        held.join(30)
        answer = httpx.post(server.url + "/v1/ents", json={"text": "next"}, timeout=30)
        assert answer.status_code == 200
    assert not any("gone" in text for batch in model.batches for text in batch), model.batches
    assert ["next"] in model.batches
    dropped = re.findall(r"Dropped (\d+) request\(s\) \((\d+) text\(s\)\) whose client left", caplog.text)
    assert [sum(int(n) for n in column) for column in zip(*dropped)] == [4, 80], caplog.text


# --- a taken port -------------------------------------------------------------------------------


def test_a_taken_port_fails_at_once_naming_it(tmp_path):
    """serve binds its port before it loads the model: on a taken port it fails in seconds,
    with a message naming the port and what to do (here the model does not even exist as a
    pipeline, so reaching the load would fail differently)."""
    holder = bind_socket("127.0.0.1", 0)
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "spacy_hybridner", "serve", str(tmp_path), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        elapsed = time.monotonic() - started
    finally:
        holder.close()
    assert result.returncode != 0
    assert f"Cannot listen on 127.0.0.1:{port}: the port is already in use" in result.stderr
    assert "--port" in result.stderr and "Traceback" not in result.stderr
    assert "meta.json" not in result.stderr + result.stdout  # it never tried to load the model
    assert elapsed < 60


def test_bind_socket_refuses_what_it_cannot_bind():
    with pytest.raises(SystemExit, match="not an address of this machine"):
        bind_socket("no-such-host.invalid", 0)


def test_keep_alive_and_pipelined_requests_still_work():
    """The bounded protocol leaves HTTP/1.1 as it was: several requests on one connection,
    one after another or sent at once (pipelined), each answered in order."""
    model = StandIn()
    with ThreadedServer(model, max_header_bytes=2048, receive_timeout_s=2.0) as server:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            for i in range(3):
                assert http.post("/v1/ents", json={"text": f"kept alive {i}"}).status_code == 200
                time.sleep(0.2)
        payloads = [json.dumps({"text": f"piped {i}"}).encode() for i in range(3)]
        pad = "X-Pad: " + "p" * 1500 + "\r\n"  # each request's headers under the limit, the three over it
        requests = b"".join(request_head(len(p), pad) + p for p in payloads[:2])
        requests += request_head(len(payloads[2]), pad + "Connection: close\r\n") + payloads[2]
        sock = connect(server.port)
        sock.sendall(requests)  # three requests at once
        answer = read_answer(sock)
        sock.close()
        bodies = [json.loads(part.split(b"\r\n\r\n", 1)[1]) for part in answer.split(b"HTTP/1.1 ")[1:]]
        assert answer.count(b"HTTP/1.1 200") == 3, answer
        assert [b["docs"][0]["ents"][0]["text"] for b in bodies] == ["piped 0", "piped 1", "piped 2"]


def test_serve_command_bounds_headers_and_receive_time(model_dir):
    """``serve --max-header-bytes --receive-timeout``: the real command with the tiny model."""
    from spacy_hybridner.serve.process import ServerProcess

    args = [
        "--model-thread",
        "--torch-threads",
        "1",
        "--no-access-log",
        "--max-header-bytes",
        "2048",
        "--receive-timeout",
        "1",
    ]
    with ServerProcess(str(model_dir), args) as server:
        sock = connect(server.port)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 4096 + b"\r\n\r\n")
        status, _, body = parse(read_answer(sock))
        sock.close()
        assert status == 431 and "at most 2048 bytes" in body["detail"]
        sock = connect(server.port)
        started = time.monotonic()
        sock.sendall(request_head(50))
        status, _, body = parse(read_answer(sock, timeout=15))
        sock.close()
        assert status == 408 and "within 1 s" in body["detail"] and time.monotonic() - started < 10


# --- pipelined requests (issue 37, item 12): each counted and answered on its own ---------------


def parse_all(answer: bytes):
    """Every HTTP/1.1 answer in ``answer``, in order: a list of (status, headers, JSON body)."""
    answers = []
    while answer:
        head, _, rest = answer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        length = int(headers["content-length"])
        answers.append((int(lines[0].split()[1]), headers, json.loads(rest[:length])))
        answer = rest[length:]
    return answers


def valid_request(text: str, chunked: bool = False) -> bytes:
    payload = json.dumps({"text": text}).encode()
    if not chunked:
        return request_head(len(payload)) + payload
    head = (
        b"POST /v1/ents HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    half = len(payload) // 2
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (payload[:half], payload[half:]))
    return head + chunks + b"0\r\n\r\n"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("factor", [1.6, 3.0], ids=["1.6x", "3x"])
def test_a_pipelined_request_with_headers_over_the_limit_is_431_after_the_earlier_answer(factor, chunked):
    """Two requests in one write, the second's headers over the limit on their own: the
    first is answered, then the second gets 431 (its bytes were not counted as the first's,
    nor left uncounted because they arrived with it)."""
    model = StandIn()
    limit = 4096
    with ThreadedServer(model, max_header_bytes=limit) as server:
        warm = len(model.batches)
        big = f"X-Big: {'b' * int(limit * factor)}\r\n"
        sock = connect(server.port)
        sock.sendall(valid_request("first", chunked) + request_head(2, big) + b"{}")
        answers = parse_all(read_answer(sock))
        sock.close()
        assert [a[0] for a in answers] == [200, 431], answers
        assert answers[0][2]["docs"][0]["ents"][0]["text"] == "first"
        assert f"at most {limit} bytes" in answers[1][2]["detail"] and answers[1][1]["connection"] == "close"
        assert model.batches[warm:] == [["first"]]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_pipelined_requests_each_under_the_limit_are_all_answered_in_order(chunked):
    """Requests whose headers are each under the limit and together far over it, with
    bodies, in one write: every one answered, in order."""
    model = StandIn()
    limit = 2048
    with ThreadedServer(model, max_header_bytes=limit) as server:
        pad = f"X-Pad: {'p' * (limit - 300)}\r\n"
        requests = b""
        for i in range(6):
            one = valid_request(f"piped {i}", chunked)
            head, _, body = one.partition(b"\r\n\r\n")
            last = "Connection: close\r\n" if i == 5 else ""  # the server closes after the last answer
            requests += head + b"\r\n" + (pad + last).encode() + b"\r\n" + body
        sock = connect(server.port)
        sock.sendall(requests)
        answers = parse_all(read_answer(sock))
        sock.close()
        assert [a[0] for a in answers] == [200] * 6, answers
        assert [a[2]["docs"][0]["ents"][0]["text"] for a in answers] == [f"piped {i}" for i in range(6)]


@pytest.mark.parametrize(
    "garbage",
    [b"\x16\x03\x01 not HTTP\r\n\r\n", b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"],
    ids=["not-http", "bad-header"],
)
def test_garbage_after_a_valid_request_gets_the_answer_then_400(garbage):
    model = StandIn()
    with ThreadedServer(model) as server:
        sock = connect(server.port)
        sock.sendall(valid_request("before the garbage") + garbage)
        answers = parse_all(read_answer(sock))
        sock.close()
        assert [a[0] for a in answers] == [200, 400], answers
        assert answers[0][2]["docs"][0]["ents"][0]["text"] == "before the garbage"
        assert answers[1][1]["content-type"] == "application/json" and "HTTP" in answers[1][2]["detail"]


def test_a_client_that_left_while_its_body_was_read_is_never_queued(monkeypatch, caplog):
    """The server checks that the client is still there once the body is parsed and
    validated (in a worker thread), before the request is queued (issue 37, item 13)."""
    from spacy_hybridner.serve import routes

    reading, go_on = threading.Event(), threading.Event()
    read_request = routes.read_request

    def held(*args):
        reading.set()
        assert go_on.wait(30)
        return read_request(*args)

    monkeypatch.setattr(routes, "read_request", held)
    model = StandIn()
    with ThreadedServer(model, batch_wait_ms=0) as server, caplog.at_level("INFO", logger="spacy_hybridner.serve"):
        warm = len(model.batches)
        batcher = server.app.state.batcher
        queued = []
        annotate = batcher.annotate

        async def recording(texts, gone=None):
            queued.append(list(texts))
            return await annotate(texts, gone)

        batcher.annotate = recording
        sock = connect(server.port)
        payload = json.dumps({"texts": ["left early", "me too"]}).encode()
        sock.sendall(request_head(len(payload)) + payload)
        assert reading.wait(30)  # its body is being read
        sock.close()
        wait_for(lambda: not server.server.server_state.connections, timeout=30)  # the server saw it go
        go_on.set()
        wait_for(lambda: "whose client left before it was queued" in caplog.text, timeout=30)
        assert httpx.post(server.url + "/v1/ents", json={"text": "next"}, timeout=30).status_code == 200
    assert queued == [["next"]]
    assert model.batches[warm:] == [["next"]]
