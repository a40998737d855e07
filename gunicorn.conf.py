"""gunicorn settings: gevent workers, sized by the environment.

Never ``preload_app``: the app (and psycopg) must be imported in each worker
after gevent has patched it, or database calls block the whole worker.
"""

import gc
import os

import gevent
from gunicorn.workers.ggevent import GeventPyWSGIWorker, PyWSGIHandler, PyWSGIServer

from api.config import check_process_model

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
# Each waiting long poll is one connection; thousands per process is the point.
worker_connections = int(os.environ.get("WORKER_CONNECTIONS", "10000"))
# Above the longest long poll (25 s by default) so gunicorn never kills one.
timeout = 60
# Long polls still open when a worker stops get this long to answer.
graceful_timeout = 30
# Longer than the idle timeout of the load balancer in front (60 s on AWS ELB),
# so the balancer, not gunicorn, closes idle keep-alive connections.
keepalive = int(os.environ.get("KEEPALIVE_S", "75"))
if keepalive < 1:  # 0 would close every connection before its first request
    raise ValueError(f"KEEPALIVE_S must be at least 1 second, not {keepalive}")


# Each connection's read buffer, held for as long as the connection is open (a
# longer request takes a few more reads): gevent's default of 8 KiB added a fifth
# to the memory of each waiting long poll (34 against 29 KiB), 2 KiB still 1 KiB.
# Up to 512 bytes Python's small-object allocator serves it.
READ_BUFFER_BYTES = 512


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
            return super().handle_one_request()
        finally:
            self._stop_head_timer()

    def read_requestline(self) -> str:
        self._reading_head = gevent.Timeout.start_new(
            keepalive, TimeoutError("the request's head took too long")
        )
        return super().read_requestline()

    def read_request(self, raw_requestline: str):
        try:
            return super().read_request(raw_requestline)
        finally:
            self._stop_head_timer()  # before the app runs: a long poll may wait longer

    def _stop_head_timer(self) -> None:
        if self._reading_head is not None:
            self._reading_head.close()
            self._reading_head = None

    def log_request(self) -> None:
        if self.environ is not None:  # None for a request refused before it was parsed
            super().log_request()


class OneAcceptAtATimeServer(PyWSGIServer):
    # Workers share the listening socket: one that took up to 100 connections
    # per wake-up (gevent's default) would take most of a burst of reconnects.
    max_accept = 1


class PyWSGIWorker(GeventPyWSGIWorker):
    """gunicorn's gevent worker, serving HTTP with gevent's WSGI server instead of
    gunicorn's own parser and response writer: an empty poll costs 15 % less of
    the worker's CPU (see bench/README.md)."""

    server_class = OneAcceptAtATimeServer
    wsgi_handler = KeepAliveHandler


worker_class = PyWSGIWorker
preload_app = False
# gunicorn's runtime control socket lives at one path per user: several
# instances on one host (tests, blue/green) would fight over it, and we do not use it.
control_socket_disable = True
accesslog = os.environ.get("ACCESS_LOG") or None


def on_starting(server) -> None:
    check_process_model(server.cfg.workers, os.environ.get("REDIS_URL", ""))


def post_worker_init(worker) -> None:
    # Imported in the worker, after gevent's monkey-patching.
    from api.lifecycle import close_connections_when_shutting_down, end_long_polls_on_sigterm

    end_long_polls_on_sigterm(worker.wsgi)
    worker.wsgi = close_connections_when_shutting_down(worker.wsgi)
    _collect_garbage_seldom()


# Young-generation collections between two full ones (CPython's default: 10).
FULL_COLLECTION_EVERY = 1000


def _collect_garbage_seldom() -> None:
    """A full garbage collection stops the worker, and every poll it holds: with
    thousands held it scans half a million objects, 0.3 to 0.9 s on a small VM,
    and such pauses showed in the long tail of delivery latency. The app leaves
    little cyclic garbage (with 5,000 polls held, a full collection a minute
    found 150 to 250 objects), so full collections run a hundredth as often
    (about every ten minutes under that load; the young generations as usual),
    and never scan what the worker imported."""
    gc.collect()
    gc.freeze()
    young, middle, _full = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)


def child_exit(server, worker) -> None:
    """Drop a dead worker's live gauges (waiting polls) from the shared metrics."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
