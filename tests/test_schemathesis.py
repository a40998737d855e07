"""Schemathesis fuzzes every operation in openapi.yaml against the in-process app.

Each operation gets a fresh embedded service (a SQLite file, the in-process hub)
holding Ann, Ben, Cat and Dan, Ann's direct chat and group, and a chat of Ben and
Cat that Ann is not in. Every request runs as a new device of Ann's, and about
half of the generated ids are swapped for ids of those real objects, so requests
get past 404 into the operations. Every response must pass every schemathesis
check: no 5xx; a documented status, content type, headers and body; invalid input
refused; valid input accepted; authentication enforced.
"""

from dataclasses import dataclass

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.core.parameters import ParameterLocation

from tests.contract import SPEC_PATH
from tests.factories import create_group, log_in, open_direct, send, sign_up

# With the coverage phase's own cases, the file takes ~15 s of CPU (~30 s on 2 busy cores).
EXAMPLES_PER_OPERATION = 40

# schemathesis's default for the positive_data_acceptance check, plus 422
STATUSES_FOR_VALID_INPUT_WITH_422 = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]

CONFIG = schemathesis.Config.from_dict(
    {
        # Requests go to the in-process app; the base URL only fills the curl line
        # that reproduces a failure.
        "base-url": "http://localhost",
        "operations": [
            {
                # These refuse some schema-valid requests with 422 by design, for reasons
                # JSON Schema cannot state: ids that name nobody (`unknown_users`), a
                # direct chat with oneself, a cursor past the inbox head, an integer sent
                # as 1.0, an Idempotency-Key header that differs from `client_msg_id`.
                # Elsewhere a 422 for a schema-valid request means the contract is wrong.
                "include-operation-id": [
                    "openConversation",
                    "addMembers",
                    "getPresence",
                    "pollInbox",
                    "ackInbox",
                    "sendMessage",
                ],
                "checks": {
                    "positive_data_acceptance": {
                        "expected-statuses": STATUSES_FOR_VALID_INPUT_WITH_422
                    }
                },
            }
        ],
    }
)
# Read from the file: loading it from each test's app (schemathesis.pytest.from_fixture)
# fails under pytest 9 (it reads `request.node._nodeid`, which pytest 9 no longer has).
schema = schemathesis.openapi.from_path(SPEC_PATH, config=CONFIG)


@dataclass
class World:
    """A small populated service, and the values that name what exists in it."""

    app: Flask
    real_values: dict[tuple[ParameterLocation, str], list]


@pytest.fixture
def world(make_app) -> World:
    # `timeout` may be up to 3600 s: under the default 25 s cap, a few generated long
    # polls would take the whole time budget.
    app = make_app(LONG_POLL_CAP_S=0.05)
    client = app.test_client()
    ann, ben, cat, dan = (sign_up(client, name) for name in ("ann", "ben", "cat", "dan"))
    direct = open_direct(client, ann, ben)
    send(client, ann, direct, "hello")
    conversations = [direct, create_group(client, ann, [ben, cat]), open_direct(client, ben, cat)]
    users = [ann.id, ben.id, cat.id, dan.id]
    return World(
        app,
        {
            (ParameterLocation.PATH, "conversation_id"): conversations,
            (ParameterLocation.PATH, "user_id"): users,
            (ParameterLocation.BODY, "member_ids"): [[uid] for uid in users] + [users[1:]],
            (ParameterLocation.QUERY, "user_ids"): [",".join(map(str, users))],
        },
    )


def aim_at_real_objects(case, draw, world: World) -> None:
    """Half the time, swap a generated value for one naming things that exist. A part
    schemathesis made invalid on purpose (a negative case) is left alone: the checks
    expect the request refused for it."""
    for (location, name), values in world.real_values.items():
        container = case.get_container(location)
        negative = case.meta.is_negative_at(location)
        if isinstance(container, dict) and name in container and not negative:
            container[name] = draw(st.sampled_from([container[name], *values]))


def as_a_new_device_of_ann(case, world: World) -> dict | None:
    """Headers with the token of a new device of Ann's, so that a logout in one example
    cannot lock the next ones out; none when the case is about a missing or bad token."""
    if case.operation.schema.is_security_param_negated(case):
        return None
    return log_in(world.app.test_client(), "ann").auth


def bind_app(case, app: Flask, monkeypatch) -> None:
    """The `ignored_auth` check re-sends the request without credentials through the
    schema's own transport and ignores the `app` given to the call (schemathesis
    4.32.5, specs/openapi/_auth_retry.py `send_probe`); the schema must know the app."""
    monkeypatch.setattr(case.operation.schema, "app", app)


# The world is shared by an operation's examples (a function-scoped fixture): the
# checks hold in whatever state earlier examples left it in.
@pytest.mark.parametrize("backend", ["sqlite"])
@schema.parametrize()
@schema.given(data=st.data())
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
def test_every_operation_keeps_the_contract(case, data, world, monkeypatch):
    aim_at_real_objects(case, data.draw, world)
    bind_app(case, world.app, monkeypatch)
    case.call_and_validate(app=world.app, headers=as_a_new_device_of_ann(case, world))
