"""Chat traffic that keeps going through faults, and the ledger that judges it.

    plan_sends()      which member sends what into which chat, first through which URL
    run_traffic()     sender threads retry failed sends with the same client_msg_id
                      (through the balancer); receiver threads long-poll, confirm with
                      ``after`` and re-poll after errors; a fault runs beside them
    check_delivery()  0 lost, 0 duplicated, one order per conversation, no inbox gaps

The ledger is tests/scaled/test_delivery.py's, so both suites count alike. A client
here treats what a phone would treat as a network error (a dropped connection, a
timeout, the balancer's own error page) as one: it tries again.
"""

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import requests

from tests.factories import Person, send
from tests.scaled.client import ApiClient, history
from tests.scaled.test_delivery import (
    Chat,
    conversation_order,
    count_messages,
    delivery_figures,
    owed_messages,
    stored_messages_by_chat,
)

# `make soak` multiplies the traffic (and the bounds with it) by SOAK_SCALE.
SOAK_SCALE = int(os.environ.get("SOAK_SCALE", "1"))
SEND_BOUND_S = 30 * SOAK_SCALE  # senders begin no new attempt after this
RECEIVE_BOUND_S = 45 * SOAK_SCALE  # receivers give up after this; the ledger says what is missing
MAX_ATTEMPTS = 30  # per send, however the fault goes
RETRY_PAUSE_S = 0.2  # between attempts when the answer gave no Retry-After
FINAL_POLL_ATTEMPTS = 10
HISTORY_PAGE = 200  # HISTORY_LIMIT_MAX
HISTORY_PAGES_MAX = 20
BALANCER_ERRORS = (502, 503, 504)
HANG_BOUND_S = 15  # a request taking longer (besides a long poll's own wait) hangs


class BalancerError(requests.ConnectionError):
    """haproxy answered itself because it could not reach an instance."""


def _judge_answers_not_from_the_app(response: requests.Response, *_args, **_kwargs) -> None:
    """The app always answers JSON. An HTML 502/503/504 is the balancer's own page,
    which a client treats as a network error; an HTML 500 is gunicorn's own page,
    sent when an exception escaped the app (its error handlers answer JSON)."""
    if "json" in response.headers.get("Content-Type", ""):
        return
    if response.status_code in BALANCER_ERRORS:
        response.close()
        raise BalancerError(f"the balancer answered {response.status_code} itself")
    if response.status_code == 500:
        response.close()
        raise AssertionError(
            f"{response.request.method} {response.url} got gunicorn's bare 500: an "
            "exception escaped the app's error handlers (see the instance's log)"
        )


def resilient_client(url: str) -> ApiClient:
    """An ApiClient for answers that are not the app's, so openapi.yaml has nothing to
    say about them: the balancer's error pages raise like network errors, and
    gunicorn's bare 500 fails the test with a sentence instead of a contract error."""
    client = ApiClient(url)
    client.hooks["response"].append(_judge_answers_not_from_the_app)
    return client


@dataclass(frozen=True)
class Attempt:
    """One request as its client saw it; ``status`` is None when no answer came."""

    started: float  # time.monotonic()
    seconds: float
    status: int | None
    retry_after: str | None = None
    body: Any = None
    error: str = ""

    @property
    def worth_retrying(self) -> bool:
        return self.status is None or self.status == 503

    def pause(self) -> float:
        """How long a well-behaved client waits before trying again."""
        return float(self.retry_after) if self.retry_after else RETRY_PAUSE_S


def attempt(request: Callable[..., requests.Response], *args, **kwargs) -> Attempt:
    started = time.monotonic()
    try:
        response = request(*args, **kwargs)
    except requests.RequestException as exc:
        return Attempt(started, time.monotonic() - started, None, error=repr(exc))
    return Attempt(
        started,
        time.monotonic() - started,
        response.status_code,
        response.headers.get("Retry-After"),
        response.get_json(),
    )


def retried(request: Callable[..., requests.Response], *args, **kwargs) -> list[Attempt]:
    """Every attempt of a well-behaved client: after no answer or a 503, it waits as
    told and tries again."""
    attempts = [attempt(request, *args, **kwargs)]
    while attempts[-1].worth_retrying and len(attempts) < MAX_ATTEMPTS:
        time.sleep(attempts[-1].pause())
        attempts.append(attempt(request, *args, **kwargs))
    return attempts


