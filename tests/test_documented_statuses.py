"""Every status openapi.yaml documents for an operation is reached by a deliberate request.

The (operation, status) pairs come from the contract, so a status or route added
there fails here until a request below reaches it; every answer is also checked
against the contract by the test client. Reached elsewhere: 401 on the operations
that take a token (tests/test_tokens.py tries every one of them), 503 (needs a
broken database or Redis: tests/faults/); 500 would need a bug.
"""

from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest
from flask import Flask
from sqlalchemy import delete

from api.accounts.models import User
from api.db import db
from tests.factories import PASSWORD, Person, create_group, log_in, open_direct, send, sign_up
from tests.spec import Operation, documentation, operations
from workers.inbox_pruner import InboxPruner

REACHED_ELSEWHERE = {500, 503}
MISSING_ID = 999_999
OVER_LIMIT_BODY = '{"text": "' + "x" * (2 * 1024 * 1024 + 1) + '"}'  # one byte past 2 MiB


@dataclass
class Scene:
    """Ann, Ben and Cat; Dan, who shares nothing with them; Ann's direct chat with Ben
    and the group she created with Ben and Cat."""

    client: object
    make_app: Callable[..., Flask]
    ann: Person
    ben: Person
    cat: Person
    dan: Person
    direct: int
    group: int

    def call(self, operation: Operation, person: Person | None = None, **kwargs):
        """``operation`` as ``person`` (default Ann) on the group, aimed at Ben (or,
        for a device, at Ann's own)."""
        ids = self.ids() | kwargs.pop("ids", {})
        person = person or self.ann
        headers = {**person.auth, **dict(operation.required_headers), **kwargs.pop("headers", {})}
        return self.client.open(
            operation.url(**ids), method=operation.method, headers=headers, **kwargs
        )

    def ids(self) -> dict[str, int]:
        return {
            "conversation_id": self.group,
            "user_id": self.ben.id,
            "device_id": self.ann.device_id,
        }

    def on_an_app_with(self, **settings) -> "Scene":
        """The same people and chats, served by another app on the same database with
        these settings (a tighter limit, say)."""
        return replace(self, client=self.make_app(**settings).test_client())


@pytest.fixture
def scene(client, make_app) -> Scene:
    ann, ben, cat, dan = (sign_up(client, name) for name in ("ann", "ben", "cat", "dan"))
    direct = open_direct(client, ann, ben)
    group = create_group(client, ann, [ben, cat])
    return Scene(client, make_app, ann, ben, cat, dan, direct, group)


def plain(scene, op):
    return scene.call(op)


# Statuses any operation with a JSON body reaches the same way.


def malformed_json(scene, op):
    return scene.call(op, data='{"unclosed": ', content_type="application/json")


def body_over_two_mib(scene, op):
    return scene.call(op, data=OVER_LIMIT_BODY, content_type="application/json")


def plain_text_body(scene, op):
    return scene.call(op, data="hello", content_type="text/plain")


def unknown_body_field(scene, op):
    return scene.call(op, json={"surprise": True})


BODY_STATUSES = {
    400: malformed_json,
    413: body_over_two_mib,
    415: plain_text_body,
    422: unknown_body_field,
}


def without_method_override(scene, op):
    """A ``…ViaPost`` operation sent as a plain POST, without the header naming the method."""
    url = op.url(**scene.ids())
    return scene.client.post(url, headers=scene.ann.auth)


def deleted_account(scene, op):
    """Dan's account is deleted in the database behind the API (no route deletes one)
    while his token is still cached: the only way a valid token names nobody."""
    scene.client.get("/v1/users/me", headers=scene.dan.auth)  # caches his token
    app = scene.client.application
    with app.app_context():
        db.session.execute(delete(User).where(User.id == scene.dan.id))
        db.session.commit()
    return scene.call(op, scene.dan, json={"display_name": "Dan"} if op.request_schema else None)


def pruned_inbox(scene, op):
    """Ben's inbox entries are pruned (a zero-day retention), then he polls from before them."""
    send(scene.client, scene.ann, scene.direct, "soon pruned")
    pruner_app = scene.make_app(INBOX_RETENTION_DAYS=0)
    with pruner_app.app_context():
        assert InboxPruner(pruner_app).step() >= 1
    return scene.call(op, scene.ben, query_string={"after": 0})


