"""The server's HTTP protocol: uvicorn's httptools protocol with the two bounds it lacks.

uvicorn (0.55, with httptools) puts no limit on the size of a request's line and headers
(httptools gathers a header by concatenating bytes: a 100 MB header costs seconds of CPU on
the event loop before any ASGI code runs) and no limit on the time a request may take to
arrive (a client that sends half its headers, or promises a body and never sends it, holds
its connection for as long as it likes; ``timeout_keep_alive`` only closes connections idle
*between* requests). Both have to be bounded below the ASGI application, which sees a
request only once its headers are in. :class:`BoundedHttpToolsProtocol` does, per connection:

- it counts the bytes of each request until the end of its headers, before handing them to
  the parser, and answers 431 (and closes) once they exceed ``max_header_bytes``. Each
  request of a connection is counted on its own, pipelined ones too (several requests in
  one read): the parser is fed one request's part at a time, never past the end of a
  request's headers (the first empty line), of a ``Content-Length`` body, or of a chunked
  body (which ends with an empty line too), so the bytes that follow are counted as the
  next request's;
- it starts a timer when a connection opens or a request's first byte arrives, stopped when
  the whole request (headers and body) is in; if it fires, the server answers 408 and closes
  the connection (or just closes it when nothing of a request came). A request whose body is
  still being read by the application sees the client as gone, so it never reaches the model.

Its own error answers (431, 408, and the 400 for bytes that are not HTTP) are JSON with a
``detail``, like the application's. Pipelined requests are answered in order: an error
found after requests whose answers are still due (a 400 for garbage, a 431) is sent after
those answers. After one, it closes its side of the connection and reads (and drops) what
the client still sends for up to ``LINGER_S`` seconds before it closes the socket, as
nginx's ``lingering_close`` does: closing a socket with unread bytes sends a TCP reset,
which can destroy the answer before the client reads it.

It relies on internals of uvicorn's ``HttpToolsProtocol`` (its parser callbacks, ``cycle``,
``pipeline``, ``on_response_complete``), hence the bounds on uvicorn in ``setup.py``;
``tests/test_serve_uvicorn.py`` checks each of them on the installed uvicorn.
"""

import json
import logging
from asyncio import TimerHandle
from typing import Any, Optional

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

logger = logging.getLogger("spacy_hybridner.serve")

LINGER_S = 2.0  # after an error answer, how long to drain what the client still sends
HEAD, BODY, CHUNKED = "head", "body", "chunked"  # what the parser is fed next
EMPTY_LINE = b"\r\n\r\n"  # ends the headers, and a chunked body


