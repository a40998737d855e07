"""Presence across processes: polls through one instance, contacts long-polling
another, and two sweeper processes racing to turn users offline."""

import time

import pytest

from tests.factories import Person, open_direct, poll
from tests.scaled.client import ApiClient, sign_up

pytestmark = pytest.mark.scaled

WATCH_BOUND_S = 20  # the longest a test watches for events before it gives up
WINDOW_S = 2  # QUICK_PRESENCE in conftest


def presence_events_about(
    client: ApiClient, watcher: Person, subject: Person, until, cursor: int = 0
) -> tuple[list[bool], int]:
    """Long-poll the watcher's inbox from ``cursor`` (confirming as it goes) and collect
    the subject's presence changes until ``until(changes)`` holds or the bound runs out."""
    changes = []
    deadline = time.monotonic() + WATCH_BOUND_S
    while not until(changes) and time.monotonic() < deadline:
        batch = poll(client, watcher, after=cursor, timeout=1)
        cursor = batch["cursor"]
        changes += [
            e["online"]
            for e in batch["entries"]
            if e["type"] == "presence" and e["user_id"] == subject.id
        ]
    return changes, cursor


def for_seconds(seconds: float):
    started = time.monotonic()
    return lambda _changes: time.monotonic() - started > seconds


def test_a_poller_comes_online_once_and_goes_offline_once(presence_instances):
    a, b = presence_instances
    with ApiClient(a.url) as through_a, ApiClient(b.url) as through_b:
        ann, ben = sign_up(through_a, "ann"), sign_up(through_b, "ben")
        open_direct(through_a, ann, ben)

        # Ann polls through A every second for five seconds: inside her 2 s window
        # each time, as a client re-polling would. Ben watches through B.
        for _ in range(5):
            poll(through_a, ann)
            time.sleep(WINDOW_S / 2)
        changes, cursor = presence_events_about(through_b, ben, ann, until=lambda c: False in c)
        # Two sweepers race for every expiry: watch a while longer for a double.
        later, _ = presence_events_about(through_b, ben, ann, for_seconds(WINDOW_S), cursor)

    assert changes + later == [True, False]


def test_hidden_presence_leaks_nothing(presence_instances):
    a, b = presence_instances
    with ApiClient(a.url) as through_a, ApiClient(b.url) as through_b:
        cat, ben = sign_up(through_a, "cat"), sign_up(through_b, "ben")
        open_direct(through_a, cat, ben)
        hidden = through_a.patch("/v1/users/me", json={"show_presence": False}, headers=cat.auth)
        assert hidden.status_code == 200

        poll(through_a, cat)
        seen = through_b.get("/v1/presence", params={"user_ids": cat.id}, headers=ben.auth).json()
        # Watch for a full window and a sweep past it: nothing about Cat arrives.
        changes, _ = presence_events_about(through_b, ben, cat, for_seconds(2 * WINDOW_S + 1))

    assert seen == {"presence": [{"user_id": cat.id, "online": False, "last_seen": None}]}
    assert changes == []
