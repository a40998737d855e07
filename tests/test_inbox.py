import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import redis

from api.inbox import actions
from api.inbox.actions import TIME_OUT_TICK_S
from tests.factories import (
    create_group,
    database_queries,
    log_in,
    long_poll_in_background,
    message_texts,
    metric,
    of_type,
    open_direct,
    poll,
    redis_round_trips,
    scaled_only,
    send,
    sign_up,
    wait_until_waiting,
)

TIMING_OUT_TOGETHER = 24


def test_a_short_poll_answers_at_once_and_redelivers_until_confirmed(client, pair):
    ann, ben, cid = pair
    send(client, ann, cid, "one")
    send(client, ann, cid, "two")
    first = poll(client, ben)
    assert message_texts(first) == ["one", "two"]
    assert [e["seq"] for e in first["entries"]] == [1, 2] and first["cursor"] == 2

    # The answer was lost on the way (a proxy dropped it): nothing was confirmed.
    assert poll(client, ben) == first
    confirmed = poll(client, ben, after=first["cursor"])
    assert confirmed["entries"] == [] and confirmed["cursor"] == 2
    # Without `after`, the device resumes from its stored cursor.
    assert poll(client, ben) == confirmed


def test_each_device_has_its_own_cursor(client, pair):
    ann, ben, cid = pair
    ben_laptop = log_in(client, "ben", device_name="laptop")
    send(client, ann, cid, "hello")
    poll(client, ben, after=1)
    assert poll(client, ben)["entries"] == []
    assert message_texts(poll(client, ben_laptop)) == ["hello"]


def test_a_head_request_confirms_nothing(client, pair):
    """HEAD must be safe (RFC 9110): its ``after`` is where to read from, no more."""
    ann, ben, cid = pair
    send(client, ann, cid, "one")
    send(client, ann, cid, "two")
    assert client.head("/v1/inbox?after=2", headers=ben.auth).status_code == 200
    assert message_texts(poll(client, ben)) == ["one", "two"]


def test_ack_confirms_without_fetching(client, pair):
    ann, ben, cid = pair
    send(client, ann, cid, "one")
    send(client, ann, cid, "two")
    acked = client.post("/v1/inbox/ack", json={"seq": 1}, headers=ben.auth)
    assert acked.status_code == 200 and acked.get_json() == {"cursor": 1}
    assert message_texts(poll(client, ben)) == ["two"]


def test_confirming_entries_that_do_not_exist_is_refused(client, pair):
    ann, ben, cid = pair
    send(client, ann, cid, "one")
    beyond = client.get("/v1/inbox", query_string={"after": 2}, headers=ben.auth)
    assert beyond.status_code == 422
    assert "after" in beyond.get_json()["error"]["details"]
    ack = client.post("/v1/inbox/ack", json={"seq": 5}, headers=ben.auth)
    assert ack.status_code == 422
    assert message_texts(poll(client, ben)) == ["one"]


def test_batches_are_bounded_by_count(client, pair):
    ann, ben, cid = pair
    for i in range(5):
        send(client, ann, cid, f"m{i}")
    first = poll(client, ben, limit=2)
    assert message_texts(first) == ["m0", "m1"] and first["has_more"] is True
    second = poll(client, ben, limit=2, after=first["cursor"])
    third = poll(client, ben, limit=2, after=second["cursor"])
    assert message_texts(second) == ["m2", "m3"]
    assert message_texts(third) == ["m4"] and third["has_more"] is False


def test_batches_are_bounded_by_size(make_app):
    client = make_app(INBOX_BATCH_MAX_CHARS=250_000).test_client()
    ann, ben = sign_up(client, "ann"), sign_up(client, "ben")
    cid = open_direct(client, ann, ben)
    for letter in "abcd":
        send(client, ann, cid, letter * 100_000)
    seen, cursor, sizes = [], 0, []
    for _ in range(4):
        batch = poll(client, ben, after=cursor)
        sizes.append(len(batch["entries"]))
        seen += [text[0] for text in message_texts(batch)]
        cursor = batch["cursor"]
        if not batch["has_more"]:
            break
    assert seen == ["a", "b", "c", "d"]
    assert sizes == [2, 2]


