"""Admission: a bounded number of API requests work at once; the rest wait their turn."""

import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
from prometheus_client import REGISTRY

from tests import services
from tests.factories import (
    long_poll_in_background,
    message_texts,
    open_direct,
    poll,
    scaled_only,
    send,
    sign_up,
    wait_until_waiting,
)

LOCK_WAIT_BOUND_S = 10
QUEUED_WAIT_BOUND_S = 10
WAITING_FOR_A_TURN = "parley_requests_waiting_for_a_turn"


def test_held_long_polls_keep_nobody_out(make_app):
    """With room for one request at a time, three held long polls still let a send
    in, and the send wakes them."""
    app = make_app(ADMITTED_REQUESTS=1, ADMISSION_WAIT_S=0.5)
    client = app.test_client()
    ann, ben, cat = (sign_up(client, name) for name in ("ann", "ben", "cat"))
    chats = [open_direct(client, ann, other) for other in (ben, cat)]
    cursors = {p.id: poll(client, p, after=poll(client, p)["cursor"])["cursor"] for p in (ben, cat)}
    waiting = [
        long_poll_in_background(app, p, after=cursors[p.id], timeout=20) for p in (ben, cat, ben)
    ]
    wait_until_waiting(app, count=2)  # Ben's second poll replaced his first

    for chat in chats:
        assert send(client, ann, chat, "hello").status_code == 201
    answers = [future.result(timeout=30)[0] for future in waiting]
    assert [message_texts(a) for a in answers] == [[], ["hello"], ["hello"]]


def test_a_poll_back_from_its_wait_takes_the_next_turn_before_new_requests(make_app):
    """Its client has waited through the whole poll: under overload the server
    finishes that work before it starts new work."""
    app = make_app(ADMITTED_REQUESTS=1, ADMISSION_WAIT_S=10)
    admission = app.extensions["parley.admission"]
    served = []

    def take_a_turn(who: str, ahead: bool) -> None:
        with app.test_request_context():
            admission.enter(ahead=ahead)
            served.append(who)
            admission.leave()

    with app.test_request_context(), ThreadPoolExecutor(2) as background:
        admission.enter()  # the only turn
        already = waiting_for_a_turn()
        first = background.submit(take_a_turn, "a new request", ahead=False)
        wait_for_queued(already + 1)
        second = background.submit(take_a_turn, "a poll back from its wait", ahead=True)
        wait_for_queued(already + 2)
        admission.leave()
        for taken in (first, second):
            taken.result(timeout=10)

    assert served == ["a poll back from its wait", "a new request"]
    assert waiting_for_a_turn() == already


def test_a_send_takes_the_next_turn_before_new_polls(make_app):
    """Its wait is its message's latency; a poll that stood in line before it loses
    nothing, since the poll's answer carries the message."""
    app = make_app(ADMITTED_REQUESTS=1, ADMISSION_WAIT_S=10)
    admission = app.extensions["parley.admission"]
    client = app.test_client()
    ann, ben = sign_up(client, "ann"), sign_up(client, "ben")
    chat = open_direct(client, ann, ben)
    cursor = poll(client, ben)["cursor"]

    with app.test_request_context(), ThreadPoolExecutor(2) as background:
        admission.enter()  # the only turn
        already = waiting_for_a_turn()
        polled = background.submit(poll, app.test_client(), ben, after=cursor)
        wait_for_queued(already + 1)
        sent = background.submit(send, app.test_client(), ann, chat, "first in line")
        wait_for_queued(already + 2)
        admission.leave()
        assert sent.result(timeout=10).status_code == 201
        assert message_texts(polled.result(timeout=10)) == ["first in line"]


def test_a_long_poll_that_runs_out_its_time_answers_without_a_turn(make_app, pair):
    """Its empty answer is due when its time is up (a proxy in front cuts it soon
    after), and costs too little to queue for: it comes though every turn is taken."""
    app = make_app(ADMITTED_REQUESTS=1, ADMISSION_WAIT_S=10)
    _ann, ben, _chat = pair
    cursor = poll(app.test_client(), ben)["cursor"]
    held = long_poll_in_background(app, ben, after=cursor, timeout=1)
    wait_until_waiting(app)

    with app.test_request_context():
        app.extensions["parley.admission"].enter()  # the only turn, held throughout
        body, _seconds = held.result(timeout=30)

    assert body == {"entries": [], "cursor": cursor, "has_more": False}


def waiting_for_a_turn() -> float:
    """The gauge /metrics shows, read in process (a request made from inside a
    request context would share its turn)."""
    return REGISTRY.get_sample_value(WAITING_FOR_A_TURN) or 0.0


def wait_for_queued(count: float) -> None:
    deadline = time.monotonic() + QUEUED_WAIT_BOUND_S
    while waiting_for_a_turn() < count:
        assert time.monotonic() < deadline, f"never {count:.0f} requests waiting for a turn"
        time.sleep(0.01)


@scaled_only
def test_past_its_wait_a_busy_server_answers_503_and_then_recovers(make_app, app_config):
    """The one working request waits on a row lock; a poll queued behind it gives up
    after ADMISSION_WAIT_S with 503 server_busy and Retry-After, nothing done. Once
    the lock goes, the send completes and polls are answered again."""
    app = make_app(ADMITTED_REQUESTS=1, ADMISSION_WAIT_S=0.3)
    client = app.test_client()
    ann, ben = sign_up(client, "ann"), sign_up(client, "ben")
    chat = open_direct(client, ann, ben)
    with psycopg.connect(services.libpq_url(app_config["DATABASE_URL"])) as locker:
        locker.execute("SELECT 1 FROM conversations WHERE id = %s FOR UPDATE", (chat,))
        with ThreadPoolExecutor(1) as background:
            sending = background.submit(send, app.test_client(), ann, chat, "held up")
            wait_for_a_lock_waiter(locker)
            busy = client.get("/v1/inbox", headers=ben.auth)
            locker.rollback()
            sent = sending.result(timeout=30)

    assert busy.status_code == 503
    assert busy.get_json()["error"]["code"] == "server_busy"
    assert busy.headers["Retry-After"]
    assert sent.status_code == 201
    assert message_texts(poll(client, ben))[-1:] == ["held up"]


def wait_for_a_lock_waiter(conn: psycopg.Connection) -> None:
    deadline = time.monotonic() + LOCK_WAIT_BOUND_S
    with psycopg.connect(conn.info.dsn, autocommit=True) as watcher:
        while time.monotonic() < deadline:
            (waiting,) = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE wait_event_type = 'Lock' AND datname = current_database()"
            ).fetchone()
            if waiting:
                return
            time.sleep(0.01)
    raise AssertionError("the send never waited on the lock")
