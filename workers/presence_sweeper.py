"""Turn users offline when their presence window has passed, and tell their contacts.

Safe to run several at once: each user who went offline is popped from the
store by exactly one sweeper, and the announcement itself is idempotent.
Presence kept in process (the embedded mode) is swept by the web process itself.
"""

from flask import Flask

from api.presence.actions import do_sweep
from workers.base import Worker


class PresenceSweeper(Worker):
    name = "presence-sweeper"
    needs_redis = True  # as a process of its own; the web process runs it otherwise

    def __init__(self, app: Flask) -> None:
        super().__init__(app)
        self.interval_s = app.config["PRESENCE_SWEEP_INTERVAL_S"]

    def step(self) -> int:
        return do_sweep()
