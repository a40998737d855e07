"""Bad input gets a clear JSON error with the right status, and writes nothing."""

import io
import json

import pytest

from api.presence.schemas import presence_query_schema
from api.validation import load_query
from tests.factories import create_group, message_texts, open_direct, poll, send, sign_up
from tests.spec import operations


def assert_error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    error = response.get_json()["error"]
    assert error["message"]
    if code:
        assert error["code"] == code
    return error


def assert_nothing_written(client, ann, ben, cid) -> None:
    history = client.get(f"/v1/conversations/{cid}/messages", headers=ann.auth).get_json()
    assert history["messages"] == []
    assert poll(client, ben)["entries"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"text": ""}, "text"),
        ({"text": "x" * 100_001}, "text"),
        ({"text": "😀" * 100_001}, "text"),
        ({"text": "nul \x00 inside"}, "text"),
        ({"text": "lone \ud800 surrogate"}, "text"),
        ({"text": 42}, "text"),
        ({"text": None}, "text"),
        ({"text": ["a"]}, "text"),
        ({}, "text"),
        ({"text": "hi", "extra": 1}, "extra"),
        ({"text": "hi", "client_msg_id": ""}, "client_msg_id"),
        ({"text": "hi", "client_msg_id": "k" * 65}, "client_msg_id"),
        ({"text": "hi", "client_msg_id": 7}, "client_msg_id"),
    ],
)
def test_bad_messages_are_refused(client, pair, body, field):
    ann, ben, cid = pair
    response = client.post(
        f"/v1/conversations/{cid}/messages",
        data=json.dumps(body),  # ASCII-escaped, so a lone surrogate travels as \ud800
        headers={**ann.auth, "Content-Type": "application/json"},
    )
    error = assert_error(response, 422, "invalid_input")
    assert field in error["details"]
    assert_nothing_written(client, ann, ben, cid)


def test_the_body_must_be_a_json_object(client, pair):
    ann, ben, cid = pair
    url = f"/v1/conversations/{cid}/messages"
    assert_error(
        client.post(
            url, data='{"text": "hi"', headers={**ann.auth, "Content-Type": "application/json"}
        ),
        400,
        "malformed_json",
    )
    assert_error(
        client.post(url, data="text=hi", headers={**ann.auth, "Content-Type": "text/plain"}), 415
    )
    assert_error(client.post(url, data="text=hi", headers=ann.auth), 415)
    for body in ('["hi"]', '"hi"', "null"):
        response = client.post(
            url, data=body, headers={**ann.auth, "Content-Type": "application/json"}
        )
        assert "_schema" in assert_error(response, 422, "invalid_input")["details"]
    assert_nothing_written(client, ann, ben, cid)


JSON_BODY_OPERATIONS = [operation for operation in operations() if operation.request_schema]


def send_body(client, pair, operation, body: str):
    """``body`` sent as JSON by Ann to ``operation``, aimed at a group of hers with Ben."""
    ann, ben, _ = pair
    group = create_group(client, ann, [ben])
    return client.open(
        operation.url(conversation_id=group, user_id=ben.id),
        method=operation.method,
        data=body,
        headers={**ann.auth, "Content-Type": "application/json"},
    )


@pytest.mark.parametrize("operation", JSON_BODY_OPERATIONS, ids=str)
@pytest.mark.parametrize(
    "body", ["[" * 5000, "[" * 5000 + "]" * 5000, '{"a":' * 5000], ids=["open", "closed", "objects"]
)
def test_a_body_nested_too_deeply_is_malformed(client, pair, operation, body):
    """Nesting past the interpreter's recursion limit is refused like any body
    that cannot be read, not answered with a 500."""
    assert_error(send_body(client, pair, operation, body), 400, "malformed_json")


@pytest.mark.parametrize("operation", JSON_BODY_OPERATIONS, ids=str)
@pytest.mark.parametrize("body", ["null", "[]"])
def test_json_that_is_not_an_object_is_refused_as_a_whole(client, pair, operation, body):
    error = assert_error(send_body(client, pair, operation, body), 422, "invalid_input")
    assert error["details"] == {"_schema": ["Invalid input type."]}


@pytest.mark.parametrize("operation", JSON_BODY_OPERATIONS, ids=str)
@pytest.mark.parametrize("sign", ["", "-"])
def test_an_integer_too_long_for_python_is_refused_as_a_whole(client, pair, operation, sign):
    """Valid JSON, but past the digits Python converts (4,300): no field takes it."""
    body = '{"member_ids": [' + sign + "9" * 5000 + "]}"
    error = assert_error(send_body(client, pair, operation, body), 422, "invalid_input")
    assert error["details"] == {"_schema": ["A number has more than 4300 digits."]}


