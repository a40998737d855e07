"""Wake-ups across processes through one Redis pub/sub channel.

Each process keeps one subscription, read by one background listener (a
greenlet under gunicorn's gevent worker). Redis pub/sub is at-most-once: while
the listener is disconnected, wake-ups are lost. So after every (re)subscribe
it wakes all local waiters to re-check, and waiters re-read the database at the
end of their timeout regardless.

Channel messages:

    u:<user_id>,<user_id>,…        new inbox entries for these users
    s:<device_id>:<user_id>,…      the same, made by this device (a send): its
                                   own polls are not woken
    e:<device_id>:<user_id>.<seq>,…:<database>:<entry>
                                   one new entry (JSON, a few KiB at most), the
                                   seq-th of each user's inbox in ``database``
                                   (``KeySpace.database``): its polls answer with
                                   it rather than read it back; a process on
                                   another database wakes them only (device_id
                                   may be empty)
    d:<device_id>:<started_at>     a poll of this device began at started_at;
                                   end its older polls
    x:<device_id>                  this device logged out: end its poll (401)

Every process hears every message, so a poll is announced only when its device
may hold an older one: each poll marks its device in Redis for as long as it
may be held, and takes the mark back when it is answered early. A device's
next poll usually comes after its last answer, and goes unannounced.

A process that does not know a kind ignores it (during a rolling deploy, a
wake-up it cannot read costs its waiters one timeout at most).
"""

import contextlib
import logging
import random
import threading
from collections.abc import Mapping
from typing import Any

import orjson
import redis

from api.hub.base import Hub
from api.hub.keyspace import KeySpace
from api.hub.trip import Trip, ignore_reply, queue_script
from api.hub.waiters import Waiter

log = logging.getLogger(__name__)

RECONNECT_BACKOFF_S = (0.05, 5.0)  # first and largest pause between reconnects
SUBSCRIBE_GRACE_S = 1.0  # how long a new poll waits for a listener that is (re)connecting
READ_TIMEOUT_S = 1.0  # the listener checks for shutdown this often
# A poll's mark lapses this long before its time is up: it was set a round trip
# after the poll began, and the device's next poll, once this one has run out its
# time, must not find it. (A newer poll in that last moment leaves the older one
# held to its end, a moment later, as if announced too late.)
MARK_LAPSES_EARLY_S = 0.1

# Mark the device as holding this poll (KEYS[1] = ARGV[1], the poll's start,
# for ARGV[2] ms); announce it (ARGV[4] on channel ARGV[3]) if it held one.
_HOLD = """
if redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'GET') then
  redis.call('PUBLISH', ARGV[3], ARGV[4])
end
"""

