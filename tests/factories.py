"""Test data made through the API, the way a client makes it."""

import re
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import pytest
from prometheus_client.parser import text_string_to_metric_families

PASSWORD = "correct horse battery"


@dataclass
class Person:
    id: int
    username: str
    token: str
    device_id: int

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def log_in(client, username: str, device_name: str = "phone") -> Person:
    response = client.post(
        "/v1/sessions",
        json={"username": username, "password": PASSWORD, "device_name": device_name},
    )
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    return Person(body["user"]["id"], body["user"]["username"], body["token"], body["device_id"])


def sign_up(client, username: str) -> Person:
    response = client.post("/v1/users", json={"username": username, "password": PASSWORD})
    assert response.status_code == 201, response.get_json()
    return log_in(client, username)


def open_direct(client, person: Person, other: Person) -> int:
    response = client.post(
        "/v1/conversations", json={"kind": "direct", "member_ids": [other.id]}, headers=person.auth
    )
    assert response.status_code in (200, 201), response.get_json()
    return response.get_json()["id"]


def create_group(client, owner: Person, members: list[Person], title: str = "team") -> int:
    response = client.post(
        "/v1/conversations",
        json={"kind": "group", "title": title, "member_ids": [m.id for m in members]},
        headers=owner.auth,
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def send(client, sender: Person, conversation_id: int, text: str, **extra):
    return client.post(
        f"/v1/conversations/{conversation_id}/messages",
        json={"text": text, **extra},
        headers=sender.auth,
    )


def poll(client, person: Person, **params) -> dict:
    response = client.get("/v1/inbox", query_string=params, headers=person.auth)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def of_type(batch: dict, entry_type: str) -> list[dict]:
    return [e for e in batch["entries"] if e["type"] == entry_type]


def message_texts(batch: dict) -> list[str]:
    return [e["message"]["text"] for e in batch["entries"] if e["type"] == "message"]


# Several apps sharing one database stand for several processes, which only the
# scaled backend supports (the embedded mode refuses more than one process).
scaled_only = pytest.mark.parametrize("backend", ["postgres"])


def waiting_polls(app) -> int:
    """Long polls blocked waiting: registered, re-checked, nothing found."""
    return app.extensions["parley.hub"].hub.waiters.asleep()


def wait_until_waiting(app, count: int = 1) -> None:
    """Block until ``count`` long polls are held (bounded: a few seconds at most)."""
    for _ in range(500):
        if waiting_polls(app) >= count:
            return
        time.sleep(0.01)
    raise AssertionError("the long poll never started waiting")


def long_poll_in_background(app, person, **params):
    """Start a long poll on its own client; returns the future of (body, seconds taken)."""
    client = app.test_client()

    def run():
        started = time.monotonic()
        body = poll(client, person, **params)
        return body, time.monotonic() - started

    pool = ThreadPoolExecutor(1)
    future = pool.submit(run)
    pool.shutdown(wait=False)
    return future


def metric(client, name: str, **labels) -> float:
    """A sample's value from /metrics (0 if absent). Metrics are per process, so tests
    compare before and after rather than expect absolute counts."""
    response = client.get("/metrics")
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    text = response.get_data(as_text=True)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


@contextmanager
def database_queries(app) -> Iterator[list[str]]:
    """The statements sent to the database while the block runs."""
    from sqlalchemy import event

    from api.db import db

    queries: list[str] = []
    engine = db.engine(app)
    listener = lambda *args: queries.append(args[2])  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        yield queries
    finally:
        event.remove(engine, "before_cursor_execute", listener)


@contextmanager
def postgres_protocol(app) -> Iterator[list[tuple[str, str, str]]]:
    """The protocol messages between the app and PostgreSQL while the block runs,
    as (``F`` from the app or ``B`` from the server, message type, its text), from
    libpq's trace of every connection the block checks out."""
    from psycopg import pq
    from sqlalchemy import event

    from api.db import db

    engine = db.engine(app)
    messages: list[tuple[str, str, str]] = []
    with ExitStack() as files:
        traced = []

        def trace(dbapi_connection, _record, _proxy):
            file = files.enter_context(tempfile.TemporaryFile("w+"))
            dbapi_connection.pgconn.trace(file.fileno())
            dbapi_connection.pgconn.set_trace_flags(
                pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE
            )
            traced.append((dbapi_connection, file))

        event.listen(engine.pool, "checkout", trace)
        try:
            yield messages
        finally:
            event.remove(engine.pool, "checkout", trace)
            for dbapi_connection, file in traced:
                dbapi_connection.pgconn.untrace()
                file.seek(0)
                # A message per line, but statements' own line breaks go through.
                for line in re.split(r"\n(?=[FB]\t)", file.read().strip()):
                    direction, _length, kind, *text = line.split("\t")
                    messages.append((direction, kind, " ".join(text).strip()))


@contextmanager
def redis_round_trips(app, monkeypatch) -> Iterator[list[object]]:
    """One item per round trip to Redis while the block runs: a command or a
    pipeline each takes a connection from the app's pool (the listener keeps its own)."""
    pool = app.extensions["parley.hub"].client.connection_pool
    trips: list[object] = []
    take = pool.get_connection

    def counted(*args, **kwargs):
        connection = take(*args, **kwargs)
        trips.append(connection)
        return connection

    monkeypatch.setattr(pool, "get_connection", counted)
    yield trips
    monkeypatch.undo()
