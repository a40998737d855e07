"""Admission: at most ``ADMITTED_REQUESTS`` API requests of a process work at once.

Under gevent every request is a greenlet, and nothing else stops a burst of
thousands (every phone reconnecting after a network blip, a deploy) from all
working at once. Each of them then holds a Redis or database connection while
thousands of others run before it is scheduled again: the pools run dry, their
waits time out and requests fail with 503. Admitted requests find the pools
free; the others wait their turn, in arrival order, and are answered 503 with
``Retry-After`` only past ``ADMISSION_WAIT_S``.

A long poll gives its turn back while it waits (it holds nothing by then) and
takes a new one after the read that ends its wait (those reads gather, and
bound themselves: ``api.gathering``), so thousands of held polls keep nobody
out. Coming back, it goes before the new requests: its client has waited
through the whole poll already, and under overload the server finishes the
work it started (and sheds new work with 503s) rather than let a poll's answer
come too late for the client that is still waiting for it. One that ran out its
time with nothing to answer takes no turn at all: its empty answer is due at
once (a proxy in front cuts the request soon after), and costs next to nothing.

A send goes ahead of the new requests too (its view is marked ``goes_ahead``):
its wait for a turn is its message's latency, for every member. The polls it
passes lose nothing: a poll starts by checking the inbox, so what was sent
while it stood in line is in its answer. In a group of 116 taking 10 sends a
second (the benchmark's fan-out), a send waited 190 to 250 ms (p50) for its
turn behind the members' next polls; going ahead of them, 29 ms.
"""

import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from flask import Flask

from api.context import this_app, this_g, this_request
from api.errors import RETRY_AFTER_S, ApiError
from api.metrics import ADMISSION_WAITING

ADMITTED_PATHS = "/v1/"  # operations endpoints answer even when the API is busy


class Admission:
    """``slots`` turns to work; the waiting take them first come, first served,
    polls coming back from their wait and sends before other new requests."""

    def __init__(self, slots: int, wait_s: float) -> None:
        self._lock = threading.Lock()
        self._free = slots
        self._wait_s = wait_s
        self._ahead: deque[threading.Event] = deque()
        self._new: deque[threading.Event] = deque()

    def enter(self, ahead: bool = False) -> None:
        """Take a turn (``ahead``: before new requests, for a poll back from its
        wait or a send), or raise 503 past the wait."""
        if not self._take(self._ahead if ahead else self._new):
            raise ApiError(
                503,
                "server_busy",
                "Too many requests at once; nothing was done. Retry shortly.",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        this_g().admitted = True

    def _take(self, queue: deque[threading.Event]) -> bool:
        with self._lock:
            if self._free:  # nobody waits while a turn is free: turns pass straight on
                self._free -= 1
                return True
            ticket = threading.Event()
            queue.append(ticket)
        with ADMISSION_WAITING.track_inprogress():
            if ticket.wait(self._wait_s):
                return True
        with self._lock:
            if ticket.is_set():  # handed a turn just as the wait ran out
                return True
            queue.remove(ticket)
            return False

    def leave(self) -> None:
        if not this_g().pop("admitted", False):
            return
        with self._lock:
            for queue in (self._ahead, self._new):
                if queue:
                    queue.popleft().set()
                    return
            self._free += 1


def init_admission(app: Flask) -> None:
    admission = Admission(app.config["ADMITTED_REQUESTS"], app.config["ADMISSION_WAIT_S"])
    app.extensions["parley.admission"] = admission

    @app.before_request
    def admit() -> None:
        asked = this_request()
        if asked.path.startswith(ADMITTED_PATHS):
            view = app.view_functions.get(asked.endpoint)
            admission.enter(ahead=getattr(view, "goes_ahead", False))

    app.teardown_request(lambda _exc: admission.leave())


def goes_ahead(view: Callable) -> Callable:
    """Mark a view whose requests take their turn before other new requests."""
    view.goes_ahead = True
    return view


class Aside:
    """A request that has given its turn back (``stepping_aside``)."""

    rejoins = True

    def answer_without_a_turn(self) -> None:
        """What is left of the request is too little to queue for: a long poll that
        ran out its time answers an empty batch, which a client behind a proxy
        must have within the poll's timeout, not one wait for a turn later."""
        self.rejoins = False


@contextmanager
def stepping_aside() -> Iterator[Aside]:
    """Give this request's turn back for the block (a long poll's wait); take a
    new one after it, before any new request (it may still raise the 503 of a
    busy server), unless the block answers without one."""
    admission: Admission = this_app().extensions["parley.admission"]
    admitted = this_g().get("admitted", False)
    admission.leave()
    aside = Aside()
    try:
        yield aside
    finally:
        if admitted and aside.rejoins:
            admission.enter(ahead=True)
