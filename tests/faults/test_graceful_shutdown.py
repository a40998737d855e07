"""SIGTERM to an instance holding long polls: the polls answer at once (empty 200,
closing their connections), and a send in flight still completes. What its
workers were to store a moment later (polls' confirmations) is stored as they stop."""

import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager

import psycopg
import pytest
import requests

from tests.factories import Person, message_texts, open_direct, poll, send
from tests.figures import show
from tests.scaled.client import ApiClient, sign_up, wait_for_waiting_polls

pytestmark = pytest.mark.scaled

HELD_POLLS = 3
LONG_POLL_S = 20
ANSWERED_EARLY_S = LONG_POLL_S / 4  # "at once", with room for a busy machine
EXIT_BOUND_S = 15
LOCK_WAIT_S = 10


def test_sigterm_answers_held_polls_at_once_and_completes_a_send_in_flight(topology, instance_c):
    with ApiClient(topology.balancer.url) as client:
        sender = sign_up(client, "sender")
        holders = [sign_up(client, f"holder{i}") for i in range(HELD_POLLS)]
        chat = open_direct(client, sender, holders[0])

    # Like a phone's HTTP stack, each client keeps its connection open after an
    # answer: the instance has to close them itself to stop promptly.
    with ExitStack() as connections, ThreadPoolExecutor(HELD_POLLS + 1) as pool:
        *poll_clients, send_client = [
            connections.enter_context(ApiClient(instance_c.url)) for _ in range(HELD_POLLS + 1)
        ]
        polls = [
            pool.submit(timed_long_poll, client, holder)
            for client, holder in zip(poll_clients, holders, strict=True)
        ]
        wait_for_waiting_polls(instance_c.url, HELD_POLLS)
        with conversation_locked(topology.postgres.libpq_url(), chat):
            # The send waits for the lock inside instance c: it is in flight.
            in_flight = pool.submit(send, send_client, sender, chat, "last words")
            wait_for_a_lock_waiter(topology.postgres.libpq_url())
            instance_c.process.send_signal(signal.SIGTERM)
            answered = [future.result(LONG_POLL_S + 10) for future in polls]
        sent = in_flight.result(EXIT_BOUND_S)
        with ApiClient(topology.balancer.url) as client:
            received = message_texts(poll(client, holders[0])).count("last words")
        show(
            "graceful shutdown",
            {
                "sent": 1,
                "delivered": min(received, 1),
                "lost": int(received == 0),
                "duplicated": max(received - 1, 0),
                "faults injected": 1,  # the SIGTERM
                "held polls": HELD_POLLS,
                "longest held (s)": round(max(seconds for _, seconds in answered), 1),
            },
        )

        for response, seconds in answered:
            assert response.status_code == 200
            assert response.get_json()["entries"] == []
            assert seconds < ANSWERED_EARLY_S, f"a held poll answered only after {seconds:.1f} s"
        assert sent.status_code == 201, sent.get_json()
        assert received == 1
        answers = [response for response, _ in answered] + [sent]
        kept_open = [r.request.url for r in answers if r.headers.get("Connection") != "close"]
        assert not kept_open, f"answered during shutdown without Connection: close: {kept_open}"
        assert instance_c.wait_for_exit(EXIT_BOUND_S) == 0, instance_c.log()


@pytest.mark.parametrize("instance_c", [{"CURSOR_WRITE_DELAY_S": "600"}], indirect=True)
def test_a_stopping_worker_stores_the_confirmations_it_held(topology, instance_c):
    with ApiClient(topology.balancer.url) as client:
        sender, receiver = sign_up(client, "confirmer-sender"), sign_up(client, "confirmer")
        chat = open_direct(client, sender, receiver)
        for text in ("one", "two"):
            send(client, sender, chat, text)
    with ApiClient(instance_c.url) as client:
        poll(client, receiver, after=2)  # confirmed, to be stored ten minutes later
    database = topology.postgres.libpq_url()
    assert stored_cursor(database, receiver) == 0

    instance_c.process.send_signal(signal.SIGTERM)

    assert instance_c.wait_for_exit(EXIT_BOUND_S) == 0, instance_c.log()
    assert stored_cursor(database, receiver) == 2


def stored_cursor(database_url: str, person: Person) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT cursor FROM devices WHERE id = %s", (person.device_id,))
        return row.fetchone()[0]


def timed_long_poll(client: ApiClient, person: Person) -> tuple[requests.Response, float]:
    """A long poll: the whole response (headers too) and how long it took."""
    started = time.monotonic()
    response = client.get("/v1/inbox", query_string={"timeout": LONG_POLL_S}, headers=person.auth)
    return response, time.monotonic() - started


@contextmanager
def conversation_locked(database_url: str, conversation_id: int) -> Iterator[None]:
    """Hold the conversation's row lock for the block, as a long send would."""
    with psycopg.connect(database_url) as conn:
        conn.execute("SELECT 1 FROM conversations WHERE id = %s FOR UPDATE", (conversation_id,))
        try:
            yield
        finally:
            conn.rollback()


def wait_for_a_lock_waiter(database_url: str) -> None:
    """Return once some session waits for a row lock (our send, inside the server)."""
    deadline = time.monotonic() + LOCK_WAIT_S
    with psycopg.connect(database_url, autocommit=True) as conn:
        while not conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        ).fetchone()[0]:
            assert time.monotonic() < deadline, "the send never reached the database"
            time.sleep(0.05)
