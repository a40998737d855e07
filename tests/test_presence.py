"""Presence: online while polling (and for a window after), once-per-change events.

The clock is the app's, moved by hand; sweeps are run by hand, as the sweeper
worker would run them.
"""

import pytest
import redis

from api.auth import Auth, hash_token
from api.hub.waiters import Waiter
from api.inbox.answered import Answered, end_answered
from api.presence.actions import note_poll
from tests.factories import (
    create_group,
    log_in,
    long_poll_in_background,
    message_texts,
    of_type,
    open_direct,
    poll,
    redis_round_trips,
    scaled_only,
    send,
    sign_up,
    wait_until_waiting,
)
from workers.presence_sweeper import PresenceSweeper

WINDOW_S = 30.0
START = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_clocked_app(make_app, clock):
    def build(**overrides):
        app = make_app(**{"PRESENCE_WINDOW_S": WINDOW_S, **overrides})
        app.extensions["parley.clock"] = clock
        return app

    return build


@pytest.fixture
def app(make_clocked_app):
    return make_clocked_app()


def sweep(app) -> int:
    with app.app_context():
        return PresenceSweeper(app).step()


def presence_events(client, person, after: int = 0) -> tuple[list[dict], int]:
    batch = poll(client, person, after=after)
    return of_type(batch, "presence"), batch["cursor"]


def presence(client, viewer, *people) -> list[dict]:
    ids = ",".join(str(p.id) for p in people)
    response = client.get("/v1/presence", query_string={"user_ids": ids}, headers=viewer.auth)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["presence"]


def test_polling_makes_a_user_online_and_the_window_turns_them_offline(app, client, clock, pair):
    ann, ben, _ = pair
    assert presence(client, ben, ann) == [{"user_id": ann.id, "online": False, "last_seen": None}]

    poll(client, ann)
    (shown,) = presence(client, ben, ann)
    assert shown["online"] is True
    events, cursor = presence_events(client, ben)
    assert [(e["user_id"], e["online"]) for e in events] == [(ann.id, True)]

    clock.advance(WINDOW_S - 1)
    assert sweep(app) == 0
    assert presence(client, ben, ann)[0]["online"] is True

    clock.advance(2)
    assert sweep(app) == 2  # ann, and ben, whose reading polls count too
    (shown,) = presence(client, ben, ann)
    assert shown["online"] is False and shown["last_seen"].startswith("2027-01-15T08:00:00")
    events, cursor = presence_events(client, ben, cursor)
    assert [(e["user_id"], e["online"]) for e in events] == [(ann.id, False)]
    assert events[0]["last_seen"] == shown["last_seen"]

    # A second sweep (or a second sweeper) has nothing left to announce.
    assert sweep(app) == 0
    assert presence_events(client, ben, cursor)[0] == []


@scaled_only
def test_a_poll_is_noted_after_redis_forgot_its_scripts(app, client, pair):
    """A restarted Redis knows none of the scripts a poll's start runs in one round trip."""
    ann, ben, _ = pair
    app.extensions["parley.hub"].client.script_flush()

    poll(client, ann)

    assert presence(client, ben, ann)[0]["online"] is True


@scaled_only
def test_a_poll_answers_when_redis_fails_while_announcing_it(app, client, pair, monkeypatch):
    """Coming online is announced after the poll is noted; a Redis failure then
    costs the announcement, not the poll."""
    ann, ben, cid = pair
    store = app.extensions["parley.presence"]

    def unreachable(*_args):
        raise redis.ConnectionError("Redis went away")

    monkeypatch.setattr(store, "states", unreachable)
    answer = client.get("/v1/inbox", headers=ann.auth)  # ann comes online
    assert answer.status_code == 200, answer.get_json()
    monkeypatch.undo()

    assert send(client, ben, cid, "still works").status_code == 201
    assert message_texts(poll(client, ann)) == ["still works"]


@scaled_only
def test_a_token_logged_out_in_another_process_polls_no_more_and_shows_nobody_online(
    app, client, clock, pair, make_clocked_app
):
    """A process remembers the tokens it verified, and a poll by one goes ahead on
    a claim that its own round trip to Redis confirms. A logout through another
    process must stop the next poll here before it marks its user online."""
    ann, ben, _ = pair
    laptop = log_in(client, "ann", device_name="laptop")
    poll(client, laptop)  # this process now remembers the laptop's token
    clock.advance(WINDOW_S + 1)
    sweep(app)
    assert presence(client, ben, ann)[0]["online"] is False

    elsewhere = make_clocked_app().test_client()
    assert elsewhere.delete("/v1/sessions/current", headers=laptop.auth).status_code == 204

    answer = client.get("/v1/inbox", headers=laptop.auth)
    assert answer.status_code == 401, answer.get_json()
    assert answer.get_json()["error"]["code"] == "unauthorized"
    assert presence(client, ben, ann)[0]["online"] is False


