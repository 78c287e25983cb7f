"""How the real ``serve`` command stops (issue 37, item 10, and SIGINT): SIGTERM with a
client that does not read its answer still ends (within --shutdown-timeout), a second signal
ends it at once, and SIGINT is left ignored when the process started with it ignored.

Every server here is started by ServerProcess, which sets SIGINT in the child itself: these
tests hold when the suite runs as a background job with SIGINT ignored (``nohup make test &``).
Each wait is on an event (a log line, the process's exit) with a generous bound; what is
asserted is that the server exits, not how fast."""

import json
import signal
import socket
import subprocess
import time

import httpx
import pytest

from spacy_hybridner.serve.process import ServerProcess

ARGS = ["--model-thread", "--torch-threads", "1", "--no-access-log"]
# A /v1/render answer of about 8.6 MB (the markup of many entities) for a 256 KB body, far
# more than the socket buffers of both ends hold (Linux: at most 4 MB to send by default).
LARGE = {"texts": ["Tim Cook visited Berlin and Paris . Obama met Merkel in Kenya . " * 40] * 100}


def client_that_does_not_read(port: int) -> socket.socket:
    """Ask for a large answer with a tiny receive buffer, read its status line (the server
    is writing it), then read no more."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(120)
    sock.connect(("127.0.0.1", port))
    payload = json.dumps(LARGE).encode()
    sock.sendall(
        b"POST /v1/render HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload)
    )
    first = b""
    while b"\r\n" not in first:
        chunk = sock.recv(64)
        assert chunk, "the server closed the connection"
        first += chunk
    assert first.startswith(b"HTTP/1.1 200"), first
    return sock


def wait_for_output(server: ServerProcess, text: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in server.output():
        assert server.proc.poll() is None, f"the server exited:\n{server.output()}"
        assert time.monotonic() < deadline, f"no {text!r} in the server's output:\n{server.output()}"
        time.sleep(0.05)


def wait_exit(server: ServerProcess, timeout: float = 60.0) -> int:
    """The server's exit code; fails (and kills it) if it has not exited within ``timeout``."""
    try:
        return server.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        server.kill()
        raise AssertionError(f"the server did not exit within {timeout:.0f} s:\n{server.output()}") from None


def test_sigterm_ends_the_server_while_a_client_does_not_read_its_answer(model_dir):
    with ServerProcess(str(model_dir), [*ARGS, "--shutdown-timeout", "1"]) as server:
        sock = client_that_does_not_read(server.port)
        try:
            server.proc.send_signal(signal.SIGTERM)
            code = wait_exit(server)
        finally:
            sock.close()
        log = server.output()
    assert code == 0, log
    assert "SIGTERM: stopping; the requests in flight have 1 s to be answered" in log
    assert "timeout graceful shutdown exceeded" in log  # uvicorn gave up on that answer


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_second_signal_ends_the_server_at_once(model_dir, second):
    with ServerProcess(str(model_dir), [*ARGS, "--shutdown-timeout", "600"]) as server:
        sock = client_that_does_not_read(server.port)
        try:
            server.proc.send_signal(signal.SIGTERM)
            wait_for_output(server, "SIGTERM: stopping; the requests in flight have 600 s")
            server.proc.send_signal(second)
            code = wait_exit(server)
        finally:
            sock.close()
        log = server.output()
    assert code == 0, log
    assert f"{second.name} again: stopping now" in log


def signal_mask(pid: int, field: str) -> int:
    """A signal mask of /proc/PID/status (``SigIgn``: ignored, ``SigCgt``: caught)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1], 16)
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def has(mask: int, sig: int) -> bool:
    return bool(mask & (1 << (sig - 1)))


def test_sigint_stops_the_server_when_it_is_not_ignored(model_dir):
    with ServerProcess(str(model_dir), ARGS) as server:
        pid = server.proc.pid
        assert has(signal_mask(pid, "SigCgt"), signal.SIGINT) and not has(signal_mask(pid, "SigIgn"), signal.SIGINT)
        code = server.stop(signal.SIGINT, timeout=60)
        log = server.output()
    assert code == 0, log
    assert "Ctrl-C or SIGTERM to stop" in log and "SIGINT: stopping" in log


def test_sigint_ignored_at_start_stays_ignored(model_dir):
    """A background job of a non-interactive shell starts with SIGINT ignored; serve leaves
    it so (a Ctrl-C for the shell's foreground job does not stop it) and stops on SIGTERM."""
    with ServerProcess(str(model_dir), ARGS, sigint_ignored=True) as server:
        pid = server.proc.pid
        assert has(signal_mask(pid, "SigIgn"), signal.SIGINT)  # ignored by the kernel: no handler runs
        assert has(signal_mask(pid, "SigCgt"), signal.SIGTERM)
        server.proc.send_signal(signal.SIGINT)
        assert httpx.get(server.url + "/health", timeout=30).status_code == 200
        assert server.proc.poll() is None
        code = server.stop(signal.SIGTERM, timeout=60)
        log = server.output()
    assert code == 0, log
    assert "SIGTERM to stop; SIGINT is ignored, as it was when the process started" in log
    assert "SIGINT: stopping" not in log and "SIGTERM: stopping" in log
