"""Cached facts belong to one database: another one behind the same Redis prefix
(dropped and created again, restored elsewhere) gives the same ids to other
users and devices, and must not meet them."""

import psycopg
import pytest
from sqlalchemy.engine import make_url

from tests import services
from tests.conftest import migrate
from tests.factories import (
    long_poll_in_background,
    message_texts,
    open_direct,
    poll,
    send,
    sign_up,
    wait_until_waiting,
)

pytestmark = pytest.mark.parametrize("backend", ["postgres"])


def _fresh_database(name: str) -> str:
    """A new, migrated database beside the suite's, its URL."""
    _drop_database(name)
    with _server() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(services.POSTGRES_URL).set(database=name).render_as_string(False)
    migrate(url)
    return url


def _drop_database(name: str) -> None:
    with _server() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _server() -> psycopg.Connection:
    return psycopg.connect(services.libpq_url(services.POSTGRES_URL, "test"), autocommit=True)


@pytest.fixture
def other_database(app_config):
    """A second database; the test's apps share one Redis prefix."""
    name = f"{make_url(app_config['DATABASE_URL']).database}_other"
    yield _fresh_database(name)
    _drop_database(name)


def test_a_token_of_another_database_lets_no_one_in(make_app, other_database):
    first = make_app().test_client()
    ann = sign_up(first, "ann")
    assert first.get("/v1/conversations", headers=ann.auth).status_code == 200  # cached

    second = make_app(DATABASE_URL=other_database).test_client()
    bob = sign_up(second, "bob")
    assert (bob.id, bob.device_id) == (ann.id, ann.device_id)  # the same ids, someone else

    response = second.get("/v1/conversations", headers=ann.auth)
    assert response.status_code == 401
    assert second.get("/v1/conversations", headers=bob.auth).status_code == 200


def test_cursors_of_another_database_hide_no_entries(make_app, other_database):
    """A device polling without ``after`` reads from its stored cursor: one cached
    by the other database, ahead of this one's, would have skipped the entries."""
    first = make_app().test_client()
    ann, ben = sign_up(first, "ann"), sign_up(first, "ben")
    cid = open_direct(first, ann, ben)
    for text in ("one", "two", "three"):
        send(first, ann, cid, text)
    poll(first, ben, after=poll(first, ben)["cursor"])  # confirmed (and cached)

    second = make_app(DATABASE_URL=other_database).test_client()
    ann, ben = sign_up(second, "ann"), sign_up(second, "ben")
    cid = open_direct(second, ann, ben)
    send(second, ann, cid, "hello again")

    assert message_texts(poll(second, ben)) == ["hello again"]


def test_a_wake_up_from_another_database_carries_it_no_entry(make_app, other_database):
    """A send's wake-up carries its entry, by seq, to every process: one on another
    database must not answer with it (someone else's text, at a seq that hides the
    real entry), only look again."""
    first = make_app().test_client()
    ann, ben = sign_up(first, "ann"), sign_up(first, "ben")
    cid = open_direct(first, ann, ben)

    elsewhere = make_app(DATABASE_URL=other_database)
    second = elsewhere.test_client()
    other_ann, other_ben = sign_up(second, "ann"), sign_up(second, "ben")
    assert (other_ann.id, other_ben.id) == (ann.id, ben.id)
    other_cid = open_direct(second, other_ann, other_ben)
    waiting = long_poll_in_background(elsewhere, other_ben, after=0, timeout=2)
    wait_until_waiting(elsewhere)
    send(first, ann, cid, "for the first database's ben")
    assert waiting.result(timeout=30)[0]["entries"] == []

    send(second, other_ann, other_cid, "for this one's")
    assert message_texts(poll(second, other_ben, after=0)) == ["for this one's"]


def test_a_process_moves_to_a_recreated_database_as_it_reconnects(make_app, other_database):
    name = make_url(other_database).database
    app = make_app(DATABASE_URL=other_database, DB_PING_IF_IDLE_S=0.0)
    client = app.test_client()
    ann = sign_up(client, "ann")
    assert client.get("/v1/conversations", headers=ann.auth).status_code == 200  # cached

    _fresh_database(name)  # its connections cut; empty, the same ids handed out again
    bob = sign_up(client, "bob")  # reconnects
    assert (bob.id, bob.device_id) == (ann.id, ann.device_id)

    assert client.get("/v1/conversations", headers=ann.auth).status_code == 401
    assert client.get("/v1/conversations", headers=bob.auth).status_code == 200


def test_a_request_begun_on_the_old_keys_is_not_let_into_the_new_database(make_app, other_database):
    """A process that has not reconnected yet finds an old token under the old
    keys; its request then reconnects, to the recreated database, where those
    ids are someone else's: it is refused (503), and the next one sees the token
    for what it is there."""
    name = make_url(other_database).database
    first, second = (
        make_app(DATABASE_URL=other_database, DB_PING_IF_IDLE_S=0.0).test_client() for _ in range(2)
    )
    ann = sign_up(first, "ann")
    assert second.get("/v1/conversations", headers=ann.auth).status_code == 200  # cached

    _fresh_database(name)
    bob = sign_up(first, "bob")  # the first process has moved over
    assert (bob.id, bob.device_id) == (ann.id, ann.device_id)

    assert second.get("/v1/conversations", headers=ann.auth).status_code == 503
    assert second.get("/v1/conversations", headers=ann.auth).status_code == 401