@scaled_only
def test_a_remembered_token_gone_from_redis_still_polls_and_comes_online(app, client, clock, pair):
    """The cached entry that confirms a remembered token expires (or a restarted
    Redis lost it): the poll asks the database instead, and is noted all the same."""
    ann, ben, _ = pair
    poll(client, ann)
    clock.advance(WINDOW_S + 1)
    sweep(app)
    coordinator = app.extensions["parley.hub"]
    coordinator.client.delete(f"{coordinator.keys.prefix}tok:{hash_token(ann.token)}")

    assert poll(client, ann)["entries"] == []
    assert presence(client, ben, ann)[0]["online"] is True


def test_a_client_re_polling_every_25_s_never_flaps(app, client, clock, pair):
    ann, ben, _ = pair
    poll(client, ann)
    _, cursor = presence_events(client, ben)
    for _ in range(8):
        clock.advance(25)
        sweep(app)
        poll(client, ann)
    assert presence_events(client, ben, cursor)[0] == []
    assert presence(client, ben, ann)[0]["online"] is True


def test_a_held_long_poll_keeps_its_user_online(make_clocked_app, clock):
    app = make_clocked_app(PRESENCE_WINDOW_S=5)
    client = app.test_client()
    ann, ben = sign_up(client, "ann"), sign_up(client, "ben")
    cid = open_direct(client, ann, ben)
    waiting = long_poll_in_background(app, ann, timeout=20)
    wait_until_waiting(app)
    clock.advance(19)  # far past the window, but the poll is still held
    sweep(app)
    (shown,) = presence(client, ben, ann)
    assert shown["online"] is True and shown["last_seen"].startswith("2027-01-15T08:00:19")

    send(client, ben, cid, "ends the poll")
    waiting.result(timeout=30)
    clock.advance(6)
    assert sweep(app) == 1
    (shown,) = presence(client, ben, ann)
    assert shown["online"] is False and shown["last_seen"].startswith("2027-01-15T08:00:19")


def test_an_early_answers_late_note_leaves_a_newer_poll_online(app, clock, pair):
    """A long poll answered early notes its device last seen once the answer is out;
    by then the client may hold a newer poll, which that note must not cut short."""
    ann, ben, _ = pair
    auth = Auth(ann.device_id, ann.id, hash_token(ann.token))
    with app.test_request_context():
        first = note_poll(auth, holds_for=20)  # the first poll's start
        clock.advance(2)  # answered early; the client polls again at once
        note_poll(auth, holds_for=20)
        note_poll(auth, holds_for=0, replacing=first)  # the first poll's end, noted late
    clock.advance(1 + WINDOW_S)  # past the early answer's window, not the newer poll's
    sweep(app)
    assert presence(app.test_client(), ben, ann)[0]["online"] is True


@scaled_only
def test_polls_answered_together_are_noted_in_one_redis_round_trip(
    app, client, clock, pair, monkeypatch
):
    """The polls of a process answered together (a send to a group wakes every
    member's) note their early ends in one round trip, each device last seen at
    its answer."""
    ann, ben, _ = pair
    cat = sign_up(client, "cat")
    people = [ann, ben, cat]
    auths = [Auth(p.device_id, p.id, hash_token(p.token)) for p in people]
    with app.test_request_context():
        noted = [note_poll(auth, holds_for=20) for auth in auths]  # their starts
        clock.advance(2)  # answered early, together
        ended = [
            Answered(auth, Waiter(auth.user_id, auth.device_id), until)
            for auth, until in zip(auths, noted, strict=True)
        ]
        with redis_round_trips(app, monkeypatch) as trips:
            end_answered(ended)
    assert len(trips) == 1
    clock.advance(1 + WINDOW_S)  # past the answers' window, not the starts' deadlines
    assert sweep(app) == len(people)
    shown = presence(client, ben, ann, cat)
    assert [(p["online"], p["last_seen"][:19]) for p in shown] == [
        (False, "2027-01-15T08:00:02")
    ] * 2


