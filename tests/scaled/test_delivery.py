"""What every reader sees when senders on both instances write at the same time.

The guarantees checked here are DESIGN.md's "Delivery guarantees": nothing
committed is lost, no gaps behind a cursor, at-least-once delivery with
exactly-once effect, and one order per conversation.
"""

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass

import pytest

from tests.factories import Person
from tests.scaled.client import (
    ApiClient,
    create_group,
    history,
    message_texts,
    open_direct,
    poll,
    send,
    sign_up,
)

pytestmark = pytest.mark.scaled

GROUP_SIZE = 6
DIRECT_PAIRS = ((0, 1), (2, 3), (4, 5), (0, 3))  # member 0 and 3 share three conversations
SENDER_THREADS = 8
SENDS_PER_THREAD = 25
RETRY_EVERY = 5  # every fifth send is sent again, through the other instance
RECEIVER_POLL_S = 5
RECEIVE_BOUND_S = 40  # receivers give up (and the test reports what was lost) after this


@dataclass(frozen=True)
class Chat:
    id: int
    members: tuple[Person, ...]


@dataclass(frozen=True)
class PlannedSend:
    sender: Person
    chat: Chat
    client_msg_id: str
    via: int  # index of the instance the send goes through
    retried: bool

    @property
    def text(self) -> str:
        return f"{self.client_msg_id} to chat {self.chat.id}"


@dataclass
class SendOutcome:
    planned: PlannedSend
    status: int
    message: dict
    retry_status: int | None = None
    retry_message: dict | None = None


def test_concurrent_senders_on_both_instances_lose_and_duplicate_nothing(instances):
    urls = [instance.url for instance in instances]
    with ApiClient(urls[0]) as client:
        people = [sign_up(client, f"member{i}") for i in range(GROUP_SIZE)]
        chats = start_chats(client, people)
    plans = plan_sends(chats)
    expected = expected_message_counts(people, plans)

    deadline = time.monotonic() + RECEIVE_BOUND_S
    with ThreadPoolExecutor(len(people) + SENDER_THREADS) as pool:
        receiving = {
            person.id: pool.submit(
                receive_everything, urls[(i + 1) % 2], person, expected[person.id], deadline
            )
            for i, person in enumerate(people)
        }
        sending = [pool.submit(send_all, urls, plan) for plan in plans]
        outcomes = [o for future in sending for o in future.result(timeout=RECEIVE_BOUND_S)]
        bound = RECEIVE_BOUND_S + RECEIVER_POLL_S + 10
        inboxes = {pid: future.result(timeout=bound) for pid, future in receiving.items()}

    sent = sent_ids_by_chat(outcomes)
    figures = delivery_figures(chats, sent, inboxes)
    print("scaled delivery: " + ", ".join(f"{name} {n}" for name, n in figures.items()))

    assert all(o.status == 201 for o in outcomes)
    retried = [o for o in outcomes if o.planned.retried]
    assert retried and all(o.retry_status == 200 for o in retried)
    assert all(o.retry_message["id"] == o.message["id"] for o in retried)
    for person in people:
        assert [e["seq"] for e in inboxes[person.id]] == list(range(1, len(inboxes[person.id]) + 1))
    assert figures["lost"] == figures["duplicated"] == 0
    for chat in chats:
        orders = [conversation_order(inboxes[m.id], chat.id) for m in chat.members]
        assert all(order == sorted(sent[chat.id]) for order in orders), f"chat {chat.id}"
    with ApiClient(urls[1]) as client:
        for chat in chats:
            stored = history(client, chat.members[0], chat.id, after=0, limit=200)["messages"]
            assert [(m["seq"], m["id"]) for m in stored] == sorted(sent[chat.id])


def start_chats(client: ApiClient, people: list[Person]) -> list[Chat]:
    """One group of everyone, and a few direct chats among the same people."""
    group = create_group(client, people[0], people[1:], "everyone")
    chats = [Chat(group, tuple(people))]
    for i, j in DIRECT_PAIRS:
        pair = (people[i], people[j])
        chats.append(Chat(open_direct(client, *pair), pair))
    return chats


def plan_sends(chats: list[Chat]) -> list[list[PlannedSend]]:
    """Per sender thread, which member sends where, through which instance."""
    plans = []
    for thread in range(SENDER_THREADS):
        plan = []
        for k in range(SENDS_PER_THREAD):
            chat = chats[(thread + k) % len(chats)]
            plan.append(
                PlannedSend(
                    sender=chat.members[(thread + 3 * k) % len(chat.members)],
                    chat=chat,
                    client_msg_id=f"t{thread}-m{k}",
                    via=(thread + k) % 2,
                    retried=k % RETRY_EVERY == 0,
                )
            )
        plans.append(plan)
    return plans


