"""Confirmations that come at once share one statement: each device's cursor in it
moves as its confirmation alone would move it, forward only. A poll's own
confirmation (its ``after``) is stored a moment later, with the others of its
process meanwhile; an ack is stored before it answers."""

import threading
import time

import pytest
from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError

from api.accounts.models import Device
from api.db import db
from api.inbox.actions import Confirm, write_cursors
from api.write_behind import WriteBehind
from tests.factories import (
    database_queries,
    log_in,
    message_texts,
    open_direct,
    poll,
    send,
    sign_up,
)

STORED_WITHIN_S = 10  # "a moment later", with room for a busy machine


def write(app, confirms: list[Confirm]) -> tuple[list[int], int]:
    """The cursors answered, and how many statements wrote them."""
    statements: list[str] = []

    def note(_conn, _cursor, statement, _params, _context, _many) -> None:
        statements.append(statement)

    engine = db.engine(app)
    event.listen(engine, "after_cursor_execute", note)
    try:
        with app.app_context():
            cursors = write_cursors(confirms)
    finally:
        event.remove(engine, "after_cursor_execute", note)
    return cursors, len([s for s in statements if "UPDATE devices" in s])


def test_confirmations_written_together_move_each_cursor_as_alone(app, client):
    ann, ben = sign_up(client, "ann"), sign_up(client, "ben")
    laptop = log_in(client, "ann", device_name="laptop")
    direct = open_direct(client, ann, ben)
    for text in ("m1", "m2", "m3"):
        send(client, ben, direct, text)

    cursors, statements = write(
        app,
        [
            Confirm(ann.device_id, 2),
            Confirm(ben.device_id, 3),
            Confirm(ann.device_id, 1),  # the same phone again, behind: it keeps 2
            Confirm(laptop.device_id, 3),
        ],
    )

    assert cursors == [2, 3, 2, 3]
    assert statements == 1
    # Each device resumes from its own stored cursor.
    assert message_texts(poll(client, ann)) == ["m3"]
    assert message_texts(poll(client, laptop)) == []
    assert message_texts(poll(client, ben)) == []


def test_a_cursor_never_moves_back(app, client):
    ann, ben = sign_up(client, "ann"), sign_up(client, "ben")
    direct = open_direct(client, ann, ben)
    for text in ("m1", "m2"):
        send(client, ben, direct, text)
    write(app, [Confirm(ann.device_id, 2)])

    cursors, _ = write(app, [Confirm(ann.device_id, 1)])

    assert cursors == [2]
    assert message_texts(poll(client, ann)) == []


def stored_cursor(app, person) -> int:
    with app.app_context():
        return db.session.scalar(select(Device.cursor).where(Device.id == person.device_id))


def behind(app) -> WriteBehind:
    return app.extensions["parley.cursors.behind"]


def test_a_polls_confirmation_is_stored_a_moment_later(app, client, pair):
    ann, ben, cid = pair
    for text in ("one", "two"):
        send(client, ann, cid, text)

    poll(client, ben, after=2)

    deadline = time.monotonic() + STORED_WITHIN_S
    while stored_cursor(app, ben) != 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stored_cursor(app, ben) == 2


def test_a_confirmation_the_cache_took_is_stored_though_the_poll_then_failed(
    app, client, pair, monkeypatch
):
    """Ben's poll confirms, and then fails (his coming online cannot be written):
    the cached cursor moved, so the stored one must follow, or a retry of the
    same poll (the cache says: there already) would never store it."""
    ann, ben, cid = pair
    for text in ("one", "two"):
        send(client, ann, cid, text)

    def database_down(*_args):
        raise OperationalError("UPDATE users", {}, ConnectionError("the database went away"))

    monkeypatch.setattr("api.presence.actions.do_sync_presence", database_down)
    failed = client.get("/v1/inbox", query_string={"after": 2}, headers=ben.auth)
    assert failed.status_code == 503

    behind(app).flush()
    assert stored_cursor(app, ben) == 2


def test_polls_confirmations_share_one_statement_and_count_at_once(make_app):
    """Not stored yet (a minute's delay), yet every poll of the process goes on
    from them; stored, three devices' in one statement."""
    app = make_app(CURSOR_WRITE_DELAY_S=60)
    client = app.test_client()
    ann, ben = sign_up(client, "ann"), sign_up(client, "ben")
    laptop = log_in(client, "ann", device_name="laptop")
    direct = open_direct(client, ann, ben)
    for text in ("m1", "m2", "m3"):
        send(client, ben, direct, text)

    for person, seq in ((ann, 2), (laptop, 3), (ben, 3)):
        poll(client, person, after=seq)

    assert [stored_cursor(app, p) for p in (ann, laptop, ben)] == [0, 0, 0]
    assert message_texts(poll(client, ann)) == ["m3"]  # from its confirmation, not from 0
    with database_queries(app) as queries:
        behind(app).flush()
    assert len([q for q in queries if "UPDATE devices" in q]) == 1
    assert [stored_cursor(app, p) for p in (ann, laptop, ben)] == [2, 3, 3]


def test_an_ack_stores_what_polls_confirmed_before_it(make_app):
    app = make_app(CURSOR_WRITE_DELAY_S=60)
    client = app.test_client()
    ann, ben = sign_up(client, "ann"), sign_up(client, "ben")
    direct = open_direct(client, ann, ben)
    for text in ("m1", "m2"):
        send(client, ann, direct, text)
    poll(client, ben, after=2)

    acked = client.post("/v1/inbox/ack", json={"seq": 1}, headers=ben.auth)

    assert acked.get_json() == {"cursor": 2}
    assert stored_cursor(app, ben) == 2


class FailsOnce:
    """A write that fails the first time, as one does while the database is away."""

    def __init__(self) -> None:
        self.written: list[dict[int, int]] = []
        self.done = threading.Event()

    def __call__(self, values: dict[int, int]) -> None:
        if not self.written:
            self.written.append({})
            raise ConnectionError("the database is away")
        self.written.append(values)
        self.done.set()


def test_a_write_that_fails_is_tried_again_with_what_came_meanwhile(app):
    write = FailsOnce()
    counters = WriteBehind(app, write, delay_s=0.01)
    counters.raise_to(1, 5)
    counters.raise_to(1, 4)  # behind: 5 stays

    counters.flush()  # fails
    counters.raise_to(2, 7)

    assert write.done.wait(STORED_WITHIN_S)
    assert write.written[1:] == [{1: 5, 2: 7}]
    assert counters.pending(1) is None


@pytest.mark.parametrize("backend", ["sqlite"])  # the write-behind is the app's, not the backend's
def test_closed_it_writes_what_is_pending_and_nothing_later(app, backend):
    write = FailsOnce()
    counters = WriteBehind(app, write, delay_s=0.01)
    counters.raise_to(1, 5)

    counters.close()  # fails: it is not tried again
    counters.raise_to(2, 7)

    assert not write.done.wait(0.5)
    assert write.written == [{}]
