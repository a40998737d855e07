"""The long polls waiting in this process, and how they are woken."""

import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Carried:
    """An inbox entry that came with a wake-up: its place in the woken user's
    inbox, and the entry as a poll answers it, but its ``seq``."""

    seq: int
    entry: dict[str, Any]


class Waiter:
    """One held long poll: an event to wake it, and whether it must end now (a newer
    poll of its device replaced it, its device logged out, or the process is
    shutting down).

    The events come from ``threading``, which gevent's monkey-patching makes
    cooperative: under gunicorn a waiter costs a greenlet, and in a plain test
    process it costs a thread.
    """

    def __init__(self, user_id: int, device_id: int) -> None:
        self.user_id = user_id
        self.device_id = device_id
        self.started_at = time.time()  # wall clock: compared across processes
        self.ended = False
        self.logged_out = False  # ended by its device's log-out
        self.replaced = False  # ended by a newer poll of its device
        self.asleep = False  # blocked in wait(): registered and past its re-check
        self._event = threading.Event()
        self._carried: list[Carried] = []

    def wake(self, carried: Carried | None = None) -> None:
        if carried is not None:
            self._carried.append(carried)
        self._event.set()

    def take_carried(self) -> list[Carried]:
        """The entries its wake-ups carried since it last took them."""
        taken, self._carried = self._carried, []
        return taken

    def arm(self) -> None:
        """Forget past wake-ups; call before re-checking the inbox, never after."""
        self._event.clear()

    def wait(self, timeout: float) -> bool:
        self.asleep = True
        try:
            return self._event.wait(timeout)
        finally:
            self.asleep = False


class WaiterRegistry:
    """Every waiter of this process, found by user (to wake) and by device (to replace)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_user: dict[int, set[Waiter]] = defaultdict(set)
        self._by_device: dict[int, Waiter] = {}

    def asleep(self) -> int:
        """How many waiters are blocked waiting (not registering or re-checking)."""
        return sum(waiter.asleep for waiter in self._all())

    def has_any(self, user_ids: Iterable[int]) -> bool:
        """Whether any of these users has a waiter here. Without the lock: a waiter
        added meanwhile re-checks its inbox head after it is added."""
        return any(uid in self._by_user for uid in user_ids)

    def add(self, waiter: Waiter) -> None:
        with self._lock:
            older = self._by_device.get(waiter.device_id)
            self._by_device[waiter.device_id] = waiter
            self._by_user[waiter.user_id].add(waiter)
        if older is not None:
            older.replaced = True
            self._end(older)

    def discard(self, waiter: Waiter) -> None:
        with self._lock:
            if self._by_device.get(waiter.device_id) is waiter:
                del self._by_device[waiter.device_id]
            users_waiters = self._by_user.get(waiter.user_id)
            if users_waiters is not None:
                users_waiters.discard(waiter)
                if not users_waiters:
                    del self._by_user[waiter.user_id]

    def wake_users(self, user_ids: Iterable[int], except_device: int | None = None) -> None:
        """Wake the waiters of these users, but not ``except_device``'s (it made the
        entries: it has them already, and will find them with its next answer)."""
        with self._lock:
            waiters = [w for uid in user_ids for w in self._by_user.get(uid, ())]
        for waiter in waiters:
            if waiter.device_id != except_device:
                waiter.wake()

    def deliver(
        self,
        heads: Mapping[int, int],
        entry: dict[str, Any] | None,
        except_device: int | None = None,
    ) -> None:
        """Wake the waiters of these users (but ``except_device``'s) with ``entry``,
        which is ``heads[user_id]`` in each user's inbox (None: wake them only)."""
        if entry is None:
            self.wake_users(heads, except_device)
            return
        with self._lock:
            waiters = [w for uid in heads for w in self._by_user.get(uid, ())]
        for waiter in waiters:
            if waiter.device_id != except_device:
                waiter.wake(Carried(heads[waiter.user_id], entry))

    def wake_all(self) -> None:
        """Wake everyone to re-check: used when wake-ups may have been missed."""
        for waiter in self._all():
            waiter.wake()

    def end_all(self) -> None:
        """End every held poll now (the process is shutting down)."""
        for waiter in self._all():
            self._end(waiter)

    def _all(self) -> list[Waiter]:
        with self._lock:
            return list(self._by_device.values())

    def supersede(self, device_id: int, started_before: float) -> None:
        """End this device's poll if it began before a newer one announced elsewhere."""
        with self._lock:
            waiter = self._by_device.get(device_id)
        if waiter is not None and waiter.started_at < started_before:
            waiter.replaced = True
            self._end(waiter)

    def log_out(self, device_id: int) -> None:
        """End this device's poll: the device logged out."""
        with self._lock:
            waiter = self._by_device.get(device_id)
        if waiter is not None:
            waiter.logged_out = True
            self._end(waiter)

    @staticmethod
    def _end(waiter: Waiter) -> None:
        waiter.ended = True
        waiter.wake()