def test_a_long_poll_that_runs_out_its_time_is_last_seen_at_its_end(app, client, clock, pair):
    ann, ben, _ = pair
    assert poll(client, ann, timeout=1)["entries"] == []  # the app's clock stands still
    clock.advance(1 + WINDOW_S)
    assert sweep(app) == 1
    (shown,) = presence(client, ben, ann)
    assert shown["online"] is False and shown["last_seen"].startswith("2027-01-15T08:00:01")


def test_every_device_must_be_gone_for_offline(app, client, clock, pair):
    ann, ben, _ = pair
    laptop = log_in(client, "ann", device_name="laptop")
    poll(client, ann)
    clock.advance(20)
    poll(client, laptop)
    clock.advance(20)
    sweep(app)
    assert presence(client, ben, ann)[0]["online"] is True
    clock.advance(11)
    sweep(app)
    assert presence(client, ben, ann)[0]["online"] is False


def test_hidden_presence_leaks_nothing(app, client, clock, pair):
    ann, ben, cid = pair
    poll(client, ann)
    _, cursor = presence_events(client, ben)

    hidden = client.patch("/v1/users/me", json={"show_presence": False}, headers=ann.auth)
    assert hidden.status_code == 200 and hidden.get_json()["show_presence"] is False
    events, cursor = presence_events(client, ben, cursor)
    assert [(e["online"], e["last_seen"]) for e in events] == [(False, None)]

    for _ in range(3):
        poll(client, ann)
        clock.advance(WINDOW_S + 1)
        sweep(app)
    assert presence_events(client, ben, cursor)[0] == []
    assert presence(client, ben, ann) == [{"user_id": ann.id, "online": False, "last_seen": None}]
    members = client.get(f"/v1/conversations/{cid}", headers=ben.auth).get_json()["members"]
    assert {m["id"]: m["presence"] for m in members}[ann.id] == {"online": False, "last_seen": None}

    poll(client, ann)
    client.patch("/v1/users/me", json={"show_presence": True}, headers=ann.auth)
    events, _ = presence_events(client, ben, cursor)
    assert [e["online"] for e in events] == [True]


def test_a_conversation_shows_its_members_presence(client, pair):
    ann, ben, cid = pair
    poll(client, ben)
    members = client.get(f"/v1/conversations/{cid}", headers=ann.auth).get_json()["members"]
    online = {m["id"]: m["presence"]["online"] for m in members}
    assert online == {ann.id: False, ben.id: True}


def test_big_groups_do_not_hear_presence(make_clocked_app):
    client = make_clocked_app(PRESENCE_GROUP_MAX=2).test_client()
    ann, ben, cat = (sign_up(client, n) for n in ("ann", "ben", "cat"))
    create_group(client, ann, [ben, cat])
    open_direct(client, ann, cat)
    poll(client, ann)
    assert presence_events(client, ben)[0] == []
    assert [e["user_id"] for e in presence_events(client, cat)[0]] == [ann.id]


@scaled_only
def test_several_sweepers_announce_a_change_once(make_clocked_app, clock):
    apps = [make_clocked_app() for _ in range(3)]
    client = apps[0].test_client()
    ann, ben = sign_up(client, "ann"), sign_up(client, "ben")
    open_direct(client, ann, ben)
    poll(client, ann)
    _, cursor = presence_events(client, ben)
    clock.advance(WINDOW_S + 1)
    assert sum(sweep(app) for app in apps) == 2  # ann and ben, each swept by one sweeper
    events, _ = presence_events(client, ben, cursor)
    assert [(e["user_id"], e["online"]) for e in events] == [(ann.id, False)]


@pytest.mark.parametrize(
    "user_ids",
    ["", "a,b", "1,,x", "0", "-1", "1,1,x", "2\t", " 2", "+2", "02", "1_000", "1,,2", "1,"],
)
def test_bad_presence_queries_are_refused(client, pair, user_ids):
    _, ben, _ = pair
    response = client.get("/v1/presence", query_string={"user_ids": user_ids}, headers=ben.auth)
    assert response.status_code == 422


def test_presence_queries_are_bounded_and_name_real_users(client, pair):
    ann, ben, _ = pair
    too_many = ",".join(str(i) for i in range(1, 102))
    assert (
        client.get(
            "/v1/presence", query_string={"user_ids": too_many}, headers=ben.auth
        ).status_code
        == 422
    )
    unknown = client.get(
        "/v1/presence", query_string={"user_ids": f"{ann.id},4242"}, headers=ben.auth
    )
    assert unknown.status_code == 422
    assert unknown.get_json()["error"]["details"] == {"user_ids": [4242]}
