"""Serving HTTP: gunicorn's gevent worker with gevent's WSGI server, made stricter.

gevent's server costs less of a worker's CPU per request than gunicorn's own
parser and response writer (an empty poll 15 % less, see bench/README.md). On
top of it, this module adds what a server facing the internet needs and gevent
leaves out, and answers the commonest request with less work:

* a time limit on each request's head (``keepalive`` seconds, gunicorn's
  setting): gevent's own waits for ever on an idle or dripping connection;
* a strict reading of the request's header fields, of its own: gevent reads
  them with the standard library's e-mail parser, which accepts what a proxy in
  front may read otherwise (a field folded over two lines, a space before the
  colon, ``Content-Length`` beside ``Transfer-Encoding``, a length of ``+5``),
  and takes 24 µs for seven fields where this reader takes 4. A head it refuses
  answers 400 and closes the connection, as gevent answers any other malformed
  request, logging why but no traceback if the client has gone;
* a request's body read whole before the app runs, with the same time limit
  per 64 KiB as its head has (a stalled one closes the connection): read by
  the app, a phone's upload stalled mid-send (a network switch leaves just
  that) held one of the few turns to work (``api.admission``), and in the
  embedded mode the one SQLite connection, for as long as the connection
  stayed open. Bodies wait in memory as a proxy in front buffers them: at
  most ``MAX_CONTENT_LENGTH`` (and a byte, to tell a longer one) a request;
* an answer's head and body in one write (gevent sends them apart: two system
  calls, and two TCP segments for the client);
* a prompt shutdown: gunicorn waits for every connection to end, up to its
  ``graceful_timeout``, and a kept-alive connection waiting for its next
  request (a load balancer keeps several) never would. Once the server stops
  accepting, those of which no byte of a request has come are closed; the
  others are served, their answers closing them (``api.lifecycle``).
"""

import contextlib
import errno
import io
import json
import re
import socket
from functools import cache
from typing import BinaryIO

import gevent
from gevent.pywsgi import OldMessage
from gunicorn.workers.ggevent import GeventPyWSGIWorker, PyWSGIHandler, PyWSGIServer

from api.config import load_config

# Each connection's read buffer, held for as long as the connection is open (a
# longer request takes a few more reads): gevent's default of 8 KiB added a fifth
# to the memory of each waiting long poll (34 against 29 KiB), 2 KiB still 1 KiB.
# Up to 512 bytes Python's small-object allocator serves it.
READ_BUFFER_BYTES = 512

# gunicorn's defaults (limit_request_field_size, limit_request_fields).
MAX_FIELD_LINE_BYTES = 8190
MAX_FIELDS = 100

# A first chunk of an answer's body bigger than this goes out in a write of its
# own, not copied behind the head.
HEAD_WITH_BODY_MAX_BYTES = 64 * 1024

# A request's body is read in reads of this much, each within the time limit.
BODY_READ_BYTES = 64 * 1024

# How long a shutdown leaves a connection that has answered nothing yet (its
# first request may be on its way) before it closes it.
NEW_CONNECTION_GRACE_S = 1.0

_FIELD_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110's token
_FIELD_VALUE = re.compile(r"[^\x00-\x08\x0a-\x1f\x7f]*")  # no control character but tab
_DIGITS = re.compile(r"[0-9]+")


class BadHead(ValueError):
    """A request head this server refuses (gevent answers a ValueError with 400)."""


class HeadTimedOut(TimeoutError, ValueError):
    """The request's head did not come in time. gevent takes a TimeoutError while it
    reads the request line for a connection gone (closed quietly), and a ValueError
    while it reads the header fields for bad input (400, without a traceback)."""


def read_header_fields(rfile: BinaryIO, http_version: str) -> OldMessage:
    """The header fields of a request, up to the empty line that ends them, in the
    form gevent's WSGI handler reads them; raises BadHead for a malformed head."""
    fields = OldMessage()
    for _ in range(MAX_FIELDS + 1):
        line = rfile.readline(MAX_FIELD_LINE_BYTES + 1)
        if line in (b"\r\n", b"\n"):
            _check_fields(fields, http_version)
            return fields
        if len(line) > MAX_FIELD_LINE_BYTES or not line.endswith(b"\n"):
            raise BadHead("header line too long" if line else "head cut short")
        text = line.removesuffix(b"\n").removesuffix(b"\r").decode("latin-1")
        name, colon, value = text.partition(":")
        value = value.strip(" \t")  # a CR left in it is a control character: refused
        if not colon or not _FIELD_NAME.fullmatch(name) or not _FIELD_VALUE.fullmatch(value):
            raise BadHead(f"malformed header line {line[:100]!r}")
        fields[name] = value
    raise BadHead(f"more than {MAX_FIELDS} header fields")


