"""The embedded mode as ``make run`` serves it (one gevent worker, SQLite, no Redis)
with several people sending and long-polling at once."""

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.factories import open_direct, poll, send, sign_up
from tests.scaled.client import ApiClient
from tests.scaled.servers import embedded_instance

pytestmark = pytest.mark.scaled

PAIRS = 4
SENDS_EACH = 40
RECEIVE_BOUND_S = 30


@pytest.fixture
def embedded(sqlite_template, tmp_path):
    with embedded_instance("embedded", sqlite_template, tmp_path) as instance:
        yield instance


def test_people_sending_and_polling_at_once_are_all_answered(embedded):
    """Requests of one worker share its one SQLite database; while one of them
    writes, the others must wait their turn without stopping the worker (SQLite's
    own wait for its lock would stop every greenlet, the lock's holder too)."""
    with ApiClient(embedded.url) as client:
        people = [sign_up(client, f"user{n}") for n in range(2 * PAIRS)]
        partners = {}
        for ann, ben in zip(people[::2], people[1::2], strict=True):
            chat = open_direct(client, ann, ben)
            partners[ann.id], partners[ben.id] = (ben, chat), (ann, chat)

    def talk(person) -> list[str]:
        """Send to the partner and long-poll in turns; returns the partner's texts as
        received, polling on until all of them came or the bound passed."""
        partner, chat = partners[person.id]
        texts, cursor = [], 0
        deadline = time.monotonic() + RECEIVE_BOUND_S
        with ApiClient(embedded.url) as client:
            for n in range(SENDS_EACH):
                answer = send(client, person, chat, f"{person.username} {n}")
                assert answer.status_code == 201, answer.get_json()
                cursor = receive(client, person, cursor, texts)
            while len(texts) < 2 * SENDS_EACH and time.monotonic() < deadline:
                cursor = receive(client, person, cursor, texts)
        return [text for text in texts if text.startswith(f"{partner.username} ")]

    with ThreadPoolExecutor(len(people)) as pool:
        received = list(pool.map(talk, people))

    for person, texts in zip(people, received, strict=True):
        partner, _ = partners[person.id]
        assert texts == [f"{partner.username} {n}" for n in range(SENDS_EACH)]


def receive(client, person, cursor: int, texts: list[str]) -> int:
    """One long poll: adds the texts of the messages it brings; returns the new cursor."""
    batch = poll(client, person, after=cursor, timeout=1)
    texts += [e["message"]["text"] for e in batch["entries"] if e["type"] == "message"]
    return batch["cursor"]
