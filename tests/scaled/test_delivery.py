"""What every reader sees when senders on both instances write at the same time.

The guarantees checked here are DESIGN.md's "Delivery guarantees": nothing
committed is lost, no gaps behind a cursor, at-least-once delivery with
exactly-once effect, and one order per conversation.
"""

import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass

import pytest

from tests.factories import Person, create_group, message_texts, open_direct, poll, send
from tests.figures import show
from tests.scaled.client import (
    REQUEST_TIMEOUT_S,
    ApiClient,
    history,
    sign_up,
)

pytestmark = pytest.mark.scaled

GROUP_SIZE = 6
DIRECT_PAIRS = ((0, 1), (2, 3), (4, 5), (0, 3))  # member 0 and 3 share three conversations
SENDER_THREADS = 8
SENDS_PER_THREAD = 25
RETRY_EVERY = 5  # every fifth send is sent again, through the other instance
RECEIVER_POLL_S = 5
SEND_BOUND_S = 20  # senders start no new send after this (a stuck app fails, not hangs)
RECEIVE_BOUND_S = 30  # receivers give up (and the test reports what was lost) after this


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
    answers: list[tuple[int, dict]]  # (status, body) of the send, then of its retry

    @property
    def message(self) -> dict | None:
        """The stored message, from the first answer that carried it."""
        return next((body for status, body in self.answers if status in (200, 201)), None)


def test_concurrent_senders_on_both_instances_lose_and_duplicate_nothing(instances):
    urls = [instance.url for instance in instances]
    with ApiClient(urls[0]) as client:
        people = [sign_up(client, f"member{i}") for i in range(GROUP_SIZE)]
        chats = start_chats(client, people)
    plans = plan_sends(chats)

    outcomes, inboxes = run_traffic(urls, people, plans)
    sent = stored_messages_by_chat(outcomes)
    figures = delivery_figures(chats, outcomes, inboxes)
    show("scaled delivery", figures)

    refused = [o.answers[0] for o in outcomes if o.answers[0][0] != 201]
    assert not refused, f"{len(refused)} sends refused, first: {refused[0]}"
    planned = sum(len(plan) for plan in plans)
    assert len(outcomes) == planned, f"{len(outcomes)} of {planned} sends within {SEND_BOUND_S} s"
    retried = [o for o in outcomes if o.planned.retried]
    assert all(o.answers[1] == (200, o.message) for o in retried)
    for person in people:
        seqs = [e["seq"] for e in inboxes[person.id]]
        assert seqs == list(range(1, len(seqs) + 1)), f"{person.username}'s inbox has gaps"
    assert figures["lost"] == figures["duplicated"] == 0
    for chat in chats:
        orders = [conversation_order(inboxes[m.id], chat.id) for m in chat.members]
        assert all(order == sent[chat.id] for order in orders), f"chat {chat.id}"
    with ApiClient(urls[1]) as client:
        for chat in chats:
            stored = history(client, chat.members[0], chat.id, after=0, limit=200)["messages"]
            assert [(m["seq"], m["id"]) for m in stored] == sent[chat.id]


def run_traffic(urls: list[str], people: list[Person], plans: list[list[PlannedSend]]):
    """Every member long-polls while the sender threads run; returns the sends' outcomes
    and each member's inbox as received.

    Receivers stop once they hold as many messages as they are owed: the planned
    number, lowered to what was actually stored once the senders are done (so a
    refused send does not keep them polling until the deadline).
    """
    owed = owed_messages(people, (planned for plan in plans for planned in plan))
    send_deadline = time.monotonic() + SEND_BOUND_S
    receive_deadline = time.monotonic() + RECEIVE_BOUND_S
    with ThreadPoolExecutor(len(people) + SENDER_THREADS) as pool:
        receiving = {
            person.id: pool.submit(
                receive_everything, urls[(i + 1) % 2], person, owed, receive_deadline
            )
            for i, person in enumerate(people)
        }
        sending = [pool.submit(send_all, urls, plan, send_deadline) for plan in plans]
        # Both bounds only back up the threads' own deadlines and request timeouts.
        send_bound = SEND_BOUND_S + 2 * REQUEST_TIMEOUT_S
        outcomes = [o for future in sending for o in future.result(send_bound)]
        owed.update(owed_messages(people, (o.planned for o in outcomes if o.message)))
        receive_bound = RECEIVE_BOUND_S + RECEIVER_POLL_S + 2 * REQUEST_TIMEOUT_S
        inboxes = {pid: future.result(receive_bound) for pid, future in receiving.items()}
    return outcomes, inboxes


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


