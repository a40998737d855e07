"""Rate limits answer 429 with Retry-After and the rate-limit headers, per user or name."""

from types import SimpleNamespace

import pytest

from api.errors import RETRY_AFTER_S
from tests.factories import PASSWORD, log_in, send, sign_up


def test_sends_are_limited_per_user(make_app, pair):
    client = make_app(RATE_LIMITS_ENABLED=True, RATE_LIMIT_SEND="3 per minute").test_client()
    ann, ben, cid = pair
    sent = [send(client, ann, cid, f"m{i}") for i in range(3)]
    assert [r.status_code for r in sent] == [201, 201, 201]
    assert sent[-1].headers["X-RateLimit-Remaining"] == "0"

    refused = send(client, ann, cid, "one too many")
    assert refused.status_code == 429
    assert refused.get_json()["error"]["code"] == "too_many_requests"
    assert int(refused.headers["Retry-After"]) > 0
    assert refused.headers["X-RateLimit-Limit"] == "3"
    # Ben has his own allowance, and Ann's refused message was not stored.
    assert send(client, ben, cid, "my turn").status_code == 201
    history = client.get(f"/v1/conversations/{cid}/messages", headers=ben.auth).get_json()
    assert [m["text"] for m in history["messages"]] == ["m0", "m1", "m2", "my turn"]


def test_log_ins_are_limited_per_username(make_app):
    client = make_app(RATE_LIMITS_ENABLED=True, RATE_LIMIT_LOG_IN="2 per minute").test_client()
    sign_up(client, "ann")  # one log-in
    log_in(client, "ann")  # two
    guessed = client.post("/v1/sessions", json={"username": "ANN", "password": "guess-guess"})
    assert guessed.status_code == 429 and "Retry-After" in guessed.headers
    # Someone else is not held back by Ann's limit.
    sign_up(client, "ben")


def test_sign_ups_are_limited_per_address(make_app):
    client = make_app(
        RATE_LIMITS_ENABLED=True, RATE_LIMIT_SIGN_UP_PER_ADDRESS="2 per hour"
    ).test_client()
    sign_up(client, "ann")
    sign_up(client, "ben")
    third = client.post("/v1/users", json={"username": "cat", "password": PASSWORD})
    assert third.status_code == 429


def test_only_a_refusal_says_when_to_retry(make_app, pair):
    """An answer that went through counts what is left, and asks no one to wait."""
    client = make_app(RATE_LIMITS_ENABLED=True, RATE_LIMIT_SEND="1 per minute").test_client()
    ann, _ben, cid = pair
    sent = send(client, ann, cid, "m0")
    signed_up = client.post("/v1/users", json={"username": "cat", "password": PASSWORD})
    for response in (sent, signed_up):
        assert response.status_code == 201
        assert "X-RateLimit-Remaining" in response.headers
        assert "Retry-After" not in response.headers


def test_a_failure_of_a_limited_view_keeps_its_own_retry_after(make_app):
    """A database outage on sign-up is retried in seconds, not when the hour's
    window of sign-ups resets."""
    broken = make_app(
        RATE_LIMITS_ENABLED=True, DATABASE_URL="postgresql+psycopg://nobody@127.0.0.1:1/none"
    ).test_client()
    response = broken.post("/v1/users", json={"username": "ann", "password": PASSWORD})
    assert response.status_code == 503
    assert response.headers["Retry-After"] == str(RETRY_AFTER_S)


def test_unlimited_views_carry_no_rate_limit_headers(make_app, pair):
    """Not even right after a limited request, nor after one refused."""
    client = make_app(RATE_LIMITS_ENABLED=True, RATE_LIMIT_SEND="1 per minute").test_client()
    ann, _ben, cid = pair
    assert send(client, ann, cid, "m0").status_code == 201
    assert send(client, ann, cid, "m1").status_code == 429
    polled = client.get("/v1/inbox", headers=ann.auth)
    assert polled.status_code == 200
    assert "X-RateLimit-Limit" not in polled.headers
    assert "X-RateLimit-Remaining" not in polled.headers


@pytest.mark.parametrize("backend", ["sqlite"])  # in-process counts: Redis keeps its own time
@pytest.mark.parametrize(
    ("limit", "sends", "later_s"),
    [
        ("20 per second;600 per minute", 20, 0.9),  # the default; it still holds for 0.1 s
        ("1 per minute", 1, 29.7),  # it still holds for 30.3 s
    ],
)
def test_a_client_that_waits_retry_after_is_let_through(
    make_app, pair, monkeypatch, limit, sends, later_s
):
    """Retry-After is rounded up, never down: a client that waits what it says
    is not refused again, however little of the window was left."""
    now = [1_800_000_000.5]
    clock = SimpleNamespace(time=lambda: now[0])
    monkeypatch.setattr("limits.storage.memory.time", clock)  # the in-process counts' clock
    monkeypatch.setattr("api.limits.time", clock)
    client = make_app(RATE_LIMITS_ENABLED=True, RATE_LIMIT_SEND=limit).test_client()
    ann, _ben, cid = pair
    assert {send(client, ann, cid, f"m{i}").status_code for i in range(sends)} == {201}
    now[0] += later_s
    refused = send(client, ann, cid, "too soon")
    assert refused.status_code == 429
    wait_s = int(refused.headers["Retry-After"])
    assert wait_s >= 1
    now[0] += wait_s
    assert send(client, ann, cid, "in time").status_code == 201