def json_error(status: int, detail: str) -> bytes:
    """A whole HTTP/1.1 response: ``status``, a JSON body ``{"detail": detail}``, and
    ``Connection: close``."""
    body = json.dumps({"detail": detail}).encode("utf8")
    return b"".join(
        [
            STATUS_LINE[status],
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
            body,
        ]
    )


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bound on each request's header bytes (431) and on
    the time to receive a request (408). Use :func:`bounded_protocol` to set the bounds."""

    max_header_bytes: int = 65_536
    receive_timeout_s: float = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._framing = HEAD  # what the next bytes are: a request line and headers, or a body
        self._head_bytes = 0  # bytes of the current request's line and headers so far
        self._body_left = 0  # bytes of a Content-Length body still to come
        self._tail = b""  # the last bytes fed to the parser (an empty line split between reads)
        self._messages = 0  # requests fully received on this connection
        self._receiving = False  # a request began and is not fully received
        self._current: Any = None  # the cycle of the request whose body is being received
        self._running: Any = None  # the cycle whose application task uvicorn started last
        self._deferred: Optional[bytes] = None  # an error answer due after the earlier answers
        self._no_more = False  # the last request closes the connection: nothing after it is read
        self._upgrade = False  # the parser stopped at an Upgrade request
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
        """A request of this connection before the one being received (HTTP pipelining) is
        still to be answered: waiting in uvicorn's pipeline, or its application running."""
        current = self._current
        if any(cycle is not current for cycle, _ in self.pipeline):
            return True
        running = self._running
        return (
            running is not None
            and running is not current
            and not running.response_complete
            and not running.disconnected
        )

    def _refuse(self, response: bytes) -> None:
        """Answer an error that ends the connection (400, 431): at once, or, if earlier
        requests still wait for their answers, after them. A request whose headers were in
        but whose rest is broken is not run (or, already running, sees its client gone)."""
        broken, self._current = self._current, None
        self._receiving = False
        self._disarm()
        if broken is not None:
            for entry in [e for e in self.pipeline if e[0] is broken]:
                self.pipeline.remove(entry)
            if broken is self._running and not broken.response_started:
                broken.disconnected = True
                broken.message_event.set()
        if self._earlier_answer_pending():
            self._deferred = response  # sent by on_response_complete once they are out
            return
        self._answer_and_close(response)

    def _on_receive_timeout(self) -> None:
        self._timer = None
        if self.transport.is_closing() or self._lingering is not None or self._deferred is not None:
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
            self._peer(),
            self.receive_timeout_s,
        )
        if current is not None:
            # The application waiting for the rest of the body sees the client as gone; the
            # request never reaches the model, and whatever it answers goes nowhere.
            current.disconnected = True
            current.message_event.set()
        self._answer_and_close(
            json_error(
                408,
                (
                    "request timeout: the whole request (headers and body) must arrive within "
                    f"{self.receive_timeout_s:g} s of its first byte (--receive-timeout)"
                ),
            )
        )

    # --- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._disarm()
        if self._lingering is not None:
            self._lingering.cancel()
        super().connection_lost(exc)

    def _stopped(self) -> bool:
        return self.transport.is_closing() or self._lingering is not None or self._deferred is not None or self._no_more

    def _next_empty_line(self, data: bytes, pos: int, limit: int) -> int:
        """Where the first empty line (CRLF CRLF) that ends after ``data[pos]`` ends, one
        that began in the last bytes fed counted too; ``limit`` if none ends before it."""
        before = self._tail  # the (up to 3) bytes fed just before data[pos]
        found = (before + data[pos : pos + 3]).find(EMPTY_LINE)
        if found >= 0:
            return min(limit, pos + found + 4 - len(before))
        found = data.find(EMPTY_LINE, pos, limit)
        return limit if found < 0 else found + 4

    def data_received(self, data: bytes) -> None:
        if self._stopped():
            return  # closing, draining after an error answer, or waiting to send one
        pos, end = 0, len(data)
        while pos < end:
            if self._framing == HEAD:
                room = self.max_header_bytes - self._head_bytes
                if room <= 0:
                    self._refuse_headers()
                    return
                stop = self._next_empty_line(data, pos, min(end, pos + room))
            elif self._framing == BODY and self._body_left > 0:
                stop = min(end, pos + self._body_left)
            elif self._framing == CHUNKED:
                stop = self._next_empty_line(data, pos, end)  # a chunked body ends with an empty line
            else:
                stop = end
            piece = data if pos == 0 and stop == end else data[pos:stop]
            if self._framing == HEAD:
                self._head_bytes += len(piece)
            self._tail = (self._tail + piece[-3:])[-3:]
            super().data_received(piece)
            if self._stopped():
                return
            if self._upgrade:  # uvicorn drops the rest of a read after an Upgrade request
                self._upgrade = False
                return
            pos = stop
        if self._framing == HEAD and self._head_bytes >= self.max_header_bytes:
            self._refuse_headers()  # the headers have not ended within the limit

    def _refuse_headers(self) -> None:
        logger.warning(
            "431: the request line and headers from %s exceed %d bytes (--max-header-bytes); connection closed",
            self._peer(),
            self.max_header_bytes,
        )
        self._refuse(
            json_error(
                431,
                (
                    f"request headers too large: the request line and headers may hold at most {self.max_header_bytes} "
                    "bytes (--max-header-bytes)"
                ),
            )
        )

    def send_400_response(self, msg: str) -> None:
        # uvicorn's own answer is text/plain; every error of this server is JSON.
        self._refuse(json_error(400, f"{msg.rstrip('.')}: this server speaks HTTP/1.1 with JSON bodies"))

    def _unsupported_upgrade_warning(self) -> None:
        self._upgrade = True
        super()._unsupported_upgrade_warning()

    def on_response_complete(self) -> None:
        following = self.pipeline[-1][0] if self.pipeline else None  # uvicorn pops from the right
        super().on_response_complete()
        if following is not None and not any(cycle is following for cycle, _ in self.pipeline):
            self._running = following
        if self._deferred is not None and not self.transport.is_closing() and not self._earlier_answer_pending():
            response, self._deferred = self._deferred, None
            self._answer_and_close(response)

    # --- httptools parser callbacks -------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._receiving = True
        self._arm()

    def on_headers_complete(self) -> None:
        previous = self.cycle
        super().on_headers_complete()
        cycle = self.cycle if self.cycle is not previous else None
        self._current = cycle
        if cycle is not None and not any(c is cycle for c, _ in self.pipeline):
            self._running = cycle  # no earlier answer pending: uvicorn started it at once
        self._framing, self._body_left = BODY, 0
        for name, value in self.headers:
            if name == b"transfer-encoding":
                self._framing = CHUNKED
                break
            if name == b"content-length" and value.isdigit():
                self._body_left = int(value)

    def on_body(self, body: bytes) -> None:
        self._body_left -= len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._messages += 1
        self._framing = HEAD
        self._head_bytes = 0
        self._body_left = 0
        self._receiving = False
        self._current = None
        self._disarm()
        if self.cycle is not None and not self.cycle.keep_alive:
            self._no_more = True  # uvicorn closes the connection after this answer


def bounded_protocol(max_header_bytes: int, receive_timeout_s: float) -> type:
    """A :class:`BoundedHttpToolsProtocol` class with these bounds, for ``uvicorn.Config(http=...)``."""
    return type(
        "BoundedHttpToolsProtocol",
        (BoundedHttpToolsProtocol,),
        {"max_header_bytes": int(max_header_bytes), "receive_timeout_s": float(receive_timeout_s)},
    )