def owed_messages(people: list[Person], sends: Iterable[PlannedSend]) -> dict[int, int]:
    """How many messages each person should receive (a retry makes no new message)."""
    counts = Counter(member.id for planned in sends for member in planned.chat.members)
    return {person.id: counts[person.id] for person in people}


def send_all(urls: list[str], plan: list[PlannedSend], deadline: float) -> list[SendOutcome]:
    """Make the planned sends in order; those not begun by ``deadline`` are left out."""
    with ExitStack() as stack:
        clients = [stack.enter_context(ApiClient(url)) for url in urls]
        outcomes = []
        for planned in plan:
            if time.monotonic() > deadline:
                break
            outcomes.append(send_planned(clients, planned))
        return outcomes


def send_planned(clients: list[ApiClient], planned: PlannedSend) -> SendOutcome:
    """Send once; a retried send goes again (same client_msg_id) through the other instance."""
    vias = [planned.via, 1 - planned.via] if planned.retried else [planned.via]
    answers = []
    for via in vias:
        response = send(
            clients[via],
            planned.sender,
            planned.chat.id,
            planned.text,
            client_msg_id=planned.client_msg_id,
        )
        answers.append((response.status_code, response.json()))
    return SendOutcome(planned, answers)


def receive_everything(url: str, person: Person, owed: dict, deadline: float) -> list[dict]:
    """Long-poll like a phone, confirming each batch with ``after``, until the owed
    messages arrived (or the deadline passed); then one short poll for anything extra."""
    entries: list[dict] = []
    cursor = 0
    with ApiClient(url) as client:
        while count_messages(entries) < owed[person.id] and time.monotonic() < deadline:
            batch = poll(client, person, after=cursor, timeout=RECEIVER_POLL_S)
            entries += batch["entries"]
            cursor = batch["cursor"]
        entries += poll(client, person, after=cursor)["entries"]
    return entries


def count_messages(entries: list[dict]) -> int:
    return sum(entry["type"] == "message" for entry in entries)


def stored_messages_by_chat(outcomes: list[SendOutcome]) -> dict[int, list[tuple[int, int]]]:
    """Each chat's stored messages as (conversation seq, message id), in seq order."""
    sent: dict[int, list[tuple[int, int]]] = {}
    for message in filter(None, (outcome.message for outcome in outcomes)):
        sent.setdefault(message["conversation_id"], []).append((message["seq"], message["id"]))
    return {chat_id: sorted(messages) for chat_id, messages in sent.items()}


def conversation_order(entries: list[dict], chat_id: int) -> list[tuple[int, int]]:
    """The chat's messages as this reader received them, in inbox order."""
    return [
        (e["message"]["seq"], e["message"]["id"])
        for e in entries
        if e["type"] == "message" and e["conversation_id"] == chat_id
    ]


def delivery_figures(chats: list[Chat], outcomes: list[SendOutcome], inboxes: dict) -> dict:
    """Messages stored and refused, and deliveries made, missing and repeated over every
    member (counted by client_msg_id, so a duplicate with a new id counts too)."""
    stored = [o for o in outcomes if o.message]
    figures = Counter(sent=len(stored), refused=len(outcomes) - len(stored))
    for chat in chats:
        keys = [o.planned.client_msg_id for o in stored if o.planned.chat.id == chat.id]
        for member in chat.members:
            received = Counter(
                e["message"]["client_msg_id"]
                for e in inboxes[member.id]
                if e["type"] == "message" and e["conversation_id"] == chat.id
            )
            for key in keys:
                figures["delivered"] += min(received[key], 1)
                figures["lost"] += received[key] == 0
                figures["duplicated"] += max(received[key] - 1, 0)
    names = ("sent", "refused", "delivered", "lost", "duplicated")
    return {name: figures[name] for name in names}


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
