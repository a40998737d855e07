"""Ending a gunicorn worker gracefully.

On SIGTERM gunicorn stops accepting connections and waits for the requests in
flight. Long polls would hold it for up to their timeout, so they are answered
at once (an empty 200: their clients re-poll, landing on another process).
It also waits for keep-alive connections, so every answer given while shutting
down closes its connection (``Connection: close``, which gevent's WSGI server
honours) and the client's next request goes to another process.
"""

import signal

import gevent
from flask import Flask


def begin_shutdown(app: Flask) -> None:
    app.extensions["parley.hub"].hub.close()


def shutting_down(app: Flask) -> bool:
    return app.extensions["parley.hub"].hub.closing


def end_long_polls_on_sigterm(app: Flask) -> None:
    """Chain onto the worker's SIGTERM handler: it still stops the worker, and the
    app's held long polls are answered first."""
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum, frame) -> None:
        if callable(previous):
            previous(signum, frame)
        gevent.spawn(begin_shutdown, app)  # out of the signal handler: it may block

    signal.signal(signal.SIGTERM, on_sigterm)


def store_what_is_behind(app: Flask) -> None:
    """A worker's last act: store the confirmations it was to write a moment later
    (``api.write_behind``)."""
    app.extensions["parley.cursors.behind"].close()


def close_connections_when_shutting_down(app: Flask):
    """Wrap the worker's WSGI callable: answers started while shutting down close
    their connection."""

    def wsgi(environ, start_response):
        def start(status, headers, exc_info=None):
            if shutting_down(app):
                headers = [*headers, ("Connection", "close")]
            return start_response(status, headers, exc_info)

        return app(environ, start)

    return wsgi
