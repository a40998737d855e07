"""Ending a worker process gracefully.

On SIGTERM gunicorn stops accepting connections and waits for the requests in
flight. Long polls would hold it for up to their timeout, so they are answered
at once (an empty 200: their clients re-poll, landing on another process), and
every later answer closes its connection.
"""

import signal

import gevent
from flask import Flask


def begin_shutdown(app: Flask) -> None:
    app.extensions["parley.hub"].hub.close()


def end_long_polls_on_sigterm(app: Flask) -> None:
    """Chain onto the worker's SIGTERM handler: it still stops the worker, and the
    app's held long polls are answered first."""
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum, frame) -> None:
        if callable(previous):
            previous(signum, frame)
        gevent.spawn(begin_shutdown, app)  # out of the signal handler: it may block

    signal.signal(signal.SIGTERM, on_sigterm)
