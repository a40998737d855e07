"""Where polls are noted, per device, with the time each stops counting as online.

A user is online while any device's deadline lies ahead: a poll sets its
device's deadline to the poll's end (or the longest it may be held) plus the
presence window. Users whose deadlines have all passed are popped by ``expire``,
atomically, so that of several sweepers exactly one sees each user go offline.

The user's last seen is their deadline less the window: the end of their last
poll. A long poll that runs out its time ends when its start said it would, so
nothing needs noting at its end.
"""

import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import redis

from api.hub.keyspace import KeySpace
from api.hub.trip import Trip, queue_script
from api.metrics import redis_timer

# Set one device's deadline; the user's deadline becomes the latest live one.
# Returns 1 if the user was not online before (came online), else 0; with a
# guard (KEYS[3] must hold ARGV[6]) that fails, or a deadline to replace
# (ARGV[7]) that is not the device's any more, touches nothing and returns -1.
_TOUCH = """
if KEYS[3] and redis.call('GET', KEYS[3]) ~= ARGV[6] then return -1 end
if ARGV[7] and redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[7] then return -1 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local fields = redis.call('HGETALL', KEYS[1])
local latest = 0
for i = 1, #fields, 2 do
  local deadline = tonumber(fields[i + 1])
  if deadline <= tonumber(ARGV[3]) then
    redis.call('HDEL', KEYS[1], fields[i])
  elseif deadline > latest then
    latest = deadline
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[5])
local before = redis.call('ZSCORE', KEYS[2], ARGV[4])
redis.call('ZADD', KEYS[2], latest, ARGV[4])
if before then return 0 end
return 1
"""

# Pop users whose deadline has passed, keeping when each was last seen.
_EXPIRE = """
local gone = redis.call(
  'ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[2])
local users = {}
for i = 1, #gone, 2 do
  redis.call('ZREM', KEYS[1], gone[i])
  redis.call('HSET', KEYS[2], gone[i], tostring(tonumber(gone[i + 1]) - tonumber(ARGV[3])))
  users[#users + 1] = gone[i]
end
return users
"""


def _state(
    deadline: float | None, last_seen: float | None, now: float, window_s: float
) -> tuple[bool, float | None]:
    """Online, and last seen: while a deadline is kept, the end of the last poll
    (now, while one is held); once popped, what ``expire`` kept."""
    if deadline is None:
        return False, last_seen
    return deadline > now, min(now, deadline - window_s)


OnTouched = Callable[[bool | None], None]  # whether the user came online; None: guarded off
OnFailed = Callable[[redis.RedisError], None]


class LocalPresenceStore:
    """The embedded mode's store: one process sees every poll."""

    def __init__(self, window_s: float) -> None:
        self._window_s = window_s
        self._lock = threading.Lock()
        self._devices: dict[int, dict[int, float]] = defaultdict(dict)
        self._deadlines: dict[int, float] = {}
        self._last_seen: dict[int, float] = {}

    def touch(
        self,
        user_id: int,
        device_id: int,
        deadline: float,
        now: float,
        replacing: float | None = None,
    ) -> bool | None:
        with self._lock:
            devices = self._devices[user_id]
            if replacing is not None and devices.get(device_id) != replacing:
                return None
            devices[device_id] = deadline
            for device, until in list(devices.items()):
                if until <= now:
                    del devices[device]
            came_online = user_id not in self._deadlines
            self._deadlines[user_id] = max(devices.values())
            return came_online

    def touch_then(
        self,
        trip: Trip,
        then: OnTouched,
        failed: OnFailed,
        *args: Any,
        guard: tuple[str, str] | None = None,
        replacing: float | None = None,
    ) -> None:
        if guard is not None:
            raise RuntimeError("the embedded mode has no cached key to guard on")
        then(self.touch(*args, replacing=replacing))

    def expire(self, now: float, limit: int) -> list[int]:
        with self._lock:
            gone = [uid for uid, until in self._deadlines.items() if until <= now][:limit]
            for uid in gone:
                self._last_seen[uid] = self._deadlines.pop(uid) - self._window_s
            return gone

    def states(self, user_ids: list[int], now: float) -> dict[int, tuple[bool, float | None]]:
        with self._lock:
            return {
                uid: _state(self._deadlines.get(uid), self._last_seen.get(uid), now, self._window_s)
                for uid in user_ids
            }


class RedisPresenceStore:
    """Presence shared by every process. Its keys carry one hash tag, so the
    scripts stay on one Redis Cluster slot (a guard's key excepted)."""

    def __init__(
        self, client: redis.Redis, keys: KeySpace, window_s: float, device_ttl_s: int
    ) -> None:
        self._client = client
        self._window_s = window_s
        self._keys = keys
        self._device_ttl_s = device_ttl_s
        self._touch = client.register_script(_TOUCH)
        self._expire = client.register_script(_EXPIRE)

    def touch_then(
        self,
        trip: Trip,
        then: OnTouched,
        failed: OnFailed,
        *args: Any,
        guard: tuple[str, str] | None = None,
        replacing: float | None = None,
    ) -> None:
        """Set the device's deadline (``user_id, device_id, deadline, now``) in
        ``trip``, only if the key ``guard[0]`` holds ``guard[1]`` (when guarded) and
        the device's deadline is still ``replacing`` (when given): once it is sent,
        ``then`` gets whether the user came online (``None`` if nothing was set),
        or ``failed`` gets the error."""
        keys, script_args = self._touch_keys_args(*args)
        if guard is not None:
            keys.append(guard[0])
        script_args.append(guard[1] if guard else "")  # read only with a guard key
        if replacing is not None:
            script_args.append(replacing)
        trip.add(
            lambda pipe: queue_script(pipe, self._touch, keys, script_args),
            lambda reply: then(None if reply == -1 else bool(reply)),
            failed,
        )

    def _key(self, name: str) -> str:
        return f"{self._keys.prefix}presence:{{p}}:{name}"

    def _touch_keys_args(
        self, user_id: int, device_id: int, deadline: float, now: float
    ) -> tuple[list[str], list[Any]]:
        keys = [self._key(f"devices:{user_id}"), self._key("deadlines")]
        return keys, [device_id, deadline, now, user_id, self._device_ttl_s]

    @redis_timer("presence_expire")
    def expire(self, now: float, limit: int) -> list[int]:
        keys = [self._key("deadlines"), self._key("last-seen")]
        args = [now, limit, self._window_s]
        return [int(uid) for uid in self._expire(keys=keys, args=args)]

    @redis_timer("presence_states")
    def states(self, user_ids: list[int], now: float) -> dict[int, tuple[bool, float | None]]:
        if not user_ids:
            return {}
        with self._client.pipeline(transaction=False) as pipe:
            pipe.zmscore(self._key("deadlines"), user_ids)
            pipe.hmget(self._key("last-seen"), user_ids)
            deadlines, seen = pipe.execute()
        return {
            uid: _state(until, float(last) if last else None, now, self._window_s)
            for uid, until, last in zip(user_ids, deadlines, seen, strict=True)
        }
