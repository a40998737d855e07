"""Talking to a running instance over HTTP, the way a real client does.

Every answer is checked against openapi.yaml, so the multi-process tests also
hold the servers to the contract.
"""

import json
import time
import uuid

import requests

from tests import factories
from tests.contract import check_requests_response
from tests.factories import Person, poll

REQUEST_TIMEOUT_S = 10  # a plain request; a long poll adds its own timeout to this
WAITING_GAUGE = "parley_long_polls_waiting"
WAITING_WAIT_S = 10
WAITING_PROBE_S = 0.05


class ApiClient(requests.Session):
    """A session bound to one instance's base URL; paths are relative to it.

    It speaks the Flask test client's dialect (``query_string=``, ``get_json()``,
    ``get_data()``), so the helpers of ``tests.factories`` drive real servers too.
    """

    def __init__(self, base_url: str) -> None:
        super().__init__()
        self.base_url = base_url

    def request(self, method, url, *args, query_string=None, **kwargs):
        if query_string is not None:
            kwargs["params"] = query_string
        held_for = float((kwargs.get("params") or {}).get("timeout", 0))  # a long poll's wait
        kwargs.setdefault("timeout", REQUEST_TIMEOUT_S + held_for)
        response = super().request(method, self.base_url + url, *args, **kwargs)
        check_requests_response(response)
        # Not a bound method of the response: that would make a reference cycle,
        # keeping the response (and its socket) alive until the garbage collector
        # runs, and gunicorn waits for open connections when it stops.
        body = response.content
        response.get_json = lambda: json.loads(body) if body else None
        response.get_data = lambda as_text=False: body.decode() if as_text else body
        return response


def unique_username(name: str) -> str:
    """Tests share one database for the module's servers, so every name is new."""
    return f"{name}-{uuid.uuid4().hex[:10]}"


def sign_up(client: ApiClient, name: str) -> Person:
    return factories.sign_up(client, unique_username(name))


def history(client: ApiClient, reader: Person, conversation_id: int, **params) -> dict:
    response = client.get(
        f"/v1/conversations/{conversation_id}/messages", params=params, headers=reader.auth
    )
    assert response.status_code == 200, response.text
    return response.json()


def timed_poll(base_url: str, person: Person, **params) -> tuple[dict, float]:
    """A poll on its own connection (for a background thread): the answer and seconds taken."""
    with ApiClient(base_url) as client:
        started = time.monotonic()
        batch = poll(client, person, **params)
        return batch, time.monotonic() - started


def waiting_polls(client: ApiClient) -> float:
    """Long polls held right now by the instance (its metrics sum every worker)."""
    return factories.metric(client, WAITING_GAUGE)


def database_queries(client: ApiClient) -> float:
    """Statements the instance has sent to the database so far."""
    return factories.metric(client, "parley_db_query_seconds_count")


def wait_for_waiting_polls(base_url: str, count: int) -> None:
    """Return once the instance holds ``count`` long polls, so a test acts on a waiting poll."""
    deadline = time.monotonic() + WAITING_WAIT_S
    with ApiClient(base_url) as client:
        while waiting_polls(client) < count:
            assert time.monotonic() < deadline, f"{base_url} never held {count} long polls"
            time.sleep(WAITING_PROBE_S)