def expected_message_counts(people: list[Person], plans: list[list[PlannedSend]]) -> dict:
    """How many messages each person should receive (a retry makes no new message)."""
    counts = Counter(m.id for plan in plans for send in plan for m in send.chat.members)
    return {person.id: counts[person.id] for person in people}


def send_all(urls: list[str], plan: list[PlannedSend]) -> list[SendOutcome]:
    with ExitStack() as stack:
        clients = [stack.enter_context(ApiClient(url)) for url in urls]
        return [send_planned(clients, planned) for planned in plan]


def send_planned(clients: list[ApiClient], planned: PlannedSend) -> SendOutcome:
    """Send once; a retried send goes again (same client_msg_id) through the other instance."""

    def send_through(client: ApiClient):
        return send(
            client,
            planned.sender,
            planned.chat.id,
            planned.text,
            client_msg_id=planned.client_msg_id,
        )

    first = send_through(clients[planned.via])
    outcome = SendOutcome(planned, first.status_code, first.json())
    if planned.retried:
        again = send_through(clients[1 - planned.via])
        outcome.retry_status, outcome.retry_message = again.status_code, again.json()
    return outcome


def receive_everything(url: str, person: Person, expected: int, deadline: float) -> list[dict]:
    """Long-poll like a phone, confirming each batch with ``after``, until ``expected``
    messages arrived (or the deadline passed); then one short poll for anything extra."""
    entries: list[dict] = []
    cursor = 0
    with ApiClient(url) as client:
        while len(message_texts({"entries": entries})) < expected:
            if time.monotonic() > deadline:
                break
            batch = poll(client, person, after=cursor, timeout=RECEIVER_POLL_S)
            entries += batch["entries"]
            cursor = batch["cursor"]
        entries += poll(client, person, after=cursor)["entries"]
    return entries


def sent_ids_by_chat(outcomes: list[SendOutcome]) -> dict[int, list[tuple[int, int]]]:
    """Each chat's stored messages as (conversation seq, message id)."""
    sent: dict[int, list[tuple[int, int]]] = {}
    for outcome in outcomes:
        message = outcome.message
        sent.setdefault(message["conversation_id"], []).append((message["seq"], message["id"]))
    return sent


def conversation_order(entries: list[dict], chat_id: int) -> list[tuple[int, int]]:
    """The chat's messages as this reader received them, in inbox order."""
    return [
        (e["message"]["seq"], e["message"]["id"])
        for e in entries
        if e["type"] == "message" and e["conversation_id"] == chat_id
    ]


def delivery_figures(chats: list[Chat], sent: dict, inboxes: dict) -> dict[str, int]:
    """Sent messages, and deliveries made, missing and repeated, over every member."""
    figures = Counter(sent=sum(len(ids) for ids in sent.values()))
    for chat in chats:
        for member in chat.members:
            received = Counter(conversation_order(inboxes[member.id], chat.id))
            for message in sent[chat.id]:
                figures["delivered"] += min(received[message], 1)
                figures["lost"] += received[message] == 0
                figures["duplicated"] += max(received[message] - 1, 0)
    return {name: figures[name] for name in ("sent", "delivered", "lost", "duplicated")}


def test_a_message_sent_through_a_is_in_history_through_b_at_once(instances):
    a, b = instances
    with ApiClient(a.url) as through_a, ApiClient(b.url) as through_b:
        erin, frank = sign_up(through_a, "erin"), sign_up(through_b, "frank")
        chat = open_direct(through_a, erin, frank)

        sent = send(through_a, erin, chat, "lunch at noon?")
        assert sent.status_code == 201
        page = history(through_b, frank, chat)

    assert [m["id"] for m in page["messages"]] == [sent.json()["id"]]
    assert page["messages"][0]["text"] == "lunch at noon?"


def test_unconfirmed_entries_are_delivered_again_until_confirmed(instances):
    a, b = instances
    with ApiClient(a.url) as through_a, ApiClient(b.url) as through_b:
        gina, hank = sign_up(through_a, "gina"), sign_up(through_b, "hank")
        chat = open_direct(through_a, gina, hank)
        for text in ("one", "two"):
            assert send(through_a, gina, chat, text).status_code == 201

        first = poll(through_a, hank)  # the answer is "lost": nothing confirmed
        again = poll(through_b, hank)
        confirmed = poll(through_a, hank, after=again["cursor"])
        afterwards = poll(through_b, hank)

    assert message_texts(first) == message_texts(again) == ["one", "two"]
    assert [e["seq"] for e in again["entries"]] == [e["seq"] for e in first["entries"]]
    assert confirmed["entries"] == afterwards["entries"] == []