def _check_fields(fields: OldMessage, http_version: str) -> None:
    """One way to tell where the body ends, and only one: a request a proxy in
    front could frame otherwise is refused (RFC 9112, section 6.3), and so is one
    naming two hosts (section 3.2)."""
    lengths = fields.get_all("Content-Length", [])
    codings = fields.get_all("Transfer-Encoding", [])
    if lengths and codings:
        raise BadHead("both Content-Length and Transfer-Encoding")
    if len(lengths) > 1 or (lengths and not _DIGITS.fullmatch(lengths[0])):
        raise BadHead(f"bad Content-Length {lengths!r}")
    if codings and (len(codings) > 1 or codings[0].lower() != "chunked"):
        raise BadHead(f"unsupported Transfer-Encoding {codings!r}")
    if codings and http_version != "HTTP/1.1":
        raise BadHead(f"Transfer-Encoding in an {http_version} request")
    if len(fields.get_all("Host", [])) > 1:
        raise BadHead("more than one Host")


def _refusal(status: str, code: str, message: str) -> bytes:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Cache-Control: no-store\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


# What a request refused before the app sees it is answered (see KeepAliveHandler._refuse).
_REFUSALS = {
    "400": _refusal("400 Bad Request", "bad_request", "The request's head is malformed."),
    "414": _refusal("414 URI Too Long", "uri_too_long", "The request line is too long."),
}


@cache
def _body_max_bytes() -> int:
    return load_config()["MAX_CONTENT_LENGTH"]


