"""Talking to a running instance over HTTP, the way a real client does.

Every answer is checked against openapi.yaml, so the multi-process tests also
hold the servers to the contract.
"""

import time
import uuid

import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.contract import check_requests_response
from tests.factories import PASSWORD, Person

REQUEST_TIMEOUT_S = 10  # a plain request; a long poll adds its own timeout to this
WAITING_GAUGE = "parley_long_polls_waiting"
WAITING_WAIT_S = 10
WAITING_PROBE_S = 0.05


class ApiClient(requests.Session):
    """A session bound to one instance's base URL; paths are relative to it."""

    def __init__(self, base_url: str) -> None:
        super().__init__()
        self.base_url = base_url

    def request(self, method, url, *args, **kwargs):
        kwargs.setdefault("timeout", REQUEST_TIMEOUT_S)
        response = super().request(method, self.base_url + url, *args, **kwargs)
        check_requests_response(response)
        return response


def unique_username(name: str) -> str:
    """Tests share one database for the module's servers, so every name is new."""
    return f"{name}-{uuid.uuid4().hex[:10]}"


def sign_up(client: ApiClient, name: str) -> Person:
    username = unique_username(name)
    created = client.post("/v1/users", json={"username": username, "password": PASSWORD})
    assert created.status_code == 201, created.text
    return log_in(client, username)


def log_in(client: ApiClient, username: str, device_name: str = "phone") -> Person:
    response = client.post(
        "/v1/sessions",
        json={"username": username, "password": PASSWORD, "device_name": device_name},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return Person(body["user"]["id"], body["user"]["username"], body["token"], body["device_id"])


def open_direct(client: ApiClient, person: Person, other: Person) -> int:
    response = client.post(
        "/v1/conversations", json={"kind": "direct", "member_ids": [other.id]}, headers=person.auth
    )
    assert response.status_code in (200, 201), response.text
    return response.json()["id"]


def create_group(client: ApiClient, owner: Person, others: list[Person], title: str) -> int:
    response = client.post(
        "/v1/conversations",
        json={"kind": "group", "title": title, "member_ids": [m.id for m in others]},
        headers=owner.auth,
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


def send(client: ApiClient, sender: Person, conversation_id: int, text: str, **extra):
    return client.post(
        f"/v1/conversations/{conversation_id}/messages",
        json={"text": text, **extra},
        headers=sender.auth,
    )


def history(client: ApiClient, reader: Person, conversation_id: int, **params) -> dict:
    response = client.get(
        f"/v1/conversations/{conversation_id}/messages", params=params, headers=reader.auth
    )
    assert response.status_code == 200, response.text
    return response.json()


def poll(client: ApiClient, person: Person, **params) -> dict:
    """One inbox poll (``timeout`` > 0 makes it a long poll); asserts it answered 200."""
    response = client.get(
        "/v1/inbox",
        params=params,
        headers=person.auth,
        timeout=REQUEST_TIMEOUT_S + params.get("timeout", 0),
    )
    assert response.status_code == 200, response.text
    return response.json()


def timed_poll(base_url: str, person: Person, **params) -> tuple[dict, float]:
    """A poll on its own connection (for a background thread): the answer and seconds taken."""
    with ApiClient(base_url) as client:
        started = time.monotonic()
        batch = poll(client, person, **params)
        return batch, time.monotonic() - started


def message_texts(batch: dict) -> list[str]:
    return [e["message"]["text"] for e in batch["entries"] if e["type"] == "message"]


def waiting_polls(client: ApiClient) -> float:
    """Long polls held right now by the instance (its metrics sum every worker)."""
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    for family in text_string_to_metric_families(response.text):
        if family.name == WAITING_GAUGE:
            return sum(sample.value for sample in family.samples)
    return 0.0


def wait_for_waiting_polls(base_url: str, count: int) -> None:
    """Return once the instance holds ``count`` long polls, so a test acts on a waiting poll."""
    deadline = time.monotonic() + WAITING_WAIT_S
    with ApiClient(base_url) as client:
        while waiting_polls(client) < count:
            assert time.monotonic() < deadline, f"{base_url} never held {count} long polls"
            time.sleep(WAITING_PROBE_S)
