"""Two gunicorn instances with two gevent workers each, sharing PostgreSQL and Redis.

The servers share the ``parley_test`` database with the in-process tests, whose
``app_config`` fixture empties it per test, so the fixture empties it before
starting and the tests use unique usernames. Both instances use one Redis
prefix: that is what lets a send through one wake a poll held by the other.
"""

from collections.abc import Iterator

import pytest

from tests.scaled.servers import Instance
from tests.services import FAST_PASSWORDS, empty_postgres, unique_prefix

WORKERS_PER_INSTANCE = 2


@pytest.fixture(scope="module")
def instances(postgres_url, redis_url, tmp_path_factory) -> Iterator[tuple[Instance, Instance]]:
    """Instances A and B, ready to serve; stopped after the module's tests."""
    empty_postgres(postgres_url)
    settings = {
        "DATABASE_URL": postgres_url,
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": unique_prefix(),
        "WEB_CONCURRENCY": str(WORKERS_PER_INSTANCE),
        **{key: str(value) for key, value in FAST_PASSWORDS.items()},
    }
    started: list[Instance] = []
    try:
        for name in ("a", "b"):
            run_dir = tmp_path_factory.mktemp(f"instance-{name}")
            metrics_dir = run_dir / "metrics"  # one per instance: /metrics sums its workers
            metrics_dir.mkdir()
            started.append(
                Instance.start(name, run_dir, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir), **settings)
            )
        for instance in started:
            instance.wait_until_ready()
        yield started[0], started[1]
    finally:
        for instance in started:
            instance.stop()