def test_huge_bodies_are_refused_before_they_are_read(client, pair):
    ann, ben, cid = pair
    huge = '{"text": "' + "x" * (3 * 1024 * 1024) + '"}'
    response = client.post(
        f"/v1/conversations/{cid}/messages",
        data=huge,
        headers={**ann.auth, "Content-Type": "application/json"},
    )
    assert_error(response, 413)
    assert_nothing_written(client, ann, ben, cid)


@pytest.mark.parametrize("padding", [0, 1])
def test_a_body_without_its_length_is_refused_past_the_limit_not_cut(make_app, padding):
    """Chunked, a body has no Content-Length: one at the limit is read whole, one
    past it is refused (413), not read cut short at the limit."""
    app = make_app(MAX_CONTENT_LENGTH=4096)
    client = app.test_client()
    ann, ben = sign_up(client, "ann"), sign_up(client, "ben")
    cid = open_direct(client, ann, ben)
    at_the_limit = '{"text": "hi"}'.ljust(4096 + padding).encode()
    response = client.post(
        f"/v1/conversations/{cid}/messages",
        input_stream=io.BytesIO(at_the_limit),
        headers={**ann.auth, "Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},  # as gevent's server sets it
    )
    if padding:
        assert_error(response, 413)
        assert_nothing_written(client, ann, ben, cid)
    else:
        assert response.status_code == 201, response.get_json()


@pytest.mark.parametrize(
    "path",
    [
        "/v1/conversations/abc",
        "/v1/conversations/0",
        "/v1/conversations/-1",
        "/v1/conversations/99999999999999999999999",
        "/v1/users/1.5",
        "/v1/no-such-thing",
    ],
)
def test_bad_ids_and_unknown_routes_are_404(client, pair, path):
    ann, _, _ = pair
    assert_error(client.get(path, headers=ann.auth), 404)


def test_a_wrong_method_is_405_with_allow(client, pair):
    ann, _, _ = pair
    response = client.put("/v1/users/me", headers=ann.auth)
    assert_error(response, 405)
    assert "GET" in response.headers["Allow"]


@pytest.mark.parametrize(
    "query",
    [
        {"timeout": -1},
        {"timeout": "soon"},
        {"timeout": 3601},
        {"timeout": "nan"},
        {"limit": 0},
        {"limit": 501},
        {"limit": "many"},
        {"after": -1},
        {"after": "x"},
        {"after": 2**63},
    ],
)
def test_poll_parameters_out_of_range_are_refused(client, pair, query):
    ann, ben, cid = pair
    send(client, ann, cid, "kept")
    assert_error(
        client.get("/v1/inbox", query_string=query, headers=ben.auth), 422, "invalid_input"
    )
    assert message_texts(poll(client, ben)) == ["kept"]


def test_a_query_string_is_checked_against_each_apps_own_limits(make_app):
    """Validated query strings are remembered per app: a limit one app allows is
    refused by another whose limit is lower, however often the first saw it."""
    roomy, strict = make_app(INBOX_LIMIT_MAX=500), make_app(INBOX_LIMIT_MAX=50)
    ann = sign_up(roomy.test_client(), "ann")
    for _ in range(2):
        assert poll(roomy.test_client(), ann, limit=100)["entries"] == []
        response = strict.test_client().get("/v1/inbox?limit=100", headers=ann.auth)
        assert_error(response, 422, "invalid_input")


def test_a_refused_query_string_is_refused_every_time(client, pair):
    _, ben, _ = pair
    for _ in range(3):
        response = client.get("/v1/inbox?timeout=soon", headers=ben.auth)
        assert_error(response, 422, "invalid_input")


def test_a_query_with_a_list_is_never_shared(app):
    """Values that are not plain (a list of ids) are validated for each request."""
    loads = []
    for _ in range(2):
        with app.test_request_context("/v1/presence?user_ids=1,2"):
            loads.append(load_query(presence_query_schema))
    loads[0]["user_ids"].append(3)
    assert loads[1]["user_ids"] == [1, 2]


@pytest.mark.parametrize("query", [{"limit": 0}, {"limit": 201}, {"before": 0}, {"after": "x"}])
def test_history_parameters_out_of_range_are_refused(client, pair, query):
    ann, _, cid = pair
    response = client.get(f"/v1/conversations/{cid}/messages", query_string=query, headers=ann.auth)
    assert_error(response, 422, "invalid_input")


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "chat", "member_ids": [2]},
        {"kind": "group", "member_ids": [2]},
        {"kind": "group", "title": "", "member_ids": [2]},
        {"kind": "group", "title": "t", "member_ids": ["2"]},
        {"kind": "group", "title": "t", "member_ids": [2.5]},
        {"kind": "group", "title": "t", "member_ids": [True]},
        {"kind": "group", "title": "t", "member_ids": [2**63]},
        {"kind": "group", "title": "t", "member_ids": 2},
        {"kind": "direct", "member_ids": [2, 3]},
        {"kind": "direct", "title": "no", "member_ids": [2]},
    ],
)
def test_bad_conversations_are_refused(client, pair, body):
    ann, _, _ = pair
    response = client.post("/v1/conversations", json=body, headers=ann.auth)
    assert_error(response, 422)
    listed = client.get("/v1/conversations", headers=ann.auth).get_json()["conversations"]
    assert len(listed) == 1