def test_a_message_longer_than_the_batch_budget_comes_whole_and_alone(make_app):
    client = make_app(INBOX_BATCH_MAX_CHARS=1_000).test_client()
    ann, ben = sign_up(client, "ann"), sign_up(client, "ben")
    cid = open_direct(client, ann, ben)
    texts = ["a" * 3_000, "b" * 3_000]
    for text in texts:
        send(client, ann, cid, text)
    first = poll(client, ben, after=0)
    second = poll(client, ben, after=first["cursor"])
    assert message_texts(first) == texts[:1] and first["has_more"] is True
    assert message_texts(second) == texts[1:] and second["has_more"] is False


def test_a_long_poll_is_woken_by_a_send(app, client, pair):
    ann, ben, cid = pair
    waiting = long_poll_in_background(app, ben, timeout=20)
    wait_until_waiting(app)
    send(client, ann, cid, "wake up")
    body, seconds = waiting.result(timeout=30)
    assert message_texts(body) == ["wake up"]
    assert seconds < 10, "the poll was not woken (it ended on its closing read)"


def test_a_long_poll_with_nothing_new_waits_out_its_timeout(client, pair):
    _, ben, _ = pair
    started = time.monotonic()
    body = poll(client, ben, timeout=1)
    assert body == {"entries": [], "cursor": 0, "has_more": False}
    assert time.monotonic() - started >= 1


def test_a_send_after_a_polls_closing_read_still_reaches_it(app, client, pair, monkeypatch):
    """A long poll reads its inbox once more on the tick before its deadline (with
    the polls whose reads gather there), and is answered at its deadline: a
    wake-up in between brings the entry at once."""
    ann, ben, cid = pair
    read_at = []

    def early_tick(deadline: float) -> float:
        read_at.append(deadline - 1.5)
        return read_at[-1]

    monkeypatch.setattr(actions, "_on_the_tick", early_tick)
    closing_read = threading.Event()
    read_inbox = actions.read_inbox

    def noted_read(*args):
        batch = read_inbox(*args)
        if time.monotonic() >= read_at[-1]:  # not the start's own check
            closing_read.set()
        return batch

    monkeypatch.setattr(actions, "read_inbox", noted_read)
    waiting = long_poll_in_background(app, ben, timeout=3)
    assert closing_read.wait(timeout=10)
    wait_until_waiting(app)
    assert not waiting.done()
    send(client, ann, cid, "just after")
    body, _ = waiting.result(timeout=30)
    assert message_texts(body) == ["just after"]


def test_long_polls_timing_out_close_together_read_in_one_statement(app, client):
    """Each poll that runs out its time reads its inbox once more; the polls of a
    process that time out within a tick of each other share that read."""
    people = [sign_up(client, f"user{n}") for n in range(TIMING_OUT_TOGETHER)]
    for person in people:
        poll(client, person)  # caches warm: starting a poll reads no database
    with database_queries(app) as queries:
        held = []
        for person in people:  # one after the other, as their clients happen to poll
            held.append(long_poll_in_background(app, person, timeout=1))
            time.sleep(0.8 * TIME_OUT_TICK_S / TIMING_OUT_TOGETHER)
        answers = [future.result(timeout=30)[0] for future in held]
    assert all(answer["entries"] == [] for answer in answers)
    reads = [query for query in queries if "inbox_entries" in query]
    # Started within half a second (a slow machine's), they end on at most three
    # ticks, where a tick's polls make three reads (two start at once, the rest
    # gather for the next) unless a busy machine wakes some of them late; without
    # ticks, each of them reads alone.
    assert 0 < len(reads) <= TIMING_OUT_TOGETHER // 2, reads


