"""Statements a connection runs often are prepared on the server (parsed and planned
once), and reading does not throw them away: psycopg drops every statement a
connection has prepared, with one more round trip, when a transaction on it
rolls back, so reads run outside transactions."""

import re

import pytest

from api.db import db
from tests.factories import (
    message_texts,
    open_direct,
    poll,
    postgres_protocol,
    scaled_only,
    send,
    sign_up,
)

pytestmark = scaled_only


def prepared_names(app) -> set[str]:
    """The names of the statements the app's one pooled connection has prepared."""
    with db.engine(app).connect() as conn:
        driver = conn.connection.dbapi_connection
        rows = driver.execute("SELECT name FROM pg_prepared_statements", prepare=False)
        return {name for (name,) in rows}


def prepared_statements(app) -> int:
    return len(prepared_names(app))


def chat_a_while(client) -> tuple:
    """Enough sends and polls that their statements run more than five times."""
    ann, ben = sign_up(client, "ann"), sign_up(client, "ben")
    chat = open_direct(client, ann, ben)
    cursor = poll(client, ben)["cursor"]
    for n in range(8):
        assert send(client, ann, chat, f"m{n}").status_code == 201
        batch = poll(client, ben, after=cursor)
        assert [e["message"]["text"] for e in batch["entries"]] == [f"m{n}"]
        cursor = batch["cursor"]
    return ann, ben, chat


@pytest.mark.parametrize(("enabled", "prepared"), [(True, True), (False, False)])
def test_statements_run_often_are_prepared_unless_turned_off(make_app, enabled, prepared):
    app = make_app(DB_POOL_SIZE=1, DB_PREPARED_STATEMENTS=enabled)
    chat_a_while(app.test_client())

    assert (prepared_statements(app) > 0) is prepared


def test_reading_keeps_the_prepared_statements(make_app):
    app = make_app(DB_POOL_SIZE=1)
    client = app.test_client()
    ann, ben, chat = chat_a_while(client)
    before = prepared_statements(app)
    assert before > 0

    reads = [
        f"/v1/conversations/{chat}/messages",
        "/v1/conversations",
        f"/v1/conversations/{chat}",
        f"/v1/presence?user_ids={ben.id}",
        "/v1/users/me",
        f"/v1/users/{ben.id}",
        "/v1/users?username=ben",
    ]
    for path in reads:
        assert client.get(path, headers=ann.auth).status_code == 200, path
        assert prepared_statements(app) >= before, path
    assert client.get("/readyz").status_code == 200
    assert prepared_statements(app) >= before


def test_a_send_runs_statements_its_connection_prepared_before(make_app):
    """A send's statements go out in one simple-protocol query, which carries no
    parameters: they are prepared on the connection once, then executed by name."""
    app = make_app(DB_POOL_SIZE=1)
    client = app.test_client()
    ann, ben = sign_up(client, "ann"), sign_up(client, "ben")
    chat = open_direct(client, ann, ben)
    assert send(client, ann, chat, "first").status_code == 201

    with postgres_protocol(app) as protocol:
        assert send(client, ann, chat, "second").status_code == 201
    queries = [text for direction, kind, text in protocol if direction == "F" and kind == "Query"]
    assert len(queries) == 1
    executed = re.findall(r"EXECUTE (\w+)\(", queries[0])
    assert len(executed) == 3
    assert set(executed) <= prepared_names(app)
    assert "INSERT INTO" not in queries[0]
    assert message_texts(poll(client, ben)) == ["first", "second"]


def test_a_send_after_a_rollback_prepares_its_statements_again(make_app):
    """psycopg deallocates every statement a connection prepared when a transaction
    on it rolls back, those of the send too: the next send prepares them again."""
    app = make_app(DB_POOL_SIZE=1)
    client = app.test_client()
    ann, ben, chat = chat_a_while(client)
    assert prepared_names(app)

    taken = client.post("/v1/users", json={"username": "ann", "password": "another secret"})
    assert taken.status_code == 409  # its insert failed, and its transaction rolled back
    assert not prepared_names(app)

    assert send(client, ann, chat, "after the rollback").status_code == 201
    assert message_texts(poll(client, ben, after=0))[-1] == "after the rollback"
