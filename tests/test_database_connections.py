"""Pooled database connections that the server dropped while they sat unused."""

import psycopg
import pytest

from tests import services
from tests.factories import open_direct, poll, scaled_only, send, sign_up

pytestmark = scaled_only


def drop_every_other_connection(database_url: str) -> int:
    """What a database restart or a proxy's idle timeout does to a pool: every
    connection but this one is closed from the server's side."""
    with psycopg.connect(services.libpq_url(database_url), autocommit=True) as conn:
        (dropped,) = conn.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
    return dropped


@pytest.mark.parametrize(
    ("ping_if_idle_s", "first_answer"),
    [
        (0.0, 201),  # checked before use: the dead connection is replaced unseen
        (3600.0, 503),  # not checked (busy connections skip it): one retry, then fine
    ],
)
def test_connections_dropped_while_idle_cost_no_error_once_checked(
    make_app, app_config, ping_if_idle_s, first_answer
):
    client = make_app(DB_PING_IF_IDLE_S=ping_if_idle_s).test_client()
    ann, ben = sign_up(client, "ann"), sign_up(client, "ben")
    chat = open_direct(client, ann, ben)

    assert drop_every_other_connection(app_config["DATABASE_URL"]) > 0

    answer = send(client, ann, chat, "still there?", client_msg_id="m1")
    assert answer.status_code == first_answer, answer.get_json()
    assert send(client, ann, chat, "still there?", client_msg_id="m1").status_code in (200, 201)
    assert [e["message"]["text"] for e in poll(client, ben)["entries"][-1:]] == ["still there?"]
