"""PostgreSQL stops mid-stream (fast shutdown) and comes back. While it is gone every
request fails fast with 503 and Retry-After (never a 500, never a hang); afterwards
the clients' retries, with the same client_msg_id, lose and double nothing."""

import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from tests.factories import message_texts, open_direct, poll, send
from tests.faults.traffic import (
    HANG_BOUND_S,
    Fault,
    Progress,
    attempt,
    check_delivery,
    check_nothing_hung,
    figures,
    plan_sends,
    resilient_client,
    retried,
    run_traffic,
)
from tests.figures import show
from tests.scaled.client import ApiClient, sign_up
from tests.scaled.test_delivery import start_chats

pytestmark = pytest.mark.scaled

PEOPLE = 8
SENDER_THREADS = 6
SENDS_PER_THREAD = 25
RECEIVER_POLL_S = 3
STOP_AT = 1 / 3  # share of the sends done when PostgreSQL stops
POSTGRES_DOWN_S = 3.0
REDIS_PAUSE_S = 2.0


def test_a_postgres_outage_answers_503_fast_and_retries_lose_nothing(topology):
    with ApiClient(topology.balancer.url) as client:
        people = [sign_up(client, f"outage{i}") for i in range(PEOPLE)]
        chats = start_chats(client, people)
    plans = plan_sends(chats, topology.urls, SENDER_THREADS, SENDS_PER_THREAD)
    receivers = [(p, topology.urls[i % len(topology.urls)]) for i, p in enumerate(people)]

    def stop_postgres(progress: Progress) -> list[Fault]:
        progress.wait_for(STOP_AT)
        started = time.monotonic()
        with topology.postgres.down():
            time.sleep(POSTGRES_DOWN_S)
        return [Fault("PostgreSQL stopped", started, time.monotonic())]

    outcome = run_traffic(topology.balancer.url, receivers, plans, RECEIVER_POLL_S, stop_postgres)
    counted = figures(outcome, chats)
    attempts = outcome.attempts()
    refused = [a for a in attempts if a.status == 503]
    show("PostgreSQL outage", {**counted, "answered 503": len(refused)})

    assert refused, "no request met the outage: the test proved nothing"
    unexpected = [a for a in attempts if a.status not in (200, 201, 503)]
    assert not unexpected, f"{len(unexpected)} answers other than 200/201/503: {unexpected[:3]}"
    assert all(a.retry_after for a in refused), "a 503 without Retry-After"
    check_nothing_hung(outcome, RECEIVER_POLL_S)
    check_delivery(outcome, chats, counted, topology.balancer.url)


def test_connections_killed_under_a_poll_cost_at_most_a_retry(topology):
    """A database connection can die under the service (a restart, a failover, a
    proxy dropping it) between a request's last query and the end of the request,
    or while it waits in the pool. The request that read its answer still gives
    it; a later request that draws a dead connection answers 503 (never a 500),
    and the client's retry goes through. To catch the moment, Redis pauses writes:
    the poll has read its entries and waits to note Ben's presence while the
    connections that read them are killed."""
    with ApiClient(topology.balancer.url) as client:
        ann, ben = sign_up(client, "ann"), sign_up(client, "ben")
        chat = open_direct(client, ann, ben)
        assert send(client, ann, chat, "first").status_code == 201
        cursor = poll(client, ben, after=0)["cursor"]  # Ben comes online
        poll(client, ben, after=cursor)  # his cursor is confirmed, so cached
        assert send(client, ann, chat, "second").status_code == 201

        bens_poll = {"query_string": {"after": cursor}, "headers": ben.auth}
        with ThreadPoolExecutor(1) as background, resilient_client(client.base_url) as retrying:
            pause_redis_writes(topology, REDIS_PAUSE_S)
            answer = background.submit(attempt, retrying.get, "/v1/inbox", **bens_poll)
            killed = kill_connections_that_read_inboxes(topology)
            made = answer.result(REDIS_PAUSE_S + HANG_BOUND_S)
            after = [
                *retried(send, retrying, ann, chat, "third", client_msg_id="third"),
                *retried(retrying.get, "/v1/inbox", **bens_poll),
            ]

    show(
        "connections killed under a poll",
        {
            "connections killed": killed,
            "poll status": made.status,
            "later requests answered 503": sum(a.status == 503 for a in after),
        },
    )
    assert killed, "no connection that read an inbox was caught: the test proved nothing"
    assert made.status in (200, 503), made
    assert made.status == 503 or message_texts(made.body) == ["second"]
    assert all(a.status in (201, 200, 503) for a in after), after
    assert message_texts(after[-1].body) == ["second", "third"]


def pause_redis_writes(topology, seconds: float) -> None:
    with topology.redis.client() as client:
        client.execute_command("CLIENT", "PAUSE", int(seconds * 1000), "WRITE")


def kill_connections_that_read_inboxes(topology) -> int:
    """Terminate the idle connections whose last query was a poll's read of an
    inbox (the poll's among them, whether inside a transaction or back in the
    pool); returns how many (once there are some, or 0 when none came within the
    Redis pause)."""
    deadline = time.monotonic() + REDIS_PAUSE_S
    with psycopg.connect(topology.postgres.libpq_url(), autocommit=True) as conn:
        while time.monotonic() < deadline:
            (killed,) = conn.execute(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE state IN ('idle', 'idle in transaction')"
                " AND query LIKE 'SELECT ranked.n, ranked.inbox_floor%' AND pid <> pg_backend_pid()"
            ).fetchone()
            if killed:
                return killed
            time.sleep(0.02)
    return 0
