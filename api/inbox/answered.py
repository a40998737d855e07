"""What a long poll answered before its time leaves to do once its answer is out.

Its start noted its device as polling until the poll's time was up, and marked
the device as holding a poll (``Hub.waiting``). Answered early, the device was
last seen now and holds nothing: both are said in one Redis round trip after
the answer (that round trip, and its wait for a turn of the worker, are not the
delivery's). The polls of a process answered together, every member's after a
send to a group, share that round trip (``api.gathering``). By then the client
may have polled again: the note and the mark then leave the newer poll's alone.
"""

import logging
from dataclasses import dataclass

from flask import Flask

from api.auth import Auth
from api.gathering import GATHERED_MAX, Gatherer
from api.hub import coordinator
from api.hub.waiters import Waiter
from api.presence.actions import note_poll

log = logging.getLogger(__name__)

# Notes waiting behind the round trip in flight, past which the next are not
# made: a Redis that stops answering (each round trip then lasts its socket
# timeout) must not hold the next request of every connection answered early
# behind an ever longer queue. A note not made leaves its device online until
# its poll's time, and its next poll announced.
QUEUED_MAX = 4 * GATHERED_MAX


@dataclass(frozen=True)
class Answered:
    """A long poll answered early: its waiter, and the deadline its start ``noted``."""

    auth: Auth
    waiter: Waiter
    noted: float


def init_answered(app: Flask) -> None:
    # One round trip at a time, so that as many gather as can: these come after
    # the answers, and only the connection's next request waits for them.
    app.extensions["parley.answered"] = Gatherer(end_answered, in_flight=1)


def answered_early(app: Flask, poll: Answered) -> None:
    """Note ``poll``'s end (call once its answer is out)."""
    answering = app.extensions["parley.answered"]
    if answering.queued() >= QUEUED_MAX:
        return
    with app.app_context():
        try:
            answering.ask(poll)
        except Exception:  # the answer is out: nothing to do but say so
            log.exception("a long poll's early end was not noted")


def end_answered(polls: list[Answered]) -> list[None]:
    """Note the ends of these polls, answered early, in one Redis round trip."""
    coordinating = coordinator()
    trip = coordinating.trip()
    for poll in polls:
        note_poll(poll.auth, holds_for=0, trip=trip, replacing=poll.noted)
        coordinating.hub.answered(poll.waiter, trip)
    trip.send()
    return [None] * len(polls)
