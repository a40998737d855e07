"""Writing behind: counters a request raises, written together a moment later.

A poll confirms its device's cursor with ``after``, and needs nothing back: its
client learns nothing from the write, and another poll finds the cursor in the
cache, raised at once. Written as the poll came, each confirmation was a
statement (and a commit) of its own, waited for by the poll: about a tenth of
a worker's time with thousands of devices polling. Here the confirmations of a
process gather for ``delay_s`` and go out in one statement a batch.

What a process holds when it dies without flushing is lost, so a counter
written behind must be one whose loss costs nothing but repetition: a cursor
left behind redelivers what it had confirmed (delivery is at least once), it
never skips anything. A write that fails (the database away) is tried again
``delay_s`` later, with whatever came meanwhile.
"""

import logging
import threading
from collections.abc import Callable

from flask import Flask

log = logging.getLogger(__name__)


class WriteBehind:
    """Counters by key that only rise (the highest kept), written by ``write`` in
    the app's context ``delay_s`` after the first one of a batch came."""

    def __init__(
        self, app: Flask, write: Callable[[dict[int, int]], object], delay_s: float
    ) -> None:
        self._app = app
        self._write = write
        self._delay_s = delay_s
        self._lock = threading.Lock()
        self._pending: dict[int, int] = {}
        self._writing: dict[int, int] = {}  # taken by the write under way
        self._timer: threading.Timer | None = None
        self._closed = False

    def raise_to(self, key: int, value: int) -> None:
        """Write ``value`` for ``key`` soon, unless a higher one is written with it."""
        with self._lock:
            self._merge({key: value})

    def pending(self, key: int) -> int | None:
        """The value for ``key`` not written yet (waiting, or being written), if any."""
        return max(self._pending.get(key, 0), self._writing.get(key, 0)) or None

    def close(self) -> None:
        """Write what is pending, once, and nothing later (the process stops)."""
        with self._lock:
            self._closed = True
        self.flush()

    def flush(self) -> None:
        """Write what is pending now."""
        with self._lock:
            pending, self._pending = self._pending, {}
            self._writing.update(pending)
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        if not pending:
            return
        try:
            with self._app.app_context():
                self._write(pending)
        except Exception:
            log.exception("%d counters not written yet", len(pending))
            with self._lock:
                self._merge(pending)
        finally:
            with self._lock:
                for key, value in pending.items():
                    if self._writing.get(key) == value:
                        del self._writing[key]

    def _merge(self, values: dict[int, int]) -> None:
        """Keep the highest of each key, and have them written (under the lock)."""
        pending = self._pending
        for key, value in values.items():
            if value > pending.get(key, value - 1):
                pending[key] = value
        if self._timer is None and not self._closed:
            self._timer = threading.Timer(self._delay_s, self.flush)
            self._timer.daemon = True
            self._timer.start()