def test_a_long_poll_is_cut_to_the_server_cap(make_app):
    client = make_app(LONG_POLL_CAP_S=0.2).test_client()
    ben = sign_up(client, "ben")
    started = time.monotonic()
    assert poll(client, ben, timeout=3000)["entries"] == []
    assert time.monotonic() - started < 3000


def test_a_newer_poll_of_the_same_device_ends_the_older_one(app, client, pair):
    _, ben, _ = pair
    older = long_poll_in_background(app, ben, timeout=20)
    wait_until_waiting(app)
    newer = long_poll_in_background(app, ben, timeout=0.5)
    body, seconds = older.result(timeout=30)
    assert body["entries"] == [] and seconds < 20
    assert newer.result(timeout=30)[0]["entries"] == []


@contextmanager
def announcements(app) -> Iterator[list[str]]:
    """The poll announcements published for other processes while the block runs
    (read from the wake-up channel, as every process's listener reads them)."""
    coordinator = app.extensions["parley.hub"]
    channel = f"{coordinator.keys.base}wake"
    heard: list[str] = []
    with coordinator.client.pubsub() as listening:
        listening.subscribe(channel)
        assert listening.get_message(timeout=5)["type"] == "subscribe"  # live from here
        yield heard
        coordinator.client.publish(channel, "end of the block")
        while (message := listening.get_message(timeout=5)) is not None:
            if message["data"] == b"end of the block":
                break
            if message["data"].startswith(b"d:"):
                heard.append(message["data"].decode())


def test_a_poll_replaced_by_a_newer_one_of_its_device_says_so(app, client, pair):
    """A second loop polling for the same device: its poll ends the first one's,
    which answers empty and marked, so that loop can tell and stop."""
    ann, ben, cid = pair
    first_loop = long_poll_in_background(app, ben, timeout=20)
    wait_until_waiting(app)
    second_loop = long_poll_in_background(app, ben, timeout=20)
    replaced, _ = first_loop.result(timeout=30)
    assert replaced == {"entries": [], "cursor": 0, "has_more": False, "replaced": True}

    send(client, ann, cid, "hi")
    kept, _ = second_loop.result(timeout=30)
    assert message_texts(kept) == ["hi"] and "replaced" not in kept


@scaled_only
def test_a_poll_is_announced_to_other_processes_only_when_it_replaces_a_held_one(app, client, pair):
    """Every process hears every announcement, so polls that follow their device's
    last answer (after a time-out, or answered early) announce nothing; a poll made
    while the device holds one (a phone that lost its connection) ends it."""
    ann, ben, cid = pair
    poll(client, ben, timeout=0.3)  # starts this process's listener
    with announcements(app) as heard:
        assert poll(client, ben, timeout=0.3)["entries"] == []  # after a time-out
        answered_early = long_poll_in_background(app, ben, timeout=20)
        wait_until_waiting(app)
        send(client, ann, cid, "hi")
        cursor = answered_early.result(timeout=30)[0]["cursor"]
        lost = long_poll_in_background(app, ben, after=cursor, timeout=20)
        wait_until_waiting(app)
        replacing = poll(client, ben, after=cursor, timeout=0.3)
        assert lost.result(timeout=30)[0] == {
            "entries": [],
            "cursor": cursor,
            "has_more": False,
            "replaced": True,
        }
        assert replacing == {"entries": [], "cursor": cursor, "has_more": False}
    assert [announced.rpartition(":")[0] for announced in heard] == [f"d:{ben.device_id}"]


