"""Run ``python -m spacy_hybridner serve`` as a child process on a free loopback port:
for the end-to-end tests, the load test, the benchmark and the screenshot script."""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Dict, Optional, Sequence


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


# The child sets its SIGINT handler itself before it runs the command line: a process
# started by a shell's background job (``nohup make test &``) inherits SIGINT ignored, and
# serve leaves an inherited SIG_IGN alone. Set in the child's own Python (not with
# preexec_fn, which is unsafe in a parent with threads).
_BOOT = (
    "import signal, sys; signal.signal(signal.SIGINT, {handler}); sys.argv[0] = 'spacy-hybridner'; "
    "from spacy_hybridner.cli import main; main()"
)


class ServerProcess:
    """The real server in a child process; a context manager that stops it on exit.

    model (str): pipeline path or package name.
    args (Sequence[str]): more ``serve`` options, e.g. ``["--torch-threads", "1"]``.
    port (Optional[int]): port to listen on (None: a free one).
    env (Optional[Dict[str, str]]): environment of the child (None: this one).
    api_key (Optional[str]): sent with the readiness checks if the server needs one.
    sigint_ignored (bool): start the server with SIGINT ignored, as a shell's background
        job is (serve then stops on SIGTERM only); by default SIGINT is Python's default
        handler in the child, whatever this process has.
    """

    def __init__(
        self,
        model: str,
        args: Sequence[str] = (),
        *,
        port: Optional[int] = None,
        env: Optional[Dict[str, str]] = None,
        api_key: Optional[str] = None,
        sigint_ignored: bool = False,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        handler = "signal.SIG_IGN" if sigint_ignored else "signal.default_int_handler"
        self.command = [
            sys.executable,
            "-c",
            _BOOT.format(handler=handler),
            "serve",
            str(model),
            "--port",
            str(self.port),
            *args,
        ]
        self.env = env
        self.api_key = api_key
        self.proc: Optional[subprocess.Popen] = None
        self._log = tempfile.NamedTemporaryFile(prefix="spacy-hybridner-serve-", suffix=".log", delete=False)

    def output(self) -> str:
        """Everything the server wrote to stdout and stderr so far."""
        return Path(self._log.name).read_text(encoding="utf8", errors="replace")

    def start(self, timeout: float = 120.0) -> "ServerProcess":
        """Start the server and wait until ``GET /ready`` answers 200.
        Raises RuntimeError (with the server's output) if it exits or is not ready in time."""
        self.proc = subprocess.Popen(self.command, stdout=self._log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + timeout
        headers = {"X-API-Key": self.api_key} if self.api_key else {}
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with code {self.proc.returncode}:\n{self.output()}")
            request = urllib.request.Request(self.url + "/ready", headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"the server was not ready after {timeout:.0f} s:\n{self.output()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Ask the server to stop (SIGTERM or SIGINT: it answers the requests in flight, for
        at most its --shutdown-timeout, then exits) and wait. RETURNS (int): its exit code.
        Raises RuntimeError if it has not exited within ``timeout`` seconds (it is killed
        then)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                message = f"the server did not stop within {timeout:.0f} s of {sig!r}:\n{self.output()}"
                raise RuntimeError(message) from None
        return self.proc.returncode

    def kill(self) -> None:
        """Kill the server (by its PID) if it still runs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> "ServerProcess":
        try:
            return self.start()
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *exc) -> None:
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.stop()
        finally:
            self.kill()
            self._log.close()
            os.unlink(self._log.name)
