"""Long polls held by one instance, ended by what happens on the other."""

from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for

import pytest

from tests.factories import Person, message_texts, open_direct, poll, send
from tests.scaled.client import (
    ApiClient,
    sign_up,
    timed_poll,
    wait_for_waiting_polls,
)

pytestmark = pytest.mark.scaled

LONG_POLL_S = 20
NEWER_POLL_S = 1
NEWER_POLL_ATTEMPTS = 5


def test_a_poll_held_on_a_is_woken_by_a_message_sent_through_b(instances):
    a, b = instances
    with ApiClient(a.url) as through_a, ApiClient(b.url) as through_b:
        alice, bob = sign_up(through_a, "alice"), sign_up(through_b, "bob")
        chat = open_direct(through_a, alice, bob)

        with ThreadPoolExecutor(1) as background:
            bobs_poll = background.submit(timed_poll, a.url, bob, timeout=LONG_POLL_S)
            wait_for_waiting_polls(a.url, 1)
            assert send(through_b, alice, chat, "are you there?").status_code == 201
            batch, waited = bobs_poll.result(timeout=LONG_POLL_S + 10)

    assert message_texts(batch) == ["are you there?"]
    assert waited < LONG_POLL_S, "the poll ran out its timeout instead of being woken"


def test_a_long_poll_with_nothing_to_deliver_waits_its_timeout_and_answers_empty(instances):
    a, _ = instances
    with ApiClient(a.url) as through_a:
        carol = sign_up(through_a, "carol")
        batch, waited = timed_poll(a.url, carol, timeout=1)

    assert batch["entries"] == []
    assert batch["cursor"] == 0
    assert waited >= 0.95


def test_a_newer_poll_from_the_same_phone_ends_the_older_one_on_the_other_instance(instances):
    a, b = instances
    with ApiClient(a.url) as through_a, ApiClient(b.url) as through_b:
        dave = sign_up(through_a, "dave")

        with ThreadPoolExecutor(1) as background:
            older = background.submit(timed_poll, a.url, dave, timeout=LONG_POLL_S)
            wait_for_waiting_polls(a.url, 1)
            newer = poll_again_until_it_ends(through_b, dave, older)
            older_batch, older_waited = older.result(timeout=LONG_POLL_S + 10)

    assert older_batch["entries"] == []
    assert older_waited < LONG_POLL_S, "the older poll was not ended by the newer one"
    assert newer["entries"] == []


def poll_again_until_it_ends(client: ApiClient, person: Person, older: Future) -> dict:
    """Make newer polls of the same device until ``older`` ends; returns the last one's answer.

    A worker's first long poll starts its Redis listener, and the gauge counts
    the poll a moment before the subscription is live. A newer poll announced in
    that moment is not heard (pub/sub keeps nothing), so one more is made; the
    attempts are few and short, so a supersede that never works still fails.
    """
    for _ in range(NEWER_POLL_ATTEMPTS):
        newer = poll(client, person, timeout=NEWER_POLL_S)
        wait_for([older], timeout=NEWER_POLL_S)
        if older.done():
            return newer
    return newer