def test_a_send_wakes_everyone_but_the_sending_device(app, client, pair):
    """The sending phone has its message from the 201: its held poll is not woken
    for it (it gets the entry with its next answer), while Ann's laptop and Ben,
    woken, get it at once. A poll that was woken counts in the wake-up histogram;
    one that ran out its time does not."""
    ann, ben, cid = pair
    laptop = log_in(client, "ann", device_name="laptop")
    cursors = dict.fromkeys((ann.device_id, laptop.device_id, ben.device_id), 0)
    for _ in range(2):  # the first round brings everyone online, the second reads that news
        for p in (ann, laptop, ben):
            cursors[p.device_id] = poll(client, p, after=cursors[p.device_id])["cursor"]
    woken_before = metric(client, "parley_wake_up_seconds_count")
    polls = {
        p.device_id: long_poll_in_background(
            app, p, after=cursors[p.device_id], timeout=1 if p is ann else 20
        )
        for p in (ann, laptop, ben)
    }
    wait_until_waiting(app, count=3)
    send(client, ann, cid, "from my phone")

    answers = {device: future.result(timeout=30)[0] for device, future in polls.items()}
    assert all(message_texts(a) == ["from my phone"] for a in answers.values())
    assert metric(client, "parley_wake_up_seconds_count") - woken_before == 2


def test_a_lost_wake_up_delays_an_entry_but_never_hides_it(app, client, pair, monkeypatch):
    ann, ben, cid = pair
    coordinator = app.extensions["parley.hub"]
    # Neither the doorbell nor the cached head hears of the next send.
    monkeypatch.setattr(coordinator.hub, "notify_users", lambda *_: None)
    monkeypatch.setattr(coordinator.hints, "raise_to", lambda *_: None)
    waiting = long_poll_in_background(app, ben, timeout=1)
    wait_until_waiting(app)
    send(client, ann, cid, "quietly")
    body, _ = waiting.result(timeout=30)
    assert message_texts(body) == ["quietly"]


def test_group_membership_changes_reach_every_member(client):
    ann, ben, cat = (sign_up(client, n) for n in ("ann", "ben", "cat"))
    cid = create_group(client, ann, [ben])
    client.post(f"/v1/conversations/{cid}/members", json={"member_ids": [cat.id]}, headers=ann.auth)
    ben_sees = [e["user_ids"] for e in of_type(poll(client, ben), "member_joined")]
    assert ben_sees == [[ann.id, ben.id], [cat.id]]
    assert [e["user_ids"] for e in of_type(poll(client, cat), "member_joined")] == [[cat.id]]


def test_an_empty_short_poll_costs_no_database_query(app, client):
    """Not even a new device's first: the log-in caches its token, its cursor and
    the inbox head. (Coming online is written down: Ben's phone did that.)"""
    poll(client, sign_up(client, "ben"))
    ben = log_in(client, "ben", device_name="tablet")
    with database_queries(app) as queries:
        for _ in range(3):
            assert poll(client, ben, after=0)["entries"] == []
            assert poll(client, ben)["entries"] == []
    assert queries == []


@scaled_only
def test_an_empty_poll_by_a_known_device_takes_one_redis_round_trip(app, client, monkeypatch):
    """The process remembers the token from the first poll; the next confirm it in
    the round trip that reads the cursor and head and notes presence."""
    ben = sign_up(client, "ben")
    poll(client, ben)
    with redis_round_trips(app, monkeypatch) as trips:
        assert poll(client, ben)["entries"] == []
        assert poll(client, ben, after=0)["entries"] == []
    assert len(trips) == 2


@scaled_only
def test_a_poll_that_confirms_takes_one_redis_round_trip(make_app, client, pair, monkeypatch):
    """Its confirmation rides in the round trip that starts it, and every process
    goes on from it at once."""
    ann, ben, cid = pair
    for text in ("one", "two"):
        send(client, ann, cid, text)
    cursor = poll(client, ben)["cursor"]
    app = client.application
    with redis_round_trips(app, monkeypatch) as trips:
        assert poll(client, ben, after=cursor)["entries"] == []
    assert len(trips) == 1
    send(client, ann, cid, "three")
    assert message_texts(poll(make_app().test_client(), ben)) == ["three"]


