"""The loop every background worker shares: step, pause, repeat until told to stop."""

import logging
import signal
import threading

from flask import Flask

log = logging.getLogger(__name__)


class Worker:
    """Subclasses name themselves, set how often they run, and implement ``step``."""

    name: str
    interval_s: float
    # True for workers whose state is shared through Redis: run as a process of
    # their own only in the scaled mode (the web process runs them otherwise).
    needs_redis = False

    def __init__(self, app: Flask) -> None:
        self.app = app
        self._stopping = threading.Event()

    def step(self) -> int:
        """Do one round of work; return how many things it handled (for the log)."""
        raise NotImplementedError

    def stop(self) -> None:
        self._stopping.set()

    def run_as_process(self) -> None:
        """Run until SIGTERM or SIGINT (``python -m workers NAME``)."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self.stop())
        self.run_forever()

    def start_in_background(self) -> threading.Thread:
        """Run inside this process (a greenlet under gunicorn's gevent worker)."""
        thread = threading.Thread(target=self.run_forever, name=self.name, daemon=True)
        thread.start()
        return thread

    def run_forever(self) -> None:
        log.info("%s started, every %s s", self.name, self.interval_s)
        while not self._stopping.is_set():
            try:
                with self.app.app_context():
                    handled = self.step()
                if handled:
                    log.info("%s handled %d", self.name, handled)
            except Exception:
                # One failed round (database restarting, say) must not end the worker.
                log.exception("%s step failed; retrying next round", self.name)
            self._stopping.wait(self.interval_s)
        log.info("%s stopped", self.name)
