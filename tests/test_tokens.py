"""Tokens on every route the contract protects; the routes come from openapi.yaml.

Without a valid token (none, a malformed header, a logged-out one) every protected
operation answers 401 with the error shape and ``WWW-Authenticate: Bearer``. With
another user's valid token, every operation that names a conversation answers 404
and shows nothing of it. tests/test_access.py keeps the hand-written cases.
"""

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from tests.factories import (
    Person,
    create_group,
    log_in,
    open_direct,
    scaled_only,
    send,
    sign_up,
    wait_until_waiting,
)
from tests.spec import Operation, authenticated_operations

PROTECTED = authenticated_operations()
NAMING_A_CONVERSATION = [op for op in PROTECTED if "conversation_id" in op.path_parameters]
SECRET_TITLE = "Surprise party for Eve"
SECRET_TEXT = "The door code is 4711"


@dataclass
class Chats:
    """Annika and Benedikt, their direct chat and their group (each with a secret in it),
    and Eve, who belongs to neither."""

    annika: Person
    benedikt: Person
    eve: Person
    direct: int
    group: int


@pytest.fixture
def chats(client) -> Chats:
    annika, benedikt, eve = (sign_up(client, name) for name in ("annika", "benedikt", "eve"))
    direct = open_direct(client, annika, benedikt)
    group = create_group(client, annika, [benedikt], title=SECRET_TITLE)
    for conversation in (direct, group):
        send(client, annika, conversation, SECRET_TEXT)
    return Chats(annika, benedikt, eve, direct, group)


def valid_body(op: Operation, chats: Chats) -> dict | None:
    """A body the operation would accept, so that only the token can be wrong."""
    bodies = {
        None: None,
        "MeUpdateRequest": {"display_name": "Eve"},
        "NewConversationRequest": {"kind": "direct", "member_ids": [chats.benedikt.id]},
        "NewMembersRequest": {"member_ids": [chats.eve.id]},
        "SendMessageRequest": {"text": "let me in"},
        "AckRequest": {"seq": 0},
    }
    assert op.request_schema in bodies, f"add a valid {op.request_schema} for {op}"
    return bodies[op.request_schema]


def request(client, op: Operation, chats: Chats, conversation: int, authorization: str | None):
    headers = dict(op.required_headers)
    if authorization is not None:
        headers["Authorization"] = authorization
    url = op.url(
        conversation_id=conversation, user_id=chats.benedikt.id, device_id=chats.annika.device_id
    )
    return client.open(url, method=op.method, headers=headers, json=valid_body(op, chats))


def logged_out_token(client, person: Person) -> str:
    """A token of ``person`` that was used (so it is cached), then logged out."""
    device = log_in(client, person.username, device_name="old phone")
    assert client.get("/v1/users/me", headers=device.auth).status_code == 200
    assert client.delete("/v1/sessions/current", headers=device.auth).status_code == 204
    return device.token


def bad_authorizations(client, person: Person) -> dict[str, str | None]:
    """Every way to ask without a valid token, each with a valid token of ``person`` near."""
    token = person.token
    return {
        "no header": None,
        "the token without its scheme": token,
        "the token under another scheme": f"Token {token}",
        "the scheme without a token": "Bearer",
        "the token with something after it": f"Bearer {token} x",
        "a logged-out token": f"Bearer {logged_out_token(client, person)}",
    }


@pytest.mark.parametrize("op", PROTECTED, ids=str)
def test_without_a_valid_token_every_protected_operation_is_401(client, chats, op):
    for how, authorization in bad_authorizations(client, chats.annika).items():
        response = request(client, op, chats, chats.group, authorization)
        assert response.status_code == 401, (how, response.get_data(as_text=True)[:300])
        assert response.get_json()["error"]["code"] == "unauthorized", how
        assert response.headers["WWW-Authenticate"] == "Bearer", how


def what_annika_sees(client, chats: Chats, conversation: int) -> tuple:
    detail = client.get(f"/v1/conversations/{conversation}", headers=chats.annika.auth)
    history = client.get(f"/v1/conversations/{conversation}/messages", headers=chats.annika.auth)
    body = detail.get_json()
    return [m["id"] for m in body["members"]], body["last_seq"], history.get_json()["messages"]


