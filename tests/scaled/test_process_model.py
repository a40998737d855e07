"""Deployments that would be silently wrong are refused at start."""

import pytest

from tests.scaled.servers import Instance

pytestmark = pytest.mark.scaled

REFUSAL_WAIT_S = 30


def test_several_workers_without_redis_are_refused_at_start(tmp_path):
    # The instance's environment carries no REDIS_URL unless given one.
    server = Instance.start(
        "no-redis", tmp_path, WEB_CONCURRENCY="2", DATABASE_URL=f"sqlite:///{tmp_path}/p.db"
    )

    status = server.wait_for_exit(REFUSAL_WAIT_S)

    assert status != 0
    assert "REDIS_URL" in server.log()
