"""A send's wake-up carries its entry: the long polls it wakes answer with it
instead of reading it back, and give the answer a read would have given."""

import redis

from api.db import utcnow
from api.hub.waiters import Carried
from api.inbox.reading import CARRIED_TEXT_MAX, carried_batch, carried_entry
from api.messages.models import Message
from tests.factories import (
    database_queries,
    long_poll_in_background,
    message_texts,
    open_direct,
    poll,
    scaled_only,
    send,
    sign_up,
    wait_until_waiting,
)


def _inbox_reads(queries: list[str]) -> list[str]:
    """The statements that read inbox entries (those that write them insert them)."""
    return [q for q in queries if "inbox_entries" in q and "INSERT" not in q]


def _woken_by(app, client, person, sending) -> tuple[dict, list[str]]:
    """The answer of ``person``'s long poll woken by ``sending()``, and the queries meanwhile."""
    waiting = long_poll_in_background(app, person, timeout=20)
    wait_until_waiting(app)
    with database_queries(app) as queries:
        sending()
        body, seconds = waiting.result(timeout=30)
    assert seconds < 10, "the poll was not woken (it ended on its closing read)"
    return body, queries


def test_a_woken_long_poll_answers_what_a_read_would_without_reading(app, client, pair):
    ann, ben, cid = pair
    woken, queries = _woken_by(
        app, client, ben, lambda: send(client, ann, cid, "carried", client_msg_id="c-1")
    )
    assert message_texts(woken) == ["carried"]
    assert _inbox_reads(queries) == []
    assert woken == poll(client, ben, after=0)  # the same entry, read from the database


@scaled_only
def test_a_wake_up_carries_the_entry_to_another_process(make_app):
    sending, receiving = make_app(), make_app()
    client = sending.test_client()
    ann, ben = sign_up(client, "ann"), sign_up(client, "ben")
    cid = open_direct(client, ann, ben)
    woken, queries = _woken_by(receiving, client, ben, lambda: send(client, ann, cid, "across"))
    assert message_texts(woken) == ["across"]
    assert _inbox_reads(queries) == []
    assert woken == poll(client, ben, after=0)


def test_a_long_text_is_read_back_rather_than_carried(app, client, pair):
    ann, ben, cid = pair
    text = "x" * (CARRIED_TEXT_MAX + 1)
    woken, queries = _woken_by(app, client, ben, lambda: send(client, ann, cid, text))
    assert message_texts(woken) == [text]
    assert len(_inbox_reads(queries)) == 1


def _entry(text: str = "hi") -> dict:
    message = Message(
        id=1,
        conversation_id=1,
        sender_id=1,
        seq=1,
        text=text,
        client_msg_id=None,
        created_at=utcnow(),
    )
    return carried_entry(message)


def test_carried_entries_after_a_gap_leave_the_poll_to_read(app):
    with app.app_context():
        assert carried_batch([Carried(7, _entry())], after=5, limit=10) is None
        batch = carried_batch([Carried(7, _entry()), Carried(6, _entry())], after=5, limit=10)
    assert [entry["seq"] for entry in batch.entries] == [6, 7]
    assert (batch.cursor, batch.has_more) == (7, False)


def test_carried_entries_keep_to_the_polls_limit_and_text_budget(make_app):
    app = make_app(INBOX_BATCH_MAX_CHARS=10)
    with app.app_context():
        carried = [Carried(seq, _entry("abcd")) for seq in (1, 2, 3, 4)]
        by_limit = carried_batch(carried, after=0, limit=1)
        by_budget = carried_batch(carried, after=0, limit=10)
        alone = carried_batch([Carried(1, _entry("a" * 50))], after=0, limit=10)
    assert ([e["seq"] for e in by_limit.entries], by_limit.has_more) == ([1], True)
    assert ([e["seq"] for e in by_budget.entries], by_budget.has_more) == ([1, 2], True)
    assert [e["message"]["text"] for e in alone.entries] == ["a" * 50]  # always one


@scaled_only
def test_an_unreadable_wake_up_leaves_the_listener_listening(app, client, pair, redis_url):
    ann, ben, cid = pair
    waiting = long_poll_in_background(app, ben, timeout=20)
    wait_until_waiting(app)
    keys = app.extensions["parley.hub"].keys
    carrying = f"e::{ben.id}.1:{keys.database}:".encode()
    unreadable = [b"e:1:2.x:{}", b"e:1:2.3:not json", b"u:x"]
    not_entries = [
        b"{}",
        b"[]",
        b"null",
        b"not json",
        b'{"message": {"text": "x"}, "created_at": 1}',
    ]
    admin = redis.Redis.from_url(redis_url)
    for garbage in [*unreadable, *(carrying + shape for shape in not_entries)]:
        assert admin.publish(keys.base + "wake", garbage) == 1  # the listener heard it
    admin.close()
    send(client, ann, cid, "still heard")
    body, seconds = waiting.result(timeout=30)  # a 500 would fail in poll()
    assert message_texts(body) == ["still heard"]
    assert seconds < 10, (
        "the listener no longer wakes its waiters (the poll ended on its closing read)"
    )


@scaled_only
def test_dates_read_in_another_time_zone_answer_as_carried(make_app):
    """PostgreSQL answers in the session's time zone: read, the dates still come in UTC."""
    url = make_app().config["DATABASE_URL"]
    app = make_app(DATABASE_URL=f"{url}?options=-c%20timezone%3DAmerica/New_York")
    client = app.test_client()
    ann, ben = sign_up(client, "ann"), sign_up(client, "ben")
    cid = open_direct(client, ann, ben)
    woken, _ = _woken_by(app, client, ben, lambda: send(client, ann, cid, "on time"))
    assert woken == poll(client, ben, after=0)
    assert woken["entries"][0]["created_at"].endswith("+00:00")


@scaled_only
def test_a_wake_up_whose_entry_cannot_be_read_still_wakes(
    app, client, pair, redis_url, monkeypatch
):
    ann, ben, cid = pair
    waiting = long_poll_in_background(app, ben, timeout=20)
    wait_until_waiting(app)
    coordinator = app.extensions["parley.hub"]
    monkeypatch.setattr(coordinator.hub, "notify_users", lambda *_: None)
    send(client, ann, cid, "committed, its wake-up garbled")
    admin = redis.Redis.from_url(redis_url)
    garbled = f"e::{ben.id}.1:{coordinator.keys.database}:".encode() + b"not json"
    assert admin.publish(coordinator.keys.base + "wake", garbled) == 1
    admin.close()
    body, seconds = waiting.result(timeout=30)
    assert message_texts(body) == ["committed, its wake-up garbled"]
    assert seconds < 10, "the poll was not woken (it ended on its closing read)"
