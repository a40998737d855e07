"""Small facts cached beside the database: inbox heads, confirmed cursors, tokens.

Everything here can be rebuilt from the database, so every read may miss and
every write may fail without losing anything: callers fall back to a query.
"""

import logging
import threading
import time
from collections.abc import Callable

import redis

from api.hub.trip import Trip, ignore_reply, queue_script
from api.metrics import redis_timer

log = logging.getLogger(__name__)

# Raise counters, never lower them: two writers racing leave the larger value.
# One raised to the value it has lives for another time to live: the value was
# just confirmed. KEYS[i] is raised to ARGV[i]; the last ARGV is the time to live.
_RAISE_TO = """
local ttl = ARGV[#ARGV]
for i, key in ipairs(KEYS) do
  local current = tonumber(redis.call('GET', key))
  if current == nil or current <= tonumber(ARGV[i]) then
    redis.call('SET', key, ARGV[i], 'EX', ttl)
  end
end
"""


class LocalHints:
    """In-process hints for the embedded mode (one process sees every write)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, tuple[str, float]] = {}

    def get_many(self, keys: list[str]) -> list[str | None]:
        with self._lock:
            return [self._live(key) for key in keys]

    def get_many_then(
        self, trip: Trip, keys: list[str], then: Callable[[list[str | None]], None]
    ) -> None:
        then(self.get_many(keys))

    def raise_to(self, values: dict[str, int], ttl: int, trip: Trip | None = None) -> None:
        expires = time.monotonic() + ttl
        with self._lock:
            for key, wanted in values.items():
                current = self._live(key)
                if current is None or int(current) <= wanted:
                    self._values[key] = (str(wanted), expires)

    def set(
        self,
        key: str,
        value: str,
        ttl: int,
        only_if_absent: bool = False,
        trip: Trip | None = None,
    ) -> None:
        with self._lock:
            if only_if_absent and self._live(key) is not None:
                return
            self._values[key] = (value, time.monotonic() + ttl)

    def _live(self, key: str) -> str | None:
        item = self._values.get(key)
        if item is None:
            return None
        if item[1] <= time.monotonic():
            del self._values[key]
            return None
        return item[0]


class RedisHints:
    """Hints shared by every process through Redis."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._raise_to = client.register_script(_RAISE_TO)

    @redis_timer("hints_get")
    def get_many(self, keys: list[str]) -> list[str | None]:
        try:
            return _decoded(self._client.mget(keys))
        except redis.RedisError as exc:
            log.warning("hint read failed, falling back to the database: %s", exc)
            return [None] * len(keys)

    def get_many_then(
        self, trip: Trip, keys: list[str], then: Callable[[list[str | None]], None]
    ) -> None:
        """Like ``get_many``, in ``trip``: ``then`` gets the values once it is sent."""

        def failed(exc: redis.RedisError) -> None:
            log.warning("hint read failed, falling back to the database: %s", exc)
            then([None] * len(keys))

        trip.add(lambda pipe: pipe.mget(keys), lambda values: then(_decoded(values)), failed)

    def raise_to(self, values: dict[str, int], ttl: int, trip: Trip | None = None) -> None:
        """Raise these counters (never lower them), now or in ``trip``; one that
        already has its value lives for another ``ttl``."""
        if not values:
            return
        if trip is None:
            self._raise_now(values, ttl)
            return
        keys, args = list(values), [*values.values(), ttl]
        trip.add(
            lambda pipe: queue_script(pipe, self._raise_to, keys, args), ignore_reply, _not_raised
        )

    @redis_timer("hints_raise")
    def _raise_now(self, values: dict[str, int], ttl: int) -> None:
        # One script call for all of them: one round trip, where a pipeline of
        # scripts costs two (redis-py checks SCRIPT EXISTS before every such pipeline).
        try:
            self._raise_to(keys=list(values), args=[*values.values(), ttl])
        except redis.RedisError as exc:
            _not_raised(exc)

    def set(
        self,
        key: str,
        value: str,
        ttl: int,
        only_if_absent: bool = False,
        trip: Trip | None = None,
    ) -> None:
        """Set a hint (only where absent, if asked), now or in ``trip``."""
        if trip is None:
            self._set_now(key, value, ttl, only_if_absent)
            return
        trip.add(
            lambda pipe: pipe.set(key, value, ex=ttl, nx=only_if_absent),
            ignore_reply,
            _not_set,
        )

    @redis_timer("hints_set")
    def _set_now(self, key: str, value: str, ttl: int, only_if_absent: bool) -> None:
        try:
            self._client.set(key, value, ex=ttl, nx=only_if_absent)
        except redis.RedisError as exc:
            _not_set(exc)


def _decoded(values: list[bytes | None]) -> list[str | None]:
    return [value.decode() if value is not None else None for value in values]


def _not_set(exc: redis.RedisError) -> None:
    log.warning("hint write failed: %s", exc)


def _not_raised(exc: redis.RedisError) -> None:
    log.warning("hint write failed (it expires by itself): %s", exc)
