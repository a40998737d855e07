"""Gathering: requests that come while a run is in flight wait for the next, together."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from api.auth import Auth, hash_token
from api.gathering import Gatherer
from api.hub.waiters import Waiter
from api.inbox.answered import QUEUED_MAX, Answered, answered_early
from tests.factories import sign_up

WAIT_S = 10


def wait_until(condition) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.01)


def test_requests_that_come_during_a_run_gather_for_the_next():
    running, release = threading.Event(), threading.Event()
    runs: list[list[int]] = []

    def run(asked: list[int]) -> list[int]:
        runs.append(list(asked))
        running.set()
        assert release.wait(WAIT_S)
        return [n * 10 for n in asked]

    gatherer = Gatherer(run, in_flight=1)
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(gatherer.ask, 1)
        assert running.wait(WAIT_S)
        later = [pool.submit(gatherer.ask, n) for n in (2, 3, 4)]
        wait_until(lambda: gatherer.queued() == 3)
        release.set()
        answers = [first.result(WAIT_S)] + [each.result(WAIT_S) for each in later]

    assert answers == [10, 20, 30, 40]
    assert runs == [[1], [2, 3, 4]]
    assert gatherer.queued() == 0


def test_an_early_answer_is_not_noted_behind_a_full_queue(app, client, monkeypatch):
    """A Redis that stops answering makes each note's round trip last its timeout;
    past the queue's bound an answered poll's note is not made, so the next
    request on its connection does not wait behind the queue."""
    ann = sign_up(client, "ann")
    auth = Auth(ann.device_id, ann.id, hash_token(ann.token))
    poll = Answered(auth, Waiter(ann.id, ann.device_id), noted=0.0)
    answering = app.extensions["parley.answered"]
    asked: list[Answered] = []
    monkeypatch.setattr(answering, "ask", asked.append)

    monkeypatch.setattr(answering, "queued", lambda: QUEUED_MAX - 1)
    answered_early(app, poll)
    monkeypatch.setattr(answering, "queued", lambda: QUEUED_MAX)
    answered_early(app, poll)

    assert asked == [poll]
