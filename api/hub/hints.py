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

# Read KEYS[1] and KEYS[2]; raise the counter KEYS[1] to ARGV[1] only if that
# is not past the counter KEYS[2] (a cursor past the inbox head is a client's
# mistake) and, with a guard, KEYS[3] still holds ARGV[3]. Returns both values
# as read, and 1 if raised (its time to live is ARGV[2]), 0 if it was there
# already, -1 if the bound is unknown or lower, or the guard fails.
_GET_AND_RAISE_WITHIN = """
local current, bound = redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2])
local outcome = -1
if not KEYS[3] or redis.call('GET', KEYS[3]) == ARGV[3] then
  local wanted = tonumber(ARGV[1])
  if current and tonumber(current) >= wanted then
    outcome = 0
  elseif bound and tonumber(bound) >= wanted then
    redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
    outcome = 1
  end
end
return {current, bound, outcome}
"""

# What ``get_and_raise_within_then`` tells of the raise: done, there already, or
# None (it cannot tell); by the script's reply.
RAISED, THERE_ALREADY = True, False
_RAISED_WITHIN = {1: RAISED, 0: THERE_ALREADY}
OnRead = Callable[[list[str | None]], None]
OnReadAndRaised = Callable[[list[str | None], bool | None], None]


class LocalHints:
    """In-process hints for the embedded mode (one process sees every write)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, tuple[str, float]] = {}

    def get_many(self, keys: list[str]) -> list[str | None]:
        with self._lock:
            return [self._live(key) for key in keys]

    def get_many_then(self, trip: Trip, keys: list[str], then: OnRead) -> None:
        then(self.get_many(keys))

    def raise_to(self, values: dict[str, int], ttl: int, trip: Trip | None = None) -> None:
        expires = time.monotonic() + ttl
        with self._lock:
            for key, wanted in values.items():
                current = self._live(key)
                if current is None or int(current) <= wanted:
                    self._values[key] = (str(wanted), expires)

    def get_and_raise_within_then(
        self,
        trip: Trip,
        key: str,
        bound_key: str,
        value: int,
        ttl: int,
        then: OnReadAndRaised,
        guard: tuple[str, str] | None = None,
    ) -> None:
        if guard is not None:
            raise RuntimeError("the embedded mode has no cached key to guard on")
        with self._lock:
            current, bound = self._live(key), self._live(bound_key)
            if current is not None and int(current) >= value:
                outcome = THERE_ALREADY
            elif bound is None or int(bound) < value:
                outcome = None
            else:
                self._values[key] = (str(value), time.monotonic() + ttl)
                outcome = RAISED
        then([current, bound], outcome)

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
        self._get_and_raise_within = client.register_script(_GET_AND_RAISE_WITHIN)

    @redis_timer("hints_get")
    def get_many(self, keys: list[str]) -> list[str | None]:
        try:
            return _decoded(self._client.mget(keys))
        except redis.RedisError as exc:
            log.warning("hint read failed, falling back to the database: %s", exc)
            return [None] * len(keys)

    def get_many_then(self, trip: Trip, keys: list[str], then: OnRead) -> None:
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

    def get_and_raise_within_then(
        self,
        trip: Trip,
        key: str,
        bound_key: str,
        value: int,
        ttl: int,
        then: OnReadAndRaised,
        guard: tuple[str, str] | None = None,
    ) -> None:
        """In ``trip``: read the counters ``key`` and ``bound_key``, and raise
        ``key`` to ``value`` if that is not past ``bound_key`` and, with a
        ``guard``, the key ``guard[0]`` still holds ``guard[1]``. ``then`` gets
        the values as read, and ``RAISED``, ``THERE_ALREADY``, or None when it
        cannot tell (no bound cached, a lower one, the guard failed, or Redis
        did): the caller checks the bound itself then."""
        keys = [key, bound_key, *([guard[0]] if guard else [])]
        args = [value, ttl, *([guard[1]] if guard else [])]

        def read(reply: list) -> None:
            current, bound, outcome = reply
            then(_decoded([current, bound]), _RAISED_WITHIN.get(outcome))

        def failed(exc: redis.RedisError) -> None:
            log.warning("hint read failed, falling back to the database: %s", exc)
            then([None, None], None)

        trip.add(
            lambda pipe: queue_script(pipe, self._get_and_raise_within, keys, args), read, failed
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