def test_a_confirmation_the_cached_head_cannot_vouch_for_is_checked_in_the_database(
    app, client, pair
):
    """The cached head is behind (a raise of it was lost): a confirmation up to
    the real head counts, and one past it is refused."""
    ann, ben, cid = pair
    for text in ("one", "two"):
        send(client, ann, cid, text)
    coordinator = app.extensions["parley.hub"]
    stale_head = (f"{coordinator.keys.prefix}head:{ben.id}", "0", 60)

    coordinator.hints.set(*stale_head)
    assert poll(client, ben, after=2)["entries"] == []
    coordinator.hints.set(*stale_head)
    refused = client.get("/v1/inbox", query_string={"after": 3}, headers=ben.auth)
    assert refused.status_code == 422 and "after" in refused.get_json()["error"]["details"]

    send(client, ann, cid, "three")
    assert message_texts(poll(client, ben)) == ["three"]


@scaled_only
def test_a_long_poll_that_runs_out_its_time_takes_two_redis_round_trips(
    app, client, pair, monkeypatch
):
    """Its start notes it as held to its end, so its end notes nothing: one round
    trip starts it, one caches the head its last read brought (shared by the
    polls whose reads gather)."""
    ann, ben, cid = pair
    send(client, ann, cid, "hi")
    cursor = poll(client, ben, timeout=1)["cursor"]  # at once (and the listener is up)
    poll(client, ben, after=cursor)  # confirmed
    app.extensions["parley.cursors.behind"].flush()  # and stored (and cached) now
    with redis_round_trips(app, monkeypatch) as trips:
        assert poll(client, ben, after=cursor, timeout=1)["entries"] == []
    assert len(trips) == 2


@scaled_only
def test_polling_from_zero_writes_no_cursor_even_when_none_is_cached(app, client):
    """after=0 confirms nothing, so a device whose cached cursor has expired reads
    from the start without a database write."""
    poll(client, sign_up(client, "ben"))
    ben = log_in(client, "ben", device_name="tablet")
    coordinator = app.extensions["parley.hub"]
    coordinator.client.delete(f"{coordinator.keys.prefix}cursor:{ben.device_id}")
    with database_queries(app) as queries:
        assert poll(client, ben, after=0)["entries"] == []
    assert queries == []


def _head_reads(queries: list[str]) -> list[str]:
    return [q for q in queries if "inbox_seq" in q and "FROM users" in q]


@scaled_only
def test_a_poll_whose_head_is_no_longer_cached_reads_it_once(app, client, pair):
    """Checking ``after`` needs the stored head; whether anything is new then
    follows from the same head, without reading it again."""
    ann, ben, cid = pair
    send(client, ann, cid, "hi")
    cursor = poll(client, ben)["cursor"]
    coordinator = app.extensions["parley.hub"]
    coordinator.client.delete(f"{coordinator.keys.prefix}head:{ben.id}")
    with database_queries(app) as queries:
        assert poll(client, ben, after=cursor)["entries"] == []
    assert len(_head_reads(queries)) == 1


@scaled_only
def test_a_confirmed_cursor_stays_cached_after_the_head_expires(make_app):
    """The cached head expires soon (it bounds how long a lost Redis write can
    hide news from short polls); the cursor outlives it, so a device that keeps
    confirming the same entry does not write it again each time the head does."""
    app = make_app(HEAD_CACHE_TTL_S=1)
    client = app.test_client()
    ann, ben = sign_up(client, "ann"), sign_up(client, "ben")
    send(client, ann, open_direct(client, ann, ben), "hi")
    cursor = poll(client, ben)["cursor"]
    poll(client, ben, after=cursor)  # confirmed
    time.sleep(1.5)  # the head's hint expires
    with database_queries(app) as queries:
        assert poll(client, ben, after=cursor)["entries"] == []
    assert len(_head_reads(queries)) == 1
    assert not [q for q in queries if q.startswith("UPDATE")]


