"""Long polls held by one instance, ended by what happens on the other."""

from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for

import pytest

from api.inbox.actions import TIME_OUT_TICK_S
from tests.factories import Person, create_group, message_texts, open_direct, poll, send
from tests.scaled.client import (
    ApiClient,
    database_queries,
    sign_up,
    timed_poll,
    wait_for_waiting_polls,
    waiting_polls,
)

pytestmark = pytest.mark.scaled

LONG_POLL_S = 20
NEWER_POLL_S = 1
NEWER_POLL_ATTEMPTS = 5
WOKEN_TOGETHER = 24


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


def test_polls_woken_together_read_their_inboxes_in_one_statement_per_process(instances):
    """A send to a group wakes every member's poll at once; the polls a process
    holds read in one statement, not in a round trip each."""
    a, b = instances
    with ApiClient(a.url) as through_a, ApiClient(b.url) as through_b:
        sender = sign_up(through_b, "sender")
        members = [sign_up(through_a, f"member{n}") for n in range(WOKEN_TOGETHER)]
        group = create_group(through_b, sender, members)
        for member in members:
            poll(through_a, member)  # online: the others hear of it
        cursors = [poll(through_a, member)["cursor"] for member in members]
        for member, cursor in zip(members, cursors, strict=True):
            poll(through_a, member, after=cursor)  # confirmed: holding it writes nothing

        already = waiting_polls(through_a)
        with ThreadPoolExecutor(WOKEN_TOGETHER) as background:
            held = [
                background.submit(timed_poll, a.url, member, after=cursor, timeout=LONG_POLL_S)
                for member, cursor in zip(members, cursors, strict=True)
            ]
            wait_for_waiting_polls(a.url, already + WOKEN_TOGETHER)
            before = database_queries(through_a)
            assert send(through_b, sender, group, "all at once").status_code == 201
            answers = [future.result(timeout=LONG_POLL_S + 10) for future in held]
            reads = database_queries(through_a) - before

    assert [message_texts(batch) for batch, _ in answers] == [["all at once"]] * WOKEN_TOGETHER
    assert all(waited < LONG_POLL_S for _, waited in answers)
    # A few statements per worker process, where polls reading alone make one each.
    assert reads < WOKEN_TOGETHER / 2, f"{reads:.0f} statements for {WOKEN_TOGETHER} polls"


def test_a_long_poll_with_nothing_to_deliver_waits_its_timeout_and_answers_empty(instances):
    a, _ = instances
    with ApiClient(a.url) as through_a:
        carol = sign_up(through_a, "carol")
        batch, waited = timed_poll(a.url, carol, timeout=1)

    assert batch["entries"] == []
    assert batch["cursor"] == 0
    # It may end early, on the last of the process's shared ticks before its time.
    assert waited >= 1 - TIME_OUT_TICK_S


def test_a_newer_poll_from_the_same_phone_ends_the_older_one_on_the_other_instance(instances):
    a, b = instances
    with ApiClient(a.url) as through_a, ApiClient(b.url) as through_b:
        dave = sign_up(through_a, "dave")

        with ThreadPoolExecutor(1) as background:
            older = background.submit(timed_poll, a.url, dave, timeout=LONG_POLL_S)
            wait_for_waiting_polls(a.url, 1)
            newer = poll_again_until_it_ends(through_b, dave, older)
            older_batch, older_waited = older.result(timeout=LONG_POLL_S + 10)

    assert older_batch["entries"] == [] and older_batch["replaced"] is True
    assert older_waited < LONG_POLL_S, "the older poll was not ended by the newer one"
    assert newer["entries"] == [] and "replaced" not in newer


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