@pytest.mark.parametrize(
    "body",
    [
        {"username": "ab", "password": "long enough"},
        {"username": "has space", "password": "long enough"},
        {"username": "x" * 33, "password": "long enough"},
        {"username": "okname\n", "password": "long enough"},
        {"username": "okname", "password": "short"},
        {"username": "okname", "password": "long enough", "display_name": "nul\x00"},
        {"username": "okname", "password": "long enough", "admin": True},
        {"username": 5, "password": "long enough"},
    ],
)
def test_bad_sign_ups_are_refused(client, body):
    assert_error(client.post("/v1/users", json=body), 422, "invalid_input")
    assert (
        client.post(
            "/v1/sessions", json={"username": "okname", "password": "long enough"}
        ).status_code
        == 401
    )


def test_emoji_count_as_one_character_each(client, pair):
    ann, _, cid = pair
    assert send(client, ann, cid, "👍" * 100_000).status_code == 201


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/users", '{"username": "okname", "password": "lone \\ud800 surrogate"}'),
        ("/v1/sessions", '{"username": "okname", "password": "lone \\ud800 surrogate"}'),
        ("/v1/sessions", '{"username": "ok\\ud800", "password": "long enough"}'),
        ("/v1/sessions", '{"username": "ok\\u0000", "password": "long enough"}'),
    ],
)
def test_text_the_database_cannot_store_is_refused_everywhere(client, path, body):
    response = client.post(path, data=body, headers={"Content-Type": "application/json"})
    assert_error(response, 422, "invalid_input")


def test_a_username_lookup_with_nul_is_refused(client, pair):
    ann, _, _ = pair
    response = client.get("/v1/users", query_string={"username": "a\x00b"}, headers=ann.auth)
    assert_error(response, 422, "invalid_input")


def test_a_bad_idempotency_key_header_is_named(client, pair):
    ann, ben, cid = pair
    response = client.post(
        f"/v1/conversations/{cid}/messages",
        json={"text": "hi"},
        headers={**ann.auth, "Idempotency-Key": "k" * 65},
    )
    assert "Idempotency-Key" in assert_error(response, 422)["details"]
    assert_nothing_written(client, ann, ben, cid)


def test_an_idempotency_key_header_that_is_not_utf8_is_named(client, pair):
    ann, ben, cid = pair
    response = client.post(
        f"/v1/conversations/{cid}/messages",
        json={"text": "hi"},
        headers={**ann.auth, "Idempotency-Key": b"key-\xff".decode("latin-1")},  # as WSGI has it
    )
    assert "Idempotency-Key" in assert_error(response, 422, "invalid_input")["details"]
    assert_nothing_written(client, ann, ben, cid)


def test_an_unknown_field_named_by_a_lone_surrogate_is_named_back(client, pair):
    """The error names the field it refuses; UTF-8 cannot carry the name, so it
    comes back escaped, in valid JSON."""
    ann, ben, cid = pair
    response = client.post(
        f"/v1/conversations/{cid}/messages",
        data='{"text": "hi", "odd \\ud800": 1}',
        headers={**ann.auth, "Content-Type": "application/json"},
    )
    assert "odd \ud800" in assert_error(response, 422, "invalid_input")["details"]
    assert b"odd \\ud800" in response.data
    assert_nothing_written(client, ann, ben, cid)
