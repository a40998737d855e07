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
  request.
"""

import contextlib
import re
from typing import BinaryIO

import gevent
from gevent.pywsgi import OldMessage
from gunicorn.workers.ggevent import GeventPyWSGIWorker, PyWSGIHandler, PyWSGIServer

# Each connection's read buffer, held for as long as the connection is open (a
# longer request takes a few more reads): gevent's default of 8 KiB added a fifth
# to the memory of each waiting long poll (34 against 29 KiB), 2 KiB still 1 KiB.
# Up to 512 bytes Python's small-object allocator serves it.
READ_BUFFER_BYTES = 512

# gunicorn's defaults (limit_request_field_size, limit_request_fields).
MAX_FIELD_LINE_BYTES = 8190
MAX_FIELDS = 100

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


class KeepAliveHandler(PyWSGIHandler):
    """gevent's WSGI handler, with gunicorn's time limit: a connection whose next
    request's head (its line and headers, all of them, however slowly they drip
    in) has not come within ``keepalive`` seconds is closed. gevent's own waits
    for ever. As under gunicorn, reading a body and sending an answer have no
    limit: the kernel buffers megabytes of an answer, and a slow client drains
    them for longer than any fixed limit."""

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
        return result

    def _refuse(self, status: str, answer: bytes) -> None:
        """Send a refused request's answer. gevent's ``handle`` would, but a client
        gone already (a reset as soon as it sent its head) raised out of the
        connection's greenlet with a traceback in the log, and it logged the
        refusal with the connection's previous request. The refusal's own log
        line says what was wrong."""
        self.status = status
        with contextlib.suppress(OSError):
            self.socket.sendall(answer)

    def read_requestline(self) -> str:
        self._reading_head = gevent.Timeout.start_new(
            self.server.log.cfg.keepalive, HeadTimedOut("the request's head took too long")
        )
        return super().read_requestline()

    def read_request(self, raw_requestline: str):
        try:
            return super().read_request(raw_requestline)
        finally:
            self._stop_head_timer()  # before the app runs: a long poll may wait longer

    def MessageClass(self, rfile: BinaryIO, *_args) -> OldMessage:  # gevent names it so
        return read_header_fields(rfile, self.request_version)

    # gevent sends an answer's head, then its body: two system calls, and two TCP
    # segments for the client to read, for every answer. The head is held here
    # and goes out with the body's first chunk (empty poll, one pinned worker:
    # 3 % less CPU).
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
        if self._head:
            data, self._head = self._head + data, None
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


class PyWSGIWorker(GeventPyWSGIWorker):
    """gunicorn's gevent worker, serving HTTP with gevent's WSGI server (above)."""

    server_class = OneAcceptAtATimeServer
    wsgi_handler = KeepAliveHandler
