"""Small facts cached beside the database: inbox heads, confirmed cursors, tokens.

Everything here can be rebuilt from the database, so every read may miss and
every write may fail without losing anything: callers fall back to a query.
"""

import logging
import threading
import time

import redis

from api.metrics import redis_timer

log = logging.getLogger(__name__)

# Raise a counter, never lower it: two writers racing leave the larger value.
_RAISE_TO = """
local current = tonumber(redis.call('GET', KEYS[1]))
local wanted = tonumber(ARGV[1])
if current == nil or current < wanted then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  return wanted
end
return current
"""


class LocalHints:
    """In-process hints for the embedded mode (one process sees every write)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, tuple[str, float]] = {}

    def get_many(self, keys: list[str]) -> list[str | None]:
        with self._lock:
            return [self._live(key) for key in keys]

    def raise_to(self, values: dict[str, int], ttl: int) -> None:
        expires = time.monotonic() + ttl
        with self._lock:
            for key, wanted in values.items():
                current = self._live(key)
                if current is None or int(current) < wanted:
                    self._values[key] = (str(wanted), expires)

    def set(self, key: str, value: str, ttl: int, only_if_absent: bool = False) -> None:
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
            return [v.decode() if v is not None else None for v in self._client.mget(keys)]
        except redis.RedisError as exc:
            log.warning("hint read failed, falling back to the database: %s", exc)
            return [None] * len(keys)

    @redis_timer("hints_raise")
    def raise_to(self, values: dict[str, int], ttl: int) -> None:
        try:
            with self._client.pipeline(transaction=False) as pipe:
                for key, wanted in values.items():
                    self._raise_to(keys=[key], args=[wanted, ttl], client=pipe)
                pipe.execute()
        except redis.RedisError as exc:
            log.warning("hint write failed (it expires by itself): %s", exc)

    @redis_timer("hints_set")
    def set(self, key: str, value: str, ttl: int, only_if_absent: bool = False) -> None:
        try:
            self._client.set(key, value, ex=ttl, nx=only_if_absent)
        except redis.RedisError as exc:
            log.warning("hint write failed: %s", exc)