class KeepAliveHandler(PyWSGIHandler):
    """gevent's WSGI handler, with gunicorn's time limit: a connection whose next
    request's head (its line and headers, all of them, however slowly they drip
    in) has not come within ``keepalive`` seconds is closed. gevent's own waits
    for ever. Its body is read before the app runs, each read of it within the
    same limit. Sending an answer has none, as under gunicorn: the kernel
    buffers megabytes of an answer, and a slow client drains them for longer
    than any fixed limit."""

    answered = False  # has answered a request on this connection
    _closing = False  # closed by a shutdown while it waited for a request

    def __init__(self, sock, address, server, rfile=None) -> None:
        super().__init__(sock, address, server, rfile or sock.makefile("rb", READ_BUFFER_BYTES))
        self._reading_head: gevent.Timeout | None = None

    def handle_one_request(self):
        try:
            result = super().handle_one_request()
        finally:
            self._stop_head_timer()
        if isinstance(result, tuple):  # refused before it was read: answered, then closed
            self._refuse(*result)
            return None
        if result:
            self.answered = True
        return result

    def _refuse(self, status: str, _bodiless_answer: bytes) -> None:
        """Answer a refused request, as every error is answered: in JSON, not to be
        cached (gevent's answer has no body). gevent's ``handle`` would send it,
        but a client gone already (a reset as soon as it sent its head) raised
        out of the connection's greenlet with a traceback in the log, and it
        logged the refusal with the connection's previous request. The refusal's
        own log line says what was wrong."""
        if status == "414":  # the one refusal gevent does not log
            self.log_error("Invalid request (from %s): request line too long", self.client_address)
        self.status = status
        with contextlib.suppress(OSError):
            self.socket.sendall(_REFUSALS[status])

    def read_requestline(self) -> str:
        self._reading_head = gevent.Timeout.start_new(
            self.server.log.cfg.keepalive, HeadTimedOut("the request's head took too long")
        )
        if not self._wait_for_a_request():
            return ""  # closed by a shutdown: no request to read
        return super().read_requestline()

    def _wait_for_a_request(self) -> bool:
        """Until the next request's first byte comes (at once if one is buffered),
        counted among the server's idle connections, which a shutdown closes;
        False if it closed this one."""
        idle = self.server.idle_handlers
        idle.add(self)
        if self.server.closed:  # answered as the shutdown began
            self.close_when_idle()
        try:
            self.rfile.peek(1)  # blocks only while nothing is buffered
        finally:
            idle.discard(self)
        return not self._closing

    def close_when_idle(self) -> None:
        """Close the connection if it waits for a next request once this greenlet
        has given way (a connection yet to answer anything, a grace later: its
        first request may be on its way). In a greenlet of its own, so that a
        failure cannot cut a graceful shutdown short (gunicorn gives up waiting
        for the connections at the first exception)."""
        grace_s = 0 if self.answered else NEW_CONNECTION_GRACE_S
        gevent.spawn_later(grace_s, self._close_if_idle)

    def _close_if_idle(self) -> None:
        """End the connection if no byte of a next request has come (a request
        that has begun is served, and its answer closes it). One still on its
        way over the network meets a closed connection, as it may whenever a
        server closes an idle one; if its first bytes come just as this closes,
        it is not read, so nothing runs without an answer."""
        if self not in self.server.idle_handlers or self._closing:
            return
        raw = self.socket._sock  # gevent's own recv would wait where this must not
        with contextlib.suppress(OSError):  # nothing has come (or the client is gone)
            if raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT):
                return
        self._closing = True
        with contextlib.suppress(OSError):
            raw.shutdown(socket.SHUT_RDWR)  # its wait ends: it closes

    def run_application(self) -> None:
        self._read_body_first()
        super().run_application()

    def _read_body_first(self) -> None:
        """Read the request's body into memory for the app (one too long for it is
        left unread, or read a byte past the limit: the app answers 413). A read
        that takes longer than the head may closes the connection, as a client
        gone would."""
        environ = self.environ
        length = int(environ.get("CONTENT_LENGTH") or 0)
        limit = _body_max_bytes()
        if environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked":
            length = limit + 1
        elif not 0 < length <= limit:
            return
        body = bytearray()
        stalled = ConnectionResetError(errno.ECONNRESET, "the request's body stalled")
        try:
            while len(body) < length:
                with gevent.Timeout(self.server.log.cfg.keepalive, stalled):
                    chunk = self.wsgi_input.read(min(BODY_READ_BYTES, length - len(body)))
                if not chunk:
                    break
                body += chunk
        except ConnectionResetError:
            # Shut, so that gevent's reading of the rest (to find the next request)
            # ends at once; it then closes the connection without a word.
            with contextlib.suppress(OSError):
                self.socket.shutdown(socket.SHUT_RDWR)
            raise
        environ["wsgi.input"] = io.BytesIO(body)

    def read_request(self, raw_requestline: str):
        try:
            return super().read_request(raw_requestline)
        finally:
            self._stop_head_timer()  # before the app runs: a long poll may wait longer

    def MessageClass(self, rfile: BinaryIO, *_args) -> OldMessage:  # gevent names it so
        return read_header_fields(rfile, self.request_version)

    # gevent sends an answer's head, then its body: two system calls, and two TCP
    # segments for the client to read, for every answer. The head is held here
    # and goes out with the body's first chunk, unless that is too big to copy
    # (empty poll, one pinned worker: 3 % less CPU).
    _head: bytes | None = None  # b"" while the head is awaited, then the head

    def _write_with_headers(self, data: bytes) -> None:
        self._head = b""
        try:
            super()._write_with_headers(data)  # its head, then the chunk unless empty
            if self._head:  # no chunk came to carry it
                super()._sendall(self._head)
        finally:
            self._head = None

    def _sendall(self, data: bytes) -> None:
        if self._head == b"":
            self._head = data
            return
        head, self._head = self._head, None
        if head and len(data) <= HEAD_WITH_BODY_MAX_BYTES:
            try:
                super()._sendall(head + data)
            except BaseException:
                self.response_length += len(head)  # as gevent counts a head sent apart:
                raise  # then no fresh error answer is written after what went out
            return
        if head:
            super()._sendall(head)
        super()._sendall(data)

    def _stop_head_timer(self) -> None:
        if self._reading_head is not None:
            self._reading_head.close()
            self._reading_head = None

    def log_request(self) -> None:
        # No environ: a request refused before it was parsed. And no line to build
        # when access logging is off (gunicorn would drop it).
        if self.environ is not None and self.server.log.access_log_enabled:
            super().log_request()


class OneAcceptAtATimeServer(PyWSGIServer):
    # Workers share the listening socket: one that took up to 100 connections
    # per wake-up (gevent's default) would take most of a burst of reconnects.
    max_accept = 1

    def __init__(self, *args, **kwargs) -> None:
        self.idle_handlers: set[KeepAliveHandler] = set()  # gevent's may close() on failure
        super().__init__(*args, **kwargs)

    def close(self) -> None:
        """Stop accepting (gunicorn's first step of a graceful shutdown), and close
        the connections waiting for a next request."""
        super().close()
        for handler in list(self.idle_handlers):
            handler.close_when_idle()


class PyWSGIWorker(GeventPyWSGIWorker):
    """gunicorn's gevent worker, serving HTTP with gevent's WSGI server (above)."""

    server_class = OneAcceptAtATimeServer
    wsgi_handler = KeepAliveHandler