# Take back the mark of a poll answered early, unless a newer poll replaced it.
_LET_GO = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
"""


class RedisHub(Hub):
    def __init__(self, client: redis.Redis, keys: KeySpace) -> None:
        super().__init__()
        self._client = client
        self._channel = keys.base + "wake"
        self._keys = keys
        self._hold = client.register_script(_HOLD)
        self._let_go = client.register_script(_LET_GO)
        self._subscribed = threading.Event()
        self._closing = threading.Event()
        self._start_lock = threading.Lock()
        self._listener: threading.Thread | None = None

    def notify_users(
        self,
        heads: Mapping[int, int],
        except_device: int | None,
        trip: Trip,
        entry: dict[str, Any] | None = None,
    ) -> None:
        if not heads:
            return
        if entry is not None:
            try:
                encoded = orjson.dumps(entry)
            except TypeError:  # after the commit, a plain wake-up rather than a 500
                log.exception("a new entry not carried by its wake-up")
            else:
                seqs = ",".join(f"{uid}.{seq}" for uid, seq in heads.items())
                device = "" if except_device is None else except_device
                head = f"e:{device}:{seqs}:{self._keys.database}:"
                self._publish(trip, head.encode() + encoded)
                return
        ids = ",".join(str(uid) for uid in sorted(heads))
        self._publish(trip, f"u:{ids}" if except_device is None else f"s:{except_device}:{ids}")

    def _announce_poll(self, waiter: Waiter, trip: Trip, holds_for: float) -> None:
        if self.closing:
            return
        # Re-checking the inbox before the subscription is live could miss a
        # wake-up sent in between (or a newer poll's announcement); wait briefly
        # for it (the end-of-timeout re-read covers a listener that cannot connect).
        self._ensure_listener()
        self._subscribed.wait(SUBSCRIBE_GRACE_S)
        started = repr(waiter.started_at)
        marked_ms = max(1, int((holds_for - MARK_LAPSES_EARLY_S) * 1000))
        keys = [self._held_key(waiter)]
        args = [started, marked_ms, self._channel, f"d:{waiter.device_id}:{started}"]
        trip.add(
            lambda pipe: queue_script(pipe, self._hold, keys, args), ignore_reply, _not_announced
        )

    def log_out(self, device_id: int, trip: Trip) -> None:
        self._publish(trip, f"x:{device_id}")  # this process hears it too

    def answered(self, waiter: Waiter, trip: Trip) -> None:
        keys, args = [self._held_key(waiter)], [repr(waiter.started_at)]
        trip.add(
            lambda pipe: queue_script(pipe, self._let_go, keys, args), ignore_reply, _not_let_go
        )

    def _held_key(self, waiter: Waiter) -> str:
        return f"{self._keys.prefix}held:{waiter.device_id}"

    def _publish(self, trip: Trip, payload: str | bytes) -> None:
        trip.add(lambda pipe: pipe.publish(self._channel, payload), ignore_reply, _not_published)

    def _ensure_listener(self) -> None:
        if self._listener is not None:
            return
        with self._start_lock:
            if self._listener is None and not self._closing.is_set():
                self._listener = threading.Thread(
                    target=self._listen, name="parley-hub-listener", daemon=True
                )
                self._listener.start()

    def _listen(self) -> None:
        pause = RECONNECT_BACKOFF_S[0]
        while not self._closing.is_set():
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self._channel)
                self._subscribed.set()
                self.waiters.wake_all()  # whatever was sent while we were away
                pause = RECONNECT_BACKOFF_S[0]
                while not self._closing.is_set():
                    message = pubsub.get_message(timeout=READ_TIMEOUT_S)
                    if message is not None:
                        self._dispatch_readable(message["data"])
            except (redis.RedisError, OSError) as exc:
                log.warning("wake-up listener lost Redis, reconnecting: %s", exc)
            finally:
                self._subscribed.clear()
                _close_quietly(pubsub)
            self._closing.wait(pause * (0.5 + random.random()))
            pause = min(pause * 2, RECONNECT_BACKOFF_S[1])

    def _dispatch_readable(self, data: bytes) -> None:
        """Dispatch a message, unless it cannot be read: ignored (its waiters run out
        their time), it must not end the listener."""
        try:
            self._dispatch(data)
        except ValueError:
            log.warning("unreadable wake-up ignored: %r", data[:80])

    def _dispatch(self, data: bytes) -> None:
        if data.startswith(b"e:"):
            self._deliver(data[2:])
            return
        kind, _, rest = data.decode().partition(":")
        if kind == "u":
            self.waiters.wake_users(int(uid) for uid in rest.split(","))
        elif kind == "s":
            device_id, _, ids = rest.partition(":")
            self.waiters.wake_users((int(uid) for uid in ids.split(",")), int(device_id))
        elif kind == "d":
            device_id, _, started_at = rest.partition(":")
            self.waiters.supersede(int(device_id), float(started_at))
        elif kind == "x":
            self.waiters.log_out(int(rest))

    def _deliver(self, rest: bytes) -> None:
        """An ``e:`` message: its entry is decoded only if a user has a waiter here,
        and handed to them only if it is of this process's database (and JSON);
        else they are woken all the same, and read."""
        device, seqs, database, entry = rest.split(b":", 3)
        heads = dict(map(int, pair.split(b".")) for pair in seqs.split(b","))
        except_device = int(device) if device else None
        if not self.waiters.has_any(heads):
            return
        carried = None
        if database.decode() == self._keys.process_database():
            with contextlib.suppress(orjson.JSONDecodeError):
                carried = orjson.loads(entry)
        self.waiters.deliver(heads, carried, except_device)

    def close(self) -> None:
        super().close()
        self._closing.set()
        if self._listener is not None:
            self._listener.join(READ_TIMEOUT_S * 2)


def _not_published(exc: redis.RedisError) -> None:
    # The commit stands; waiters find it by their timeout at the latest.
    log.warning("wake-up not published: %s", exc)


def _not_announced(exc: redis.RedisError) -> None:
    # An older poll of the device held elsewhere runs out its time.
    log.warning("a poll's start not announced: %s", exc)


def _not_let_go(exc: redis.RedisError) -> None:
    # The mark expires by itself; until then the device's next poll is announced.
    log.warning("a held poll's mark not taken back: %s", exc)


def _close_quietly(pubsub) -> None:
    with contextlib.suppress(redis.RedisError, OSError):
        pubsub.close()
