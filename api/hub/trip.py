"""Redis commands of several features, sent in one round trip.

A poll starts by reading the cached cursor and head, noting the device's
presence and announcing itself to the other processes: three features, one
Redis. Each queues its command on a :class:`Trip` with what to do with the
reply and with a failure (every one of them has a fallback), and ``send`` makes
one round trip for all. In the embedded mode the stores live in the process:
they answer at once and queue nothing.

Scripts go in with their source (``queue_script``): a redis-py pipeline holding
``Script`` objects sends SCRIPT EXISTS first, a second round trip every time,
and an EVALSHA that a restarted Redis no longer knows would fail inside the
pipeline, after the commands queued behind it had run (a wake-up published
before the head it announces was raised). Redis caches a script it is sent
by its digest, so the source costs bytes, not compiling.
"""

from collections.abc import Callable
from typing import Any

import redis
from redis.client import Pipeline
from redis.commands.core import Script

from api.metrics import redis_timer

OnReply = Callable[[Any], None]
OnError = Callable[[redis.RedisError], None]


def queue_script(pipe: Pipeline, script: Script, keys: list[str], args: list[Any]) -> None:
    """Queue ``script`` on ``pipe`` by its source (see the module's docstring)."""
    pipe.eval(script.script, len(keys), *keys, *args)


def ignore_reply(_reply: object) -> None:
    """The handler of a command whose reply does not matter (a publish, a write)."""


class Trip:
    """Commands queued for one round trip; ``send`` hands each reply to its handler."""

    def __init__(self, client: redis.Redis | None) -> None:
        self._pipe: Pipeline | None = (
            client.pipeline(transaction=False) if client is not None else None
        )
        self._handlers: list[tuple[OnReply, OnError]] = []

    def add(
        self, queue: Callable[[Pipeline], object], on_reply: OnReply, on_error: OnError
    ) -> None:
        """Queue a command (``queue`` calls it on the pipeline) and its handlers."""
        if self._pipe is None:
            raise RuntimeError("nothing goes to Redis in the embedded mode")
        queue(self._pipe)
        self._handlers.append((on_reply, on_error))

    def send(self) -> None:
        """Send what was queued, in one round trip, and run the handlers in order."""
        if not self._handlers:
            return
        replies = self._execute()
        handlers, self._handlers = self._handlers, []
        for (on_reply, on_error), reply in zip(handlers, replies, strict=True):
            if isinstance(reply, redis.RedisError):
                on_error(reply)
            else:
                on_reply(reply)

    @redis_timer("trip")
    def _execute(self) -> list[Any]:
        try:
            return self._pipe.execute(raise_on_error=False)
        except redis.RedisError as exc:  # no answer at all: every command failed
            return [exc] * len(self._handlers)
        finally:
            self._pipe.reset()