def retried_send(scene, op):
    scene.call(op, json={"text": "hi", "client_msg_id": "k1"})
    return scene.call(op, json={"text": "hi", "client_msg_id": "k1"})


def key_reused_for_another_text(scene, op):
    scene.call(op, json={"text": "hi", "client_msg_id": "k1"})
    return scene.call(op, json={"text": "bye", "client_msg_id": "k1"})


def second_send_over_the_limit(scene, op):
    limited = scene.on_an_app_with(RATE_LIMITS_ENABLED=True, RATE_LIMIT_SEND="1 per minute")
    limited.call(op, json={"text": "first"})
    return limited.call(op, json={"text": "second"})


def second_log_in_over_the_limit(scene, op):
    limited = scene.on_an_app_with(RATE_LIMITS_ENABLED=True, RATE_LIMIT_LOG_IN="1 per minute")
    log_in(limited.client, "ann")
    return limited.call(op, json={"username": "ann", "password": PASSWORD})


def second_sign_up_over_the_limit(scene, op):
    limited = scene.on_an_app_with(
        RATE_LIMITS_ENABLED=True, RATE_LIMIT_SIGN_UP_PER_ADDRESS="1 per hour"
    )
    sign_up(limited.client, "eve")
    return limited.call(op, json={"username": "fay", "password": PASSWORD})


def group_creation_retried_after_leaving_it(scene, op):
    body = {"kind": "group", "title": "once", "member_ids": [scene.ben.id]}
    key = {"Idempotency-Key": "once"}
    created = scene.call(op, json=body, headers=key).get_json()
    scene.client.delete(
        f"/v1/conversations/{created['id']}/members/{scene.ann.id}", headers=scene.ann.auth
    )
    return scene.call(op, json=body, headers=key)


def group_over_the_size_limit(scene, op):
    small = scene.on_an_app_with(GROUP_SIZE_LIMIT=2)
    body = {"kind": "group", "title": "crowd", "member_ids": [scene.ben.id, scene.cat.id]}
    return small.call(op, json=body)


RECIPES: dict[str, dict[int, Callable]] = {
    "signUp": {
        201: lambda s, op: s.call(op, json={"username": "eve", "password": PASSWORD}),
        409: lambda s, op: s.call(op, json={"username": "ANN", "password": PASSWORD}),
        429: second_sign_up_over_the_limit,
    },
    "findUsers": {
        200: lambda s, op: s.call(op, query_string={"username": "Ben"}),
        422: plain,
    },
    "getMe": {200: plain, 404: deleted_account},
    "updateMe": {
        200: lambda s, op: s.call(op, json={"show_presence": False}),
        404: deleted_account,
    },
    "getPresence": {
        200: lambda s, op: s.call(op, query_string={"user_ids": f"{s.ben.id},{s.cat.id}"}),
        422: lambda s, op: s.call(op, query_string={"user_ids": "ben"}),
    },
    "getUser": {
        200: plain,
        404: lambda s, op: s.call(op, ids={"user_id": MISSING_ID}),
    },
    "logIn": {
        201: lambda s, op: s.call(op, json={"username": "ann", "password": PASSWORD}),
        401: lambda s, op: s.call(op, json={"username": "ann", "password": "not it at all"}),
        429: second_log_in_over_the_limit,
    },
    "logOut": {204: plain},
    "listDevices": {200: plain},
    "logOutDevice": {
        204: plain,
        404: lambda s, op: s.call(op, ids={"device_id": s.ben.device_id}),
    },
    "openConversation": {
        200: lambda s, op: s.call(op, s.ben, json={"kind": "direct", "member_ids": [s.ann.id]}),
        201: lambda s, op: s.call(op, json={"kind": "direct", "member_ids": [s.cat.id]}),
        404: group_creation_retried_after_leaving_it,
        409: group_over_the_size_limit,
        422: lambda s, op: s.call(op, json={"kind": "direct", "member_ids": [MISSING_ID]}),
    },
    "listConversations": {200: plain},
    "getConversation": {
        200: plain,
        404: lambda s, op: s.call(op, s.dan),
    },
    "addMembers": {
        200: lambda s, op: s.call(op, json={"member_ids": [s.dan.id]}),
        404: lambda s, op: s.call(op, s.dan, json={"member_ids": [s.dan.id]}),
        409: lambda s, op: s.call(
            op, ids={"conversation_id": s.direct}, json={"member_ids": [s.cat.id]}
        ),
        422: lambda s, op: s.call(op, json={"member_ids": [MISSING_ID]}),
    },
    "removeMember": {
        204: plain,
        403: lambda s, op: s.call(op, s.ben, ids={"user_id": s.cat.id}),
        404: lambda s, op: s.call(op, ids={"user_id": s.dan.id}),
        409: lambda s, op: s.call(op, ids={"conversation_id": s.direct}),
    },
    "sendMessage": {
        200: retried_send,
        201: lambda s, op: s.call(op, json={"text": "hi"}),
        404: lambda s, op: s.call(op, s.dan, json={"text": "let me in"}),
        409: key_reused_for_another_text,
        422: lambda s, op: s.call(op, json={"text": ""}),
        429: second_send_over_the_limit,
    },
    "listMessages": {
        200: lambda s, op: s.call(op, query_string={"limit": 10}),
        404: lambda s, op: s.call(op, s.dan),
        422: lambda s, op: s.call(op, query_string={"limit": 0}),
    },
    "pollInbox": {
        200: lambda s, op: s.call(op, s.ben),
        410: pruned_inbox,
        422: lambda s, op: s.call(op, query_string={"timeout": -1}),
    },
    "ackInbox": {
        200: lambda s, op: s.call(op, s.ben, json={"seq": 0}),
        422: lambda s, op: s.call(op, s.ben, json={"seq": 1.0}),
    },
    "healthz": {200: plain},
    "readyz": {200: plain},
    "metrics": {200: plain},
    "openapi": {200: plain},
}