@dataclass(frozen=True)
class PlannedSend:
    sender: Person
    chat: Chat
    client_msg_id: str
    via: str  # the URL of the first attempt; retries go through the balancer

    @property
    def text(self) -> str:
        return f"{self.client_msg_id} to chat {self.chat.id}"


@dataclass
class SendRecord:
    planned: PlannedSend
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def message(self) -> dict | None:
        """The stored message, from the first answer that carried it."""
        return next((a.body for a in self.attempts if a.status in (200, 201)), None)


@dataclass
class Reception:
    """What one device received, in order, and every poll it made."""

    entries: list[dict] = field(default_factory=list)
    polls: list[Attempt] = field(default_factory=list)


@dataclass(frozen=True)
class Fault:
    what: str
    started: float  # time.monotonic()
    ended: float


@dataclass
class Outcome:
    records: list[SendRecord]
    receptions: dict[int, Reception]  # by person id: one device each
    faults: list[Fault]

    @property
    def inboxes(self) -> dict[int, list[dict]]:
        return {person_id: r.entries for person_id, r in self.receptions.items()}

    def send_attempts(self) -> list[Attempt]:
        return [a for record in self.records for a in record.attempts]

    def poll_attempts(self) -> list[Attempt]:
        return [a for reception in self.receptions.values() for a in reception.polls]

    def attempts(self) -> list[Attempt]:
        return self.send_attempts() + self.poll_attempts()


class Progress:
    """How many sends are done, so that a fault can strike mid-stream."""

    def __init__(self, total: int) -> None:
        self.total = total
        self._done = 0
        self._changed = threading.Condition()

    def one_more_done(self) -> None:
        with self._changed:
            self._done += 1
            self._changed.notify_all()

    def wait_for(self, fraction: float) -> None:
        with self._changed:
            reached = self._changed.wait_for(
                lambda: self._done >= fraction * self.total, SEND_BOUND_S
            )
        assert reached, f"only {self._done} of {self.total} sends done in {SEND_BOUND_S} s"


def plan_sends(
    chats: list[Chat], vias: list[str], lanes: int, per_lane: int
) -> list[list[PlannedSend]]:
    """Per sender thread ("lane"), who sends into which chat through which URL."""
    plans = []
    for lane in range(lanes):
        plan = []
        for k in range(per_lane):
            chat = chats[(lane + k) % len(chats)]
            sender = chat.members[(lane + 3 * k) % len(chat.members)]
            via = vias[(lane + 2 * k) % len(vias)]
            plan.append(PlannedSend(sender, chat, f"lane{lane}-m{k}", via))
        plans.append(plan)
    return plans


def run_traffic(
    balancer_url: str,
    receivers: list[tuple[Person, str]],
    plans: list[list[PlannedSend]],
    poll_s: float,
    fault: Callable[[Progress], list[Fault]] | None = None,
) -> Outcome:
    """Senders and receivers (each person long-polling through their URL) run in
    threads; ``fault`` runs in this thread meanwhile and says what it did."""
    people = [person for person, _ in receivers]
    owed = owed_messages(people, (planned for plan in plans for planned in plan))
    progress = Progress(sum(len(plan) for plan in plans))
    receive_deadline = time.monotonic() + RECEIVE_BOUND_S
    with ThreadPoolExecutor(len(receivers) + len(plans)) as pool:
        receiving = {
            person.id: pool.submit(receive_everything, url, person, owed, receive_deadline, poll_s)
            for person, url in receivers
        }
        sending = [
            pool.submit(send_all, balancer_url, plan, progress, time.monotonic() + SEND_BOUND_S)
            for plan in plans
        ]
        faults = fault(progress) if fault else []
        records = [r for future in sending for r in future.result(SEND_BOUND_S * 2)]
        # Nobody is owed what was never stored (the checks report those sends).
        owed.update(owed_messages(people, (r.planned for r in records if r.message)))
        receptions = {pid: f.result(RECEIVE_BOUND_S * 2) for pid, f in receiving.items()}
    return Outcome(records, receptions, faults)


def send_all(
    balancer_url: str, plan: list[PlannedSend], progress: Progress, deadline: float
) -> list[SendRecord]:
    with ExitStack() as stack:
        clients: dict[str, ApiClient] = {}

        def client_for(url: str) -> ApiClient:
            if url not in clients:
                clients[url] = stack.enter_context(resilient_client(url))
            return clients[url]

        records = []
        for planned in plan:
            records.append(send_until_stored(client_for, balancer_url, planned, deadline))
            progress.one_more_done()
        return records


