"""Two gunicorn instances with two gevent workers each, sharing PostgreSQL and Redis.

The servers share the ``parley_test`` database with the in-process tests, whose
``app_config`` fixture empties it per test, so the fixtures empty it before
starting and the tests use unique usernames. Both instances use one Redis
prefix: that is what lets a send through one wake a poll held by the other.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.scaled.servers import PRESENCE_SWEEPER, Instance
from tests.services import TEST_SETTINGS, empty_postgres, unique_prefix

WORKERS_PER_INSTANCE = 2
# Quick presence for the presence tests: a short window, swept often.
QUICK_PRESENCE = {"PRESENCE_WINDOW_S": "2", "PRESENCE_SWEEP_INTERVAL_S": "0.2"}


@contextmanager
def running(postgres_url, redis_url, tmp_path_factory, sweepers: int = 0, **extra: str):
    """Instances A and B (and ``sweepers`` presence sweeper processes), stopped after."""
    empty_postgres(postgres_url)
    settings = {
        "DATABASE_URL": postgres_url,
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": unique_prefix(),
        "WEB_CONCURRENCY": str(WORKERS_PER_INSTANCE),
        **{key: str(value) for key, value in TEST_SETTINGS.items()},
        **extra,
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
        sweeper_processes = [
            Instance.start(
                f"sweeper-{n}", tmp_path_factory.mktemp("sweeper"), PRESENCE_SWEEPER, **settings
            )
            for n in range(sweepers)
        ]
        started += sweeper_processes
        yield started[0], started[1]
    finally:
        for instance in started:
            instance.stop()


@pytest.fixture(scope="module")
def instances(postgres_url, redis_url, tmp_path_factory) -> Iterator[tuple[Instance, Instance]]:
    """Instances A and B, ready to serve; stopped after the module's tests."""
    with running(postgres_url, redis_url, tmp_path_factory) as pair:
        yield pair


@pytest.fixture(scope="module")
def presence_instances(postgres_url, redis_url, tmp_path_factory):
    """A and B with a 2 s presence window, and two sweepers racing to announce changes."""
    with running(postgres_url, redis_url, tmp_path_factory, sweepers=2, **QUICK_PRESENCE) as pair:
        yield pair