def acts_as(op: Operation) -> str:
    """The operation whose requests this one stands for: a ``…ViaPost`` operation (POST
    with ``X-HTTP-Method-Override``) answers as the method it names on the same path."""
    override = dict(op.required_headers).get("X-HTTP-Method-Override")
    if override is None:
        return op.operation_id
    twin = next(o for o in operations() if o.path == op.path and o.method == override)
    return twin.operation_id


def recipe(op: Operation, status: int) -> Callable | None:
    found = RECIPES.get(acts_as(op), {}).get(status)
    if found is None and op.request_schema:
        found = BODY_STATUSES.get(status)
    if found is None and status == 405 and op.required_headers:
        found = without_method_override
    return found


def statuses_to_reach() -> list:
    return [
        pytest.param(op, status, id=f"{op}-{status}")
        for op in operations()
        for status in op.statuses
        if status not in REACHED_ELSEWHERE and not (status == 401 and op.needs_token)
    ]


@pytest.mark.parametrize(("op", "status"), statuses_to_reach())
def test_every_documented_status_is_reachable(scene, op, status):
    request = recipe(op, status)
    assert request, f"openapi.yaml documents {status} for {op}: add a request that reaches it"
    response = request(scene, op)
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    if status == 405:  # the answer names the method the POST should have asked for
        assert dict(op.required_headers)["X-HTTP-Method-Override"] in response.headers["Allow"]


# The requests naming a user who does not exist, and the field that named them.
NAMING_NOBODY = {
    "getPresence": (
        "user_ids",
        lambda s, op: s.call(op, query_string={"user_ids": f"{s.ben.id},{MISSING_ID}"}),
    ),
    "openConversation": ("member_ids", RECIPES["openConversation"][422]),
    "addMembers": ("member_ids", RECIPES["addMembers"][422]),
}


@pytest.mark.parametrize(
    "op", [op for op in operations() if op.operation_id in NAMING_NOBODY], ids=str
)
def test_unknown_users_are_listed_under_the_field_sent_as_documented(scene, op):
    field, request = NAMING_NOBODY[op.operation_id]
    error = request(scene, op).get_json()["error"]
    assert (error["code"], error["details"]) == ("unknown_users", {field: [MISSING_ID]})
    assert f"`details.{field}`" in documentation(op, 422)


OUT_OF_RANGE_IDS = [0, 2**63]  # ids are 1 to 2^63-1


@pytest.mark.parametrize("bad_id", OUT_OF_RANGE_IDS)
@pytest.mark.parametrize("op", [op for op in operations() if op.path_parameters], ids=str)
def test_an_id_outside_the_int64_range_is_404_on_every_route_with_ids(scene, op, bad_id):
    """The contract: "an id outside that range in a path is a 404", whichever id it is."""
    for name in op.path_parameters:
        response = scene.call(op, ids={name: bad_id}, json={})
        assert response.status_code == 404, (name, response.get_data(as_text=True))
