"""What a request does not do again: checks whose answers cannot change."""

import flask.app

from api.inbox.schemas import poll_query_schema
from api.validation import load_query
from tests.factories import poll, sign_up


def test_flask_asks_once_whether_each_hook_and_view_is_a_coroutine(client, monkeypatch):
    asked = []
    real = flask.app.iscoroutinefunction
    monkeypatch.setattr(flask.app, "iscoroutinefunction", lambda f: asked.append(f) or real(f))
    ann = sign_up(client, "ann")
    poll(client, ann)
    asked_by_the_first = len(asked)
    for _ in range(3):
        poll(client, ann)
    assert asked_by_the_first > 0
    assert len(asked) == asked_by_the_first


def test_a_repeated_query_string_is_validated_once(app, monkeypatch):
    """A client polling with the same ``after`` costs one validation, and what
    the view gets is its own to change."""
    validated = []
    real_load = poll_query_schema.load
    monkeypatch.setattr(
        poll_query_schema, "load", lambda *a, **kw: validated.append(a) or real_load(*a, **kw)
    )
    loads = []
    for query in ("after=3&timeout=0", "after=3&timeout=0", "after=4&timeout=0"):
        with app.test_request_context(f"/v1/inbox?{query}"):
            loads.append(load_query(poll_query_schema))
    loads[0]["after"] = 99
    assert loads[1:] == [{"after": 3, "timeout": 0.0}, {"after": 4, "timeout": 0.0}]
    assert len(validated) == 2
