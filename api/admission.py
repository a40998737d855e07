"""Admission: at most ``ADMITTED_REQUESTS`` API requests of a process work at once.

Under gevent every request is a greenlet, and nothing else stops a burst of
thousands (every phone reconnecting after a network blip, a deploy) from all
working at once. Each of them then holds a Redis or database connection while
thousands of others run before it is scheduled again: the pools run dry, their
waits time out and requests fail with 503. Admitted requests find the pools
free; the others wait their turn, in arrival order, and are answered 503 with
``Retry-After`` only past ``ADMISSION_WAIT_S``.

A long poll gives its turn back while it waits (it holds nothing by then) and
takes a new one when woken, so thousands of held polls keep nobody out.
"""

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from flask import Flask, current_app, g, request

from api.errors import RETRY_AFTER_S, ApiError

ADMITTED_PATHS = "/v1/"  # operations endpoints answer even when the API is busy


class Admission:
    def __init__(self, slots: int, wait_s: float) -> None:
        # threading's semaphore is gevent's under gunicorn (monkey-patched): waiters
        # are woken in the order they came.
        self._slots = threading.Semaphore(slots)
        self._wait_s = wait_s

    def enter(self) -> None:
        if not self._slots.acquire(timeout=self._wait_s):
            raise ApiError(
                503,
                "server_busy",
                "Too many requests at once; nothing was done. Retry shortly.",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        g.admitted = True

    def leave(self) -> None:
        if g.pop("admitted", False):
            self._slots.release()


def init_admission(app: Flask) -> None:
    admission = Admission(app.config["ADMITTED_REQUESTS"], app.config["ADMISSION_WAIT_S"])
    app.extensions["parley.admission"] = admission

    @app.before_request
    def admit() -> None:
        if request.path.startswith(ADMITTED_PATHS):
            admission.enter()

    app.teardown_request(lambda _exc: admission.leave())


@contextmanager
def stepping_aside() -> Iterator[None]:
    """Give this request's turn back for the block (a long poll's wait); take a
    new one after it (which may raise the 503 of a busy server)."""
    admission: Admission = current_app.extensions["parley.admission"]
    admitted = g.get("admitted", False)
    admission.leave()
    try:
        yield
    finally:
        if admitted:
            admission.enter()
