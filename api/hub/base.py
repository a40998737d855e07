"""What every hub does: hold this process's waiters and wake them after commits."""

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from api.hub.trip import Trip
from api.hub.waiters import Waiter, WaiterRegistry
from api.metrics import WAITING


class Hub:
    """One per process. Subclasses carry wake-ups to the processes that need them."""

    def __init__(self) -> None:
        self.waiters = WaiterRegistry()
        self.closing = False

    @contextmanager
    def waiting(
        self, user_id: int, device_id: int, trip: Trip, holds_for: float
    ) -> Iterator[Waiter]:
        """Register a waiter for the block (held up to ``holds_for`` seconds); it ends
        this device's older poll here at once, and in other processes once ``trip``
        (which carries the news) is sent."""
        waiter = Waiter(user_id, device_id)
        waiter.ended = self.closing
        self.waiters.add(waiter)
        try:
            self._announce_poll(waiter, trip, holds_for)
            with WAITING.track_inprogress():
                yield waiter
        finally:
            self.waiters.discard(waiter)

    def notify_users(
        self,
        heads: Mapping[int, int],
        except_device: int | None,
        trip: Trip,
        entry: dict[str, Any] | None = None,
    ) -> None:
        """Wake every waiter of these users (``{user_id: head}``), in every process,
        but ``except_device``'s (other processes once ``trip`` is sent). Call after
        commit. ``entry``: the one entry the heads are, as a poll answers it but its
        ``seq``, for the woken polls to answer without reading it back."""
        raise NotImplementedError

    def log_out(self, device_id: int, trip: Trip) -> None:
        """End the poll this device holds, in whichever process (another once ``trip``
        is sent): it logged out."""
        self.waiters.log_out(device_id)

    def _announce_poll(self, waiter: Waiter, trip: Trip, holds_for: float) -> None:
        """Tell other processes (in ``trip``) that ``waiter`` replaces its device's
        older poll."""

    def answered(self, waiter: Waiter, trip: Trip) -> None:
        """``waiter``'s poll was answered before its time (in ``trip``): its device's
        next poll has no older one to end."""

    def close(self) -> None:
        """Shut down: held polls answer now (empty), so their clients re-poll
        elsewhere, and polls arriving from here on do not wait."""
        self.closing = True
        self.waiters.end_all()


class LocalHub(Hub):
    """The embedded mode's hub: every waiter lives in this one process."""

    def notify_users(
        self,
        heads: Mapping[int, int],
        except_device: int | None,
        trip: Trip,
        entry: dict[str, Any] | None = None,
    ) -> None:
        self.waiters.deliver(heads, entry, except_device)
