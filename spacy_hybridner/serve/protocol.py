"""The server's HTTP protocol: uvicorn's httptools protocol with the two bounds it lacks.

uvicorn (0.55, with httptools) puts no limit on the size of a request's line and headers
(httptools gathers a header by concatenating bytes: a 100 MB header costs seconds of CPU on
the event loop before any ASGI code runs) and no limit on the time a request may take to
arrive (a client that sends half its headers, or promises a body and never sends it, holds
its connection for as long as it likes; ``timeout_keep_alive`` only closes connections idle
*between* requests). Both have to be bounded below the ASGI application, which sees a
request only once its headers are in. :class:`BoundedHttpToolsProtocol` does, per connection:

- it counts the bytes of each request until the end of its headers, before handing them to
  the parser, and answers 431 (and closes) once they exceed ``max_header_bytes``;
- it starts a timer when a connection opens or a request's first byte arrives, stopped when
  the whole request (headers and body) is in; if it fires, the server answers 408 and closes
  the connection (or just closes it when nothing of a request came). A request whose body is
  still being read by the application sees the client as gone, so it never reaches the model.

Its own error answers (431, 408, and the 400 for bytes that are not HTTP) are JSON with a
``detail``, like the application's. After one, it closes its side of the connection and
reads (and drops) what the client still sends for up to ``LINGER_S`` seconds before it
closes the socket, as nginx's ``lingering_close`` does: closing a socket with unread bytes
sends a TCP reset, which can destroy the answer before the client reads it.
"""
import json
import logging
from asyncio import TimerHandle
from typing import Any, Optional

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

logger = logging.getLogger("spacy_hybridner.serve")

LINGER_S = 2.0  # after an error answer, how long to drain what the client still sends


def json_error(status: int, detail: str) -> bytes:
    """A whole HTTP/1.1 response: ``status``, a JSON body ``{"detail": detail}``, and
    ``Connection: close``."""
    body = json.dumps({"detail": detail}).encode("utf8")
    return b"".join([
        STATUS_LINE[status],
        b"content-type: application/json\r\n",
        b"content-length: %d\r\n" % len(body),
        b"connection: close\r\n\r\n",
        body,
    ])


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bound on header bytes (431) and on the time to
    receive a request (408). Use :func:`bounded_protocol` to set the bounds."""

    max_header_bytes: int = 65_536
    receive_timeout_s: float = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # the bytes that arrive belong to a request line and headers
        self._head_bytes = 0  # bytes of the current request's line and headers so far
        self._messages = 0  # requests fully received on this connection
        self._receiving = False  # a request began and is not fully received
        self._current: Any = None  # the cycle of the request whose body is being received
        self._timer: Optional[TimerHandle] = None
        self._lingering: Optional[TimerHandle] = None  # set once an error answer went out

    # --- the receive timer ------------------------------------------------------------------

    def _arm(self) -> None:
        if self._timer is None:
            self._timer = self.loop.call_later(self.receive_timeout_s, self._on_receive_timeout)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _answer_and_close(self, response: bytes) -> None:
        """Send an error answer, then close: our side at once (FIN after the answer), the
        socket once the client closes its side or after LINGER_S, reading and dropping
        whatever it sends meanwhile."""
        self._disarm()
        self.transport.write(response)
        if self._lingering is not None or not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self._lingering = self.loop.call_later(LINGER_S, self.transport.close)
        if self.flow is not None:
            self.flow.resume_reading()  # drain, so that the kernel has no unread bytes at close

    def _peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "a client"

    def _earlier_answer_pending(self) -> bool:
        """An earlier request of this connection (HTTP pipelining) is still being answered."""
        if self.pipeline:
            return True
        return self._current is None and self.cycle is not None and not self.cycle.response_complete

    def _on_receive_timeout(self) -> None:
        self._timer = None
        if self.transport.is_closing() or self._lingering is not None:
            return
        if not self._receiving:
            if self.cycle is None or self.cycle.response_complete:
                self.transport.close()  # opened and left idle: nothing to answer
            return
        if self._earlier_answer_pending():
            self._arm()  # the earlier answer goes first; this request's bytes wait behind it
            return
        current = self._current
        if current is not None and current.response_started:
            # The application answered without reading the whole body (401, 413): nothing
            # more is wanted from this connection once that answer is out.
            if current.response_complete:
                self.transport.close()
            else:
                self._arm()
            return
        logger.warning(
            "408: %s did not send a whole request within %g s (--receive-timeout); connection closed",
            self._peer(), self.receive_timeout_s,
        )
        if current is not None:
            # The application waiting for the rest of the body sees the client as gone; the
            # request never reaches the model, and whatever it answers goes nowhere.
            current.disconnected = True
            current.message_event.set()
        self._answer_and_close(json_error(408, (
            f"request timeout: the whole request (headers and body) must arrive within {self.receive_timeout_s:g} s "
            "of its first byte (--receive-timeout)"
        )))

    # --- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._disarm()
        if self._lingering is not None:
            self._lingering.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing() or self._lingering is not None:
            return  # closing, or draining after an error answer
        if self._in_head:
            room = self.max_header_bytes - self._head_bytes
            if len(data) > room:
                # Parse only what fits; if the headers have not ended within it, refuse.
                head, rest = data[:room], data[room:]
                messages = self._messages
                if head:
                    self._head_bytes += len(head)
                    super().data_received(head)
                if self.transport.is_closing() or self._lingering is not None:
                    return
                if self._messages != messages:  # a request ended inside head: the rest is the next one's
                    self.data_received(rest)
                elif self._in_head:
                    self._refuse_headers()
                else:
                    super().data_received(rest)
                return
            self._head_bytes += len(data)
        super().data_received(data)

    def _refuse_headers(self) -> None:
        logger.warning(
            "431: the request line and headers from %s exceed %d bytes (--max-header-bytes); connection closed",
            self._peer(), self.max_header_bytes,
        )
        if self._earlier_answer_pending():
            self.transport.close()  # an earlier answer is still due: it cannot be followed by this one
            return
        self._answer_and_close(json_error(431, (
            f"request headers too large: the request line and headers may hold at most {self.max_header_bytes} "
            "bytes (--max-header-bytes)"
        )))

    def send_400_response(self, msg: str) -> None:
        # uvicorn's own answer is text/plain; every error of this server is JSON.
        self._answer_and_close(json_error(400, f"{msg.rstrip('.')}: this server speaks HTTP/1.1 with JSON bodies"))

    # --- httptools parser callbacks -------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._receiving = True
        self._arm()

    def on_headers_complete(self) -> None:
        self._in_head = False
        previous = self.cycle
        super().on_headers_complete()
        self._current = self.cycle if self.cycle is not previous else None

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._messages += 1
        self._in_head = True
        self._head_bytes = 0
        self._receiving = False
        self._current = None
        self._disarm()


def bounded_protocol(max_header_bytes: int, receive_timeout_s: float) -> type:
    """A :class:`BoundedHttpToolsProtocol` class with these bounds, for ``uvicorn.Config(http=...)``."""
    return type("BoundedHttpToolsProtocol", (BoundedHttpToolsProtocol,), {
        "max_header_bytes": int(max_header_bytes), "receive_timeout_s": float(receive_timeout_s),
    })
