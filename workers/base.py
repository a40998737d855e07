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

    def __init__(self, app: Flask) -> None:
        self.app = app
        self._stopping = threading.Event()

    def step(self) -> int:
        """Do one round of work; return how many things it handled (for the log)."""
        raise NotImplementedError

    def stop(self) -> None:
        self._stopping.set()

    def run_forever(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self.stop())
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
