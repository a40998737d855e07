"""What a request does not do again: checks whose answers cannot change."""

import flask
import flask.app
import flask_limiter

from api.inbox.schemas import poll_query_schema
from api.validation import load_query
from tests.factories import open_direct, poll, send, sign_up


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


def test_only_the_limited_views_look_for_rate_limits(make_app, monkeypatch):
    """Polls have no rate limit, and no longer look for one on every request;
    a send still checks its own."""
    client = make_app(RATE_LIMITS_ENABLED=True).test_client()
    ann, ben = sign_up(client, "ann"), sign_up(client, "ben")
    chat = open_direct(client, ann, ben)
    looked = []
    real = flask_limiter.Limiter._check_request_limit
    monkeypatch.setattr(
        flask_limiter.Limiter,
        "_check_request_limit",
        lambda limiter, name=None, in_middleware=True: (
            looked.append(in_middleware) or real(limiter, name, in_middleware)
        ),
    )
    poll(client, ben)
    assert looked == []
    assert send(client, ann, chat, "hi").status_code == 201
    assert looked == [False]  # its decorator's check, not the before-request hook's


def test_each_request_is_bound_to_the_host_and_path_it_named(client, monkeypatch):
    """The server part of the URL binding is remembered per host: a redirect still
    names the host each request asked for, and Flask binds only the requests whose
    host is not remembered (all are forgotten past a bound)."""
    monkeypatch.setattr("api.parley_flask.SERVERS_REMEMBERED", 2)
    bound_by_flask = []
    real = flask.Flask.create_url_adapter
    monkeypatch.setattr(
        flask.Flask,
        "create_url_adapter",
        lambda app, request: bound_by_flask.append(request) or real(app, request),
    )
    hosts = ["a.example", "b.example:8080", "a.example", "c.example", "d.example", "b.example:8080"]
    for host in hosts:
        response = client.get("/docs", headers={"Host": host})
        assert (response.status_code, response.headers["Location"]) == (
            308,
            f"http://{host}/docs/",
        )
        assert client.get("/healthz", headers={"Host": host}).get_json() == {"status": "ok"}
    # a, b, then c and d and b again once the two remembered were forgotten
    assert len([r for r in bound_by_flask if r is not None]) == 5
    assert client.get("/nowhere", headers={"Host": "a.example"}).status_code == 404
    assert client.delete("/healthz", headers={"Host": "a.example"}).status_code == 405
    https = client.get("/docs?x=1", headers={"Host": "a.example"}, base_url="https://a.example")
    assert https.headers["Location"] == "https://a.example/docs/?x=1"


def test_trusted_hosts_set_after_requests_are_enforced(app, client):
    # A page: the contract leaves its statuses open (the API's have none for this).
    assert client.get("/docs/", headers={"Host": "elsewhere.example"}).status_code == 200
    app.config["TRUSTED_HOSTS"] = ["parley.example"]
    assert client.get("/docs/", headers={"Host": "elsewhere.example"}).status_code == 400
    assert client.get("/docs/", headers={"Host": "parley.example"}).status_code == 200
