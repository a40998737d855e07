"""Statements a connection runs often are prepared on the server (parsed and planned
once), and reading does not throw them away: psycopg drops every statement a
connection has prepared, with one more round trip, when a transaction on it
rolls back, so reads run outside transactions."""

import pytest

from api.db import db
from tests.factories import open_direct, poll, scaled_only, send, sign_up

pytestmark = scaled_only


def prepared_statements(app) -> int:
    """How many statements the app's one pooled connection has prepared."""
    with db.engine(app).connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")  # no transaction to roll back
        driver = conn.connection.dbapi_connection
        query = "SELECT count(*) FROM pg_prepared_statements"
        return driver.execute(query, prepare=False).fetchone()[0]


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