@pytest.mark.parametrize("op", NAMING_A_CONVERSATION, ids=str)
@pytest.mark.parametrize("kind", ["direct", "group"])
def test_another_users_conversation_is_404_and_shows_nothing(client, chats, op, kind):
    conversation = getattr(chats, kind)
    before = what_annika_sees(client, chats, conversation)

    response = request(client, op, chats, conversation, f"Bearer {chats.eve.token}")

    assert response.status_code == 404, response.get_data(as_text=True)[:300]
    assert response.get_json()["error"]["code"] == "conversation_not_found"
    shown = response.get_data(as_text=True)
    for secret in (SECRET_TITLE, SECRET_TEXT, "annika", "benedikt"):
        assert secret not in shown
    assert what_annika_sees(client, chats, conversation) == before


@scaled_only
def test_a_token_logged_out_elsewhere_is_401_on_a_poll_with_a_bad_query(make_app, client):
    """A process that verified a token before confirms it in the poll's own Redis
    round trip, after reading the query; a query it refuses must still answer 401
    for a token that was logged out through another process, not 422."""
    ann = sign_up(client, "ann")
    assert client.get("/v1/inbox", headers=ann.auth).status_code == 200  # remembered here

    elsewhere = make_app().test_client()
    assert elsewhere.delete("/v1/sessions/current", headers=ann.auth).status_code == 204

    answer = client.get("/v1/inbox?timeout=soon", headers=ann.auth)
    assert answer.status_code == 401, answer.get_json()
    assert answer.get_json()["error"]["code"] == "unauthorized"


@scaled_only
@pytest.mark.parametrize(
    "attempt",
    [
        {"text": "after the logout"},
        {"text": "before the logout", "client_msg_id": "first"},  # a replay of the first
        {"text": ""},  # a body the send refuses
    ],
    ids=["new", "replay", "bad body"],
)
def test_a_token_logged_out_elsewhere_cannot_send(make_app, client, attempt):
    """A process that verified a token before lets the send's own statement check
    it (no round trip of its own); logged out through another process, the token
    answers 401 and nothing is stored, whatever the send asked."""
    ann, ben = sign_up(client, "ann"), sign_up(client, "ben")
    chat = open_direct(client, ann, ben)
    first = send(client, ann, chat, "before the logout", client_msg_id="first")
    assert first.status_code == 201  # and the token is remembered here

    elsewhere = make_app().test_client()
    assert elsewhere.delete("/v1/sessions/current", headers=ann.auth).status_code == 204

    answer = send(client, ann, chat, **attempt)
    assert answer.status_code == 401, answer.get_json()
    assert answer.get_json()["error"]["code"] == "unauthorized"
    history = client.get(f"/v1/conversations/{chat}/messages", headers=ben.auth).get_json()
    assert [m["text"] for m in history["messages"]] == ["before the logout"]


def held_poll(app, person: Person) -> Future:
    """A long poll of ``person``'s, held in the background: the future of its answer."""
    pool = ThreadPoolExecutor(1)
    future = pool.submit(
        app.test_client().get, "/v1/inbox", query_string={"timeout": 20}, headers=person.auth
    )
    pool.shutdown(wait=False)
    return future


@pytest.mark.parametrize(
    ("backend", "where"), [("sqlite", "here"), ("postgres", "here"), ("postgres", "elsewhere")]
)
def test_a_log_out_ends_the_devices_held_poll_with_401(make_app, where):
    """Logged out through the poll's process or another (the scaled mode's), the
    poll ends: it answers 401, and never delivers what was sent after the log-out."""
    app = make_app()
    client = app.test_client()
    ann, ben = sign_up(client, "ann"), sign_up(client, "ben")
    chat = open_direct(client, ann, ben)
    polling = held_poll(app, ben)
    wait_until_waiting(app)

    logging_out = client if where == "here" else make_app().test_client()
    assert logging_out.delete("/v1/sessions/current", headers=ben.auth).status_code == 204
    assert send(client, ann, chat, "after the logout").status_code == 201

    answer = polling.result(timeout=30)
    assert answer.status_code == 401, answer.get_json()
    assert answer.get_json()["error"]["code"] == "unauthorized"