def send_until_stored(
    client_for: Callable[[str], ApiClient], balancer_url: str, planned: PlannedSend, deadline
) -> SendRecord:
    """Send; after no answer or a 503, wait and send again with the same client_msg_id."""
    record = SendRecord(planned)
    url = planned.via
    while len(record.attempts) < MAX_ATTEMPTS and time.monotonic() < deadline:
        record.attempts.append(
            attempt(
                send,
                client_for(url),
                planned.sender,
                planned.chat.id,
                planned.text,
                client_msg_id=planned.client_msg_id,
            )
        )
        if not record.attempts[-1].worth_retrying:
            break
        time.sleep(record.attempts[-1].pause())
        url = balancer_url
    return record


def receive_everything(
    url: str, person: Person, owed: dict[int, int], deadline: float, poll_s: float
) -> Reception:
    """Long-poll like a phone, confirming each batch with ``after``, until the owed
    messages arrived (or the deadline passed); then a short poll for anything extra."""
    with resilient_client(url) as client:
        receiver = Receiver(client, person)
        while count_messages(receiver.reception.entries) < owed[person.id]:
            if time.monotonic() > deadline:
                break
            receiver.poll(poll_s)
        for _ in range(FINAL_POLL_ATTEMPTS):
            if receiver.poll(0):
                break
    return receiver.reception


@dataclass
class Receiver:
    client: ApiClient
    person: Person
    reception: Reception = field(default_factory=Reception)
    cursor: int = 0

    def poll(self, timeout: float) -> bool:
        """One poll from the cursor (confirming what came before it); False if it failed."""
        made = attempt(
            self.client.get,
            "/v1/inbox",
            query_string={"after": self.cursor, "timeout": timeout},
            headers=self.person.auth,
        )
        self.reception.polls.append(made)
        if made.status != 200:
            time.sleep(made.pause())
            return False
        self.reception.entries += made.body["entries"]
        self.cursor = made.body["cursor"]
        return True


def figures(outcome: Outcome, chats: list[Chat]) -> dict[str, int]:
    """The ledger's counts, plus how many sends needed a retry and faults were injected."""
    counted = delivery_figures(chats, outcome.records, outcome.inboxes)
    retried = sum(len(record.attempts) > 1 for record in outcome.records)
    return {**counted, "retried": retried, "faults injected": len(outcome.faults)}


def check_delivery(outcome: Outcome, chats: list[Chat], counted: dict, balancer_url: str):
    """Every send stored once; every member got each message once, in conversation
    order, with no gap in their inbox's sequence numbers."""
    unstored = [r for r in outcome.records if r.message is None]
    assert not unstored, f"{len(unstored)} sends never stored, first: {unstored[0].attempts}"
    assert counted["lost"] == counted["duplicated"] == 0, counted
    for person_id, entries in outcome.inboxes.items():
        seqs = [entry["seq"] for entry in entries]
        assert seqs == list(range(1, len(seqs) + 1)), f"user {person_id}'s inbox: {seqs}"
    stored = stored_messages_by_chat(outcome.records)
    for chat in chats:
        orders = [conversation_order(outcome.inboxes[m.id], chat.id) for m in chat.members]
        assert all(order == stored[chat.id] for order in orders), f"chat {chat.id} order"
    with ApiClient(balancer_url) as client:
        for chat in chats:
            assert whole_history(client, chat) == stored[chat.id], f"chat {chat.id} history"


def check_nothing_hung(outcome: Outcome, poll_s: float) -> None:
    slowest_send = max(a.seconds for a in outcome.send_attempts())
    assert slowest_send < HANG_BOUND_S, f"a send took {slowest_send:.1f} s"
    slowest_poll = max(a.seconds for a in outcome.poll_attempts())
    assert slowest_poll < poll_s + HANG_BOUND_S, f"a {poll_s} s poll took {slowest_poll:.1f} s"


def whole_history(client: ApiClient, chat: Chat) -> list[tuple[int, int]]:
    """Every stored message of the chat as (conversation seq, id), paged forward."""
    messages: list[dict] = []
    for _ in range(HISTORY_PAGES_MAX):
        after = messages[-1]["seq"] if messages else 0
        page = history(client, chat.members[0], chat.id, after=after, limit=HISTORY_PAGE)
        messages += page["messages"]
        if not page["has_more"]:
            return [(m["seq"], m["id"]) for m in messages]
    raise AssertionError(f"chat {chat.id} has more than {HISTORY_PAGES_MAX} pages of history")
