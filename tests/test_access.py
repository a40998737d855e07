"""Nobody reaches what is not theirs: 401 without a valid token, 404 for others' conversations."""

import pytest

from tests.factories import create_group, message_texts, open_direct, poll, send, sign_up

AUTHENTICATED_ROUTES = [
    ("DELETE", "/v1/sessions/current"),
    ("GET", "/v1/users/me"),
    ("GET", "/v1/users/1"),
    ("GET", "/v1/users?username=ann"),
    ("GET", "/v1/conversations"),
    ("POST", "/v1/conversations"),
    ("GET", "/v1/conversations/1"),
    ("POST", "/v1/conversations/1/members"),
    ("DELETE", "/v1/conversations/1/members/1"),
    ("GET", "/v1/conversations/1/messages"),
    ("POST", "/v1/conversations/1/messages"),
    ("GET", "/v1/inbox"),
    ("POST", "/v1/inbox/ack"),
]


@pytest.mark.parametrize(("method", "path"), AUTHENTICATED_ROUTES)
@pytest.mark.parametrize("authorization", [None, "Bearer not-a-token", "Basic YTpi", "Bearer "])
def test_every_route_needs_a_valid_token(client, method, path, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    response = client.open(path, method=method, headers=headers, json={})
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthorized"
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_outsiders_cannot_touch_a_conversation(client):
    ann, ben, eve = (sign_up(client, n) for n in ("ann", "ben", "eve"))
    direct = open_direct(client, ann, ben)
    group = create_group(client, ann, [ben])
    send(client, ann, direct, "private")
    for cid in (direct, group):
        attempts = [
            client.get(f"/v1/conversations/{cid}", headers=eve.auth),
            client.get(f"/v1/conversations/{cid}/messages", headers=eve.auth),
            send(client, eve, cid, "let me in"),
            client.post(
                f"/v1/conversations/{cid}/members", json={"member_ids": [eve.id]}, headers=eve.auth
            ),
            client.delete(f"/v1/conversations/{cid}/members/{ben.id}", headers=eve.auth),
        ]
        for response in attempts:
            assert response.status_code == 404
            assert "private" not in response.get_data(as_text=True)
    assert client.get("/v1/conversations", headers=eve.auth).get_json()["conversations"] == []
    assert poll(client, eve)["entries"] == []
    assert message_texts(poll(client, ben)) == ["private"]
    # A refused send leaves nothing behind, not even a number taken in the conversation.
    assert send(client, ann, direct, "next").get_json()["seq"] == 2


def test_a_send_into_a_conversation_that_does_not_exist_is_a_404(client):
    ann = sign_up(client, "ann")
    response = send(client, ann, 987654, "anyone?")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "conversation_not_found"
    assert poll(client, ann)["entries"] == []


def test_a_removed_member_loses_access(client):
    ann, ben = sign_up(client, "ann"), sign_up(client, "ben")
    cid = create_group(client, ann, [ben])
    client.delete(f"/v1/conversations/{cid}/members/{ben.id}", headers=ann.auth)
    assert send(client, ben, cid, "still here?").status_code == 404
    assert client.get(f"/v1/conversations/{cid}/messages", headers=ben.auth).status_code == 404
