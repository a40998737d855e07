"""The delivery guarantees under concurrent senders in several (simulated) processes.

Several apps on one PostgreSQL and Redis stand for worker processes; threads send
into overlapping groups and direct chats at once, which is where sequence numbers
handed out in one order and committed in another would open gaps, and where
crossing lock orders would deadlock.
"""

import random
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

from tests.factories import create_group, open_direct, poll, scaled_only, send, sign_up

SENDERS = 8
SENDS_EACH = 25


def read_whole_inbox(client, person) -> list[dict]:
    entries, cursor = [], 0
    while True:
        batch = poll(client, person, after=cursor, limit=500)
        entries += batch["entries"]
        cursor = batch["cursor"]
        if not batch["has_more"]:
            return entries


@scaled_only
def test_concurrent_sends_keep_every_guarantee(make_app):
    clients = [make_app().test_client() for _ in range(4)]
    people = [sign_up(clients[0], f"user{i}") for i in range(6)]
    # Overlapping groups, so sends cross on the same users' inbox counters.
    conversations = {
        create_group(clients[0], people[0], people[1:4]): people[0:4],
        create_group(clients[0], people[2], people[3:6]): people[2:6],
        create_group(clients[0], people[5], [*people[0:2], people[4]]): [
            people[5],
            *people[0:2],
            people[4],
        ],
        open_direct(clients[0], people[0], people[5]): [people[0], people[5]],
        open_direct(clients[0], people[1], people[2]): [people[1], people[2]],
    }

    def sender(worker: int) -> list[tuple[int, str, int]]:
        rng = random.Random(worker)
        client = clients[worker % len(clients)]
        sent = []
        for n in range(SENDS_EACH):
            cid = rng.choice(list(conversations))
            author = rng.choice(conversations[cid])
            text = f"w{worker}-n{n}"
            response = send(client, author, cid, text, client_msg_id=text)
            assert response.status_code == 201, response.get_json()
            if n % 10 == 0:  # a client retry through another process
                retry = send(clients[(worker + 1) % 4], author, cid, text, client_msg_id=text)
                assert retry.status_code == 200
                assert retry.get_json()["id"] == response.get_json()["id"]
            sent.append((cid, text, response.get_json()["seq"]))
        return sent

    with ThreadPoolExecutor(SENDERS) as pool:
        sent = [item for batch in pool.map(sender, range(SENDERS)) for item in batch]

    expected = defaultdict(set)
    for cid, text, _ in sent:
        for member in conversations[cid]:
            expected[member.id].add(text)

    lost = duplicated = 0
    orders = defaultdict(set)
    for person in people:
        entries = read_whole_inbox(clients[person.id % 4], person)
        seqs = [e["seq"] for e in entries]
        assert seqs == list(range(1, len(entries) + 1)), (
            f"gap or repeat in {person.username}'s inbox"
        )
        texts = [e["message"]["text"] for e in entries if e["type"] == "message"]
        lost += len(expected[person.id] - set(texts))
        duplicated += len(texts) - len(set(texts))
        by_conversation = defaultdict(list)
        for e in entries:
            if e["type"] == "message":
                by_conversation[e["conversation_id"]].append(e["message"]["seq"])
        for cid, conversation_seqs in by_conversation.items():
            assert conversation_seqs == sorted(conversation_seqs), "conversation order broken"
            orders[cid].add(tuple(conversation_seqs))
    print(f"sent={len(sent)} lost={lost} duplicated={duplicated}")
    assert (lost, duplicated) == (0, 0)
    # One order per conversation: every member saw the same sequence.
    assert all(len(seen) == 1 for seen in orders.values())
    # Conversation seqs handed to senders are 1..n with no gap or repeat.
    for cid in conversations:
        seqs = sorted(seq for sent_cid, _, seq in sent if sent_cid == cid)
        assert seqs == list(range(1, len(seqs) + 1))
