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

import hiredis
import redis
from redis.client import Pipeline
from redis.commands.core import Script
from redis.connection import AbstractConnection

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
        """The queued commands' replies (an error reply in its place); every one an
        error if no answer came at all.

        What ``Pipeline.execute`` does without a transaction, on a connection of
        the pool, with the connection's retries, but without what redis-py 8 adds
        around it (its observability records, a pass for HIMPORT field sets, a
        second reset): the pipeline only builds the commands. That was 2 % of an
        empty poll's CPU, and every request that touches Redis makes a trip.
        """
        pipe = self._pipe
        commands, pipe.command_stack = pipe.command_stack, []
        pool = pipe.connection_pool
        try:
            connection = pool.get_connection()
        except redis.RedisError as exc:
            return [exc] * len(commands)
        try:
            return connection.retry.call_with_retry(
                lambda: _round_trip(pipe, connection, commands),
                lambda _error: connection.disconnect(),
            )
        except redis.RedisError as exc:  # no answer at all: every command failed
            connection.disconnect()
            return [exc] * len(commands)
        except BaseException:  # cut short (a greenlet killed): replies may be left unread
            connection.disconnect()
            raise
        finally:
            pool.release(connection)


def _round_trip(pipe: Pipeline, connection: AbstractConnection, commands: list) -> list[Any]:
    connection.send_packed_command([b"".join([_packed(args) for args, _ in commands])])
    replies: list[Any] = []
    for args, options in commands:
        try:
            replies.append(pipe.parse_response(connection, args[0], **options))
        except redis.ResponseError as exc:  # this command's error; read the rest
            replies.append(exc)
    return replies


def _packed(args: tuple) -> bytes:
    """A command in Redis's protocol, packed by hiredis. redis-py packs with hiredis
    too, through Python that converts buffers and lays the pieces out in chunks:
    33,000 instructions for a poll's EVAL, against 2,000. As redis-py's: a name of
    two words (``CLIENT GETNAME``) goes as two arguments, and an argument Redis
    cannot take is a DataError (every command of the trip then fails, each to its
    handler's fallback)."""
    name, *rest = args
    if isinstance(name, str) and " " in name:
        args = (*name.split(), *rest)
    try:
        return hiredis.pack_command(args)
    except TypeError as exc:
        raise redis.DataError(str(exc)) from exc
