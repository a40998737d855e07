import subprocess
import sys

import pytest
import yaml
from openapi_spec_validator import validate

from tests.contract import SPEC_PATH
from tests.factories import (
    long_poll_in_background,
    metric,
    poll,
    scaled_only,
    send,
    sign_up,
    wait_until_waiting,
)


def test_the_contract_is_a_valid_openapi_document():
    validate(yaml.safe_load(SPEC_PATH.read_text()))


def test_the_contract_is_served(client):
    response = client.get("/openapi.yaml")
    assert response.status_code == 200
    assert yaml.safe_load(response.data) == yaml.safe_load(SPEC_PATH.read_text())


def test_health_and_readiness(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["status"] == "ready"


def test_readiness_fails_when_the_database_is_gone(make_app, tmp_path):
    broken = make_app(DATABASE_URL="postgresql+psycopg://nobody@127.0.0.1:1/none").test_client()
    response = broken.get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["checks"]["database"] == "unreachable"


@scaled_only
def test_readiness_fails_when_redis_is_gone(make_app):
    broken = make_app(REDIS_URL="redis://127.0.0.1:1/0").test_client()
    response = broken.get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["checks"] == {"database": "ok", "redis": "unreachable"}


def test_a_database_outage_is_a_503_with_retry_after(make_app):
    broken = make_app(DATABASE_URL="postgresql+psycopg://nobody@127.0.0.1:1/none").test_client()
    response = broken.post("/v1/users", json={"username": "ann", "password": "long enough"})
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "database_unavailable"
    assert int(response.headers["Retry-After"]) > 0


def test_metrics_count_polls(client):
    ben = sign_up(client, "ben")
    poll(client, ben)
    text = client.get("/metrics").get_data(as_text=True)
    assert 'parley_polls_total{mode="short",outcome="empty"}' in text


def test_metrics_say_their_format_and_charset_once(client):
    response = client.get("/metrics")
    assert response.headers["Content-Type"] == "text/plain; version=1.0.0; charset=utf-8"


def test_responses_are_never_cached(client):
    ben = sign_up(client, "ben")
    response = client.get("/v1/inbox", headers=ben.auth)
    assert response.headers["Cache-Control"] == "no-store"


def test_several_processes_without_redis_are_refused():
    command = [
        sys.executable,
        "-c",
        "from api.config import check_process_model; check_process_model(2, '')",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert "REDIS_URL" in result.stderr


def test_sqlite_with_redis_is_refused():
    from api import create_app
    from api.config import ConfigError

    with pytest.raises(ConfigError, match="PostgreSQL"):
        create_app({"DATABASE_URL": "sqlite:///x.db", "REDIS_URL": "redis://127.0.0.1:6379/0"})


def test_metrics_time_wake_ups_queries_and_count_errors(app, client, pair):
    ann, ben, cid = pair
    before = {
        "errors": metric(client, "parley_errors_total", code="conversation_not_found"),
        "wake_ups": metric(client, "parley_wake_up_seconds_count"),
        "queries": metric(client, "parley_db_query_seconds_count"),
    }
    waiting = long_poll_in_background(app, ben, timeout=20)
    wait_until_waiting(app)
    send(client, ann, cid, "wake")
    waiting.result(timeout=30)
    client.get("/v1/conversations/424242", headers=ann.auth)

    assert (
        metric(client, "parley_errors_total", code="conversation_not_found") == before["errors"] + 1
    )
    assert metric(client, "parley_wake_up_seconds_count") == before["wake_ups"] + 1
    assert metric(client, "parley_db_query_seconds_count") > before["queries"]
