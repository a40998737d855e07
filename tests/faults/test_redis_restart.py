"""Redis restarts mid-stream. It is only a doorbell: sends keep answering 201 while it
is down, long polls deliver by their timeout at the latest, and each process's
wake-up listener reconnects by itself."""

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.factories import message_texts, open_direct, send
from tests.faults.traffic import (
    Fault,
    Progress,
    check_delivery,
    check_nothing_hung,
    figures,
    plan_sends,
    run_traffic,
)
from tests.figures import show
from tests.scaled.client import (
    ApiClient,
    sign_up,
    timed_poll,
    wait_for_waiting_polls,
    waiting_polls,
)
from tests.scaled.test_delivery import start_chats

pytestmark = pytest.mark.scaled

PEOPLE = 8
SENDER_THREADS = 6
SENDS_PER_THREAD = 25
RECEIVER_POLL_S = 4  # a lost wake-up delays a message by this much at most
RESTART_AT = 1 / 3  # share of the sends done when Redis goes down
REDIS_DOWN_S = 1.0
RECONNECT_WAIT_S = 15  # the listeners' reconnect backoff tops out at 5 s
LONG_POLL_S = 20


def test_sends_and_polls_carry_on_through_a_redis_restart(topology):
    with ApiClient(topology.balancer.url) as client:
        people = [sign_up(client, f"doorbell{i}") for i in range(PEOPLE)]
        chats = start_chats(client, people)
    plans = plan_sends(chats, topology.urls, SENDER_THREADS, SENDS_PER_THREAD)
    receivers = [(p, topology.urls[i % len(topology.urls)]) for i, p in enumerate(people)]

    def restart_redis(progress: Progress) -> list[Fault]:
        progress.wait_for(RESTART_AT)
        listening = wake_listeners(topology)
        started = time.monotonic()
        with topology.redis.down():
            time.sleep(REDIS_DOWN_S)
        fault = Fault("Redis restarted", started, time.monotonic())
        wait_for_wake_listeners(topology, listening)
        return [fault]

    outcome = run_traffic(topology.balancer.url, receivers, plans, RECEIVER_POLL_S, restart_redis)
    counted = figures(outcome, chats)
    (outage,) = outcome.faults
    during = [
        a
        for record in outcome.records
        for a in record.attempts
        if outage.started <= a.started and a.started + a.seconds <= outage.ended
    ]
    show("Redis restart", {**counted, "sends answered while Redis was down": len(during)})

    assert during, "no send was answered while Redis was down: the test proved nothing"
    first_answers = {record.attempts[0].status for record in outcome.records}
    assert first_answers == {201}, "a send needed Redis"
    assert {a.status for a in outcome.poll_attempts()} == {200}, "a poll needed Redis"
    check_nothing_hung(outcome, RECEIVER_POLL_S)
    check_delivery(outcome, chats, counted, topology.balancer.url)


def test_a_poll_held_through_a_redis_restart_is_woken_by_the_next_send(topology):
    a, b = topology.instances
    with ApiClient(a.url) as through_a, ApiClient(b.url) as through_b:
        ann, ben = sign_up(through_a, "ann"), sign_up(through_b, "ben")
        chat = open_direct(through_a, ann, ben)
        already_waiting = waiting_polls(through_a)
        with ThreadPoolExecutor(1) as background:
            held = background.submit(timed_poll, a.url, ben, timeout=LONG_POLL_S)
            wait_for_waiting_polls(a.url, already_waiting + 1)
            listening = wake_listeners(topology)  # the held poll's process among them
            with topology.redis.down():
                time.sleep(REDIS_DOWN_S)
            wait_for_wake_listeners(topology, listening)
            assert send(through_b, ann, chat, "still there?").status_code == 201
            batch, waited = held.result(timeout=LONG_POLL_S + 10)

    assert message_texts(batch) == ["still there?"]
    assert waited < LONG_POLL_S, "the wake-up was lost: a listener did not reconnect"


def wake_listeners(topology) -> int:
    """How many processes are subscribed to the wake-up channel right now."""
    with topology.redis.client() as client:
        ((_, count),) = client.pubsub_numsub(topology.wake_channel)
    return count


def wait_for_wake_listeners(topology, count: int) -> None:
    deadline = time.monotonic() + RECONNECT_WAIT_S
    while wake_listeners(topology) < count:
        assert time.monotonic() < deadline, f"fewer than {count} listeners came back"
        time.sleep(0.1)
