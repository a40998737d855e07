"""A poll answer that never reaches its client confirms nothing: the next poll
without ``after`` (from the cursor stored for the device) brings the same entries."""

import socket
import time

import pytest
import requests

from tests.factories import Person, message_texts, open_direct, poll, send
from tests.faults.raw_http import address_of, raw_long_poll
from tests.figures import show
from tests.scaled.client import ApiClient, sign_up, wait_for_waiting_polls, waiting_polls

pytestmark = pytest.mark.scaled

LONG_POLL_S = 20
TEXTS = ["one", "two", "three"]


def test_an_answer_dropped_before_its_body_is_read_comes_again(topology):
    with ApiClient(topology.balancer.url) as client:
        ann, ben = sign_up(client, "ann"), sign_up(client, "ben")
        chat = open_direct(client, ann, ben)
        for text in TEXTS:
            assert send(client, ann, chat, text).status_code == 201

        status = poll_and_hang_up(topology.balancer.url, ben)
        again = poll(client, ben)
        confirmed = poll(client, ben, after=again["cursor"])

    show("dropped answer", figures_for(TEXTS, again))
    assert status == 200
    assert message_texts(again) == TEXTS
    assert [e["seq"] for e in again["entries"]] == list(range(1, len(TEXTS) + 1))
    assert confirmed["entries"] == []


def test_entries_woken_into_a_held_poll_whose_client_left_come_again(topology):
    a, b = topology.instances
    with ApiClient(a.url) as through_a, ApiClient(b.url) as through_b:
        ann, ben = sign_up(through_b, "ann"), sign_up(through_a, "ben")
        chat = open_direct(through_b, ann, ben)
        already_waiting = waiting_polls(through_a)
        with socket.create_connection(address_of(a.url)) as gone:
            gone.sendall(raw_long_poll(a.url, ben, LONG_POLL_S))
            wait_for_waiting_polls(a.url, already_waiting + 1)
        # Ben's client left; the message wakes his poll, whose answer goes nowhere.
        assert send(through_b, ann, chat, TEXTS[0]).status_code == 201
        wait_until_fewer_waiting(through_a, already_waiting + 1)
        again = poll(through_b, ben)

    show("abandoned long poll", figures_for(TEXTS[:1], again))
    assert message_texts(again) == TEXTS[:1]


def poll_and_hang_up(url: str, person: Person) -> int:
    """Poll, read the status line and headers, then close before reading the body."""
    with (
        requests.Session() as session,
        session.get(f"{url}/v1/inbox", headers=person.auth, stream=True, timeout=10) as answer,
    ):
        return answer.status_code


def wait_until_fewer_waiting(client: ApiClient, count: float) -> None:
    """Return once the instance holds fewer than ``count`` long polls."""
    deadline = time.monotonic() + LONG_POLL_S
    while waiting_polls(client) >= count:
        assert time.monotonic() < deadline, "the abandoned poll was never answered"
        time.sleep(0.05)


def figures_for(sent: list[str], batch: dict) -> dict[str, int]:
    """Sent and delivered (by the poll after the dropped one), lost and duplicated."""
    received = message_texts(batch)
    return {
        "sent": len(sent),
        "delivered": len(set(received) & set(sent)),
        "lost": len(set(sent) - set(received)),
        "duplicated": len(received) - len(set(received)),
        "faults injected": 1,  # one answer dropped
    }