def test_a_long_poll_that_runs_out_its_time_keeps_its_users_head_cached(make_app):
    """Its last read of the inbox brings the head along: the next poll with
    nothing new reads nothing, though the head cached at the send has expired."""
    app = make_app(HEAD_CACHE_TTL_S=2)
    client = app.test_client()
    ann, ben = sign_up(client, "ann"), sign_up(client, "ben")
    send(client, ann, open_direct(client, ann, ben), "hi")
    cursor = poll(client, ben)["cursor"]
    assert poll(client, ben, after=cursor, timeout=3)["entries"] == []  # past the head's TTL
    with database_queries(app) as queries:
        assert poll(client, ben, after=cursor)["entries"] == []
    assert _head_reads(queries) == []


@scaled_only
def test_a_reconnecting_listener_wakes_its_waiters(app, client, pair, monkeypatch, redis_url):
    ann, ben, cid = pair
    coordinator = app.extensions["parley.hub"]
    waiting = long_poll_in_background(app, ben, timeout=20)
    wait_until_waiting(app)
    monkeypatch.setattr(coordinator.hub, "notify_users", lambda *_: None)
    send(client, ann, cid, "sent while the doorbell was broken")

    # Redis drops the listener's connection (as a Redis restart would).
    admin = redis.Redis.from_url(redis_url)
    name = coordinator.keys.base.rstrip(":")
    killed = 0
    for connection in admin.client_list(_type="pubsub"):
        if connection["name"].startswith(name):
            killed += admin.client_kill_filter(_id=connection["id"])
    admin.close()
    assert killed == 1

    body, seconds = waiting.result(timeout=30)
    assert message_texts(body) == ["sent while the doorbell was broken"]
    assert seconds < 10, "the waiter was not woken by the reconnect"


def test_the_cursor_never_moves_back(client, pair):
    ann, ben, cid = pair
    for text in ("one", "two"):
        send(client, ann, cid, text)
    poll(client, ben, after=2)
    acked = client.post("/v1/inbox/ack", json={"seq": 1}, headers=ben.auth)
    assert acked.get_json() == {"cursor": 2}
    # Re-reading from an older point is allowed; it does not unconfirm anything.
    assert message_texts(poll(client, ben, after=1)) == ["two"]
    assert poll(client, ben)["entries"] == []


def test_shutting_down_answers_held_long_polls_at_once(app, client, pair):
    from api.lifecycle import begin_shutdown

    _, ben, _ = pair
    held = long_poll_in_background(app, ben, timeout=20)
    wait_until_waiting(app)
    begin_shutdown(app)
    body, seconds = held.result(timeout=30)
    assert body["entries"] == [] and seconds < 20
    # A poll arriving now does not wait.
    started = time.monotonic()
    assert poll(client, ben, timeout=20)["entries"] == []
    assert time.monotonic() - started < 20


@scaled_only
def test_more_concurrent_polls_than_redis_connections_are_all_answered(make_app, redis_url):
    """Requests share the process's few Redis connections, each waiting its turn,
    instead of opening one each (or being refused past a limit)."""
    app = make_app(REDIS_POOL_SIZE=3)
    client = app.test_client()
    people = [sign_up(client, f"fan{n}") for n in range(8)]
    cursors = {p.id: poll(client, p, after=0)["cursor"] for p in people}

    def poll_a_while(person) -> list[int]:
        own = app.test_client()
        return [poll(own, person, after=cursors[person.id])["cursor"] for _ in range(10)]

    with ThreadPoolExecutor(40) as pool:
        answers = list(pool.map(poll_a_while, people * 5))

    assert answers == [[cursors[p.id]] * 10 for p in people * 5]
    name = app.extensions["parley.hub"].keys.base.rstrip(":")
    with redis.Redis.from_url(redis_url) as admin:
        ours = [c for c in admin.client_list() if c["name"].startswith(name)]
    assert 0 < len(ours) <= 3
