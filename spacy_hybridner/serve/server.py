"""uvicorn's server with the signal handling of ``serve``: a bounded graceful stop, a second
signal to stop at once, and SIGINT left ignored when the process started with it ignored.

uvicorn's own server waits for every connection to close after SIGINT or SIGTERM, for as
long as it takes (``timeout_graceful_shutdown`` is None unless set): one client that does
not read its answer keeps it running. Only a second SIGINT forces it out; a second SIGTERM
does nothing. It also installs its SIGINT handler over an inherited SIG_IGN, so a server
started in the background by a non-interactive shell (``serve ... &``, which starts it with
SIGINT ignored) stops on a Ctrl-C meant for the shell's foreground job; and it raises the
signal again once it stopped, so the process dies of it.
"""

import contextlib
import logging
import signal
import threading
from typing import Any, Generator, Optional

import uvicorn

logger = logging.getLogger("spacy_hybridner.serve")


def stop_signals() -> tuple:
    """The signals that stop the server: SIGTERM, and SIGINT unless it is ignored now (as
    the process inherited it: Unix convention is to leave an inherited SIG_IGN alone)."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        return (signal.SIGTERM,)
    return (signal.SIGINT, signal.SIGTERM)


class GracefulServer(uvicorn.Server):
    """A ``uvicorn.Server`` that stops on :func:`stop_signals`: the first one stops it
    gracefully (no new connections; the requests in flight have the config's
    ``timeout_graceful_shutdown`` seconds to be answered, then they are cancelled and the
    server exits), a second one at once. It returns from ``run`` instead of raising the
    signal again (``serve`` exits 0)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # Signals can only be handled in the main thread (tests run servers in others).
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in stop_signals()}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: Optional[Any]) -> None:
        name = signal.Signals(sig).name
        if self.should_exit:
            if not self.force_exit:
                logger.warning("%s again: stopping now, without waiting for the requests in flight", name)
            self.force_exit = True
            return
        self.should_exit = True
        timeout = self.config.timeout_graceful_shutdown
        logger.info(
            "%s: stopping; the requests in flight have %s to be answered (a second SIGINT or SIGTERM stops at once)",
            name,
            "as long as they take" if timeout is None else f"{timeout:g} s",
        )
