"""Many senders at once, through the balancer and straight into each instance, with
every member long-polling through the balancer: nothing lost, nothing doubled."""

import pytest

from tests.faults.conftest import GROUP_SIZE_LIMIT
from tests.faults.traffic import (
    SOAK_SCALE,
    check_delivery,
    figures,
    plan_sends,
    run_traffic,
)
from tests.figures import show
from tests.scaled.client import ApiClient, sign_up
from tests.scaled.test_delivery import start_chats

pytestmark = pytest.mark.scaled

SENDER_THREADS = 8
SENDS_PER_THREAD = 30 * SOAK_SCALE
RECEIVER_POLL_S = 5


def test_concurrent_senders_into_a_full_group_and_direct_chats(topology):
    with ApiClient(topology.balancer.url) as client:
        people = [sign_up(client, f"member{i}") for i in range(GROUP_SIZE_LIMIT)]
        chats = start_chats(client, people)  # the group holds everyone: it is full
        refused = client.post(
            f"/v1/conversations/{chats[0].id}/members",
            json={"member_ids": [sign_up(client, "one-too-many").id]},
            headers=people[0].auth,
        )
    assert refused.status_code == 409, refused.get_json()
    plans = plan_sends(chats, topology.urls, SENDER_THREADS, SENDS_PER_THREAD)

    receivers = [(person, topology.balancer.url) for person in people]
    outcome = run_traffic(topology.balancer.url, receivers, plans, RECEIVER_POLL_S)
    counted = figures(outcome, chats)
    show("load", counted)

    first_answers = {record.attempts[0].status for record in outcome.records}
    assert first_answers == {201}, "with no fault, every send is stored at the first try"
    check_delivery(outcome, chats, counted, topology.balancer.url)
