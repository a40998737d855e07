"""The topology every fault test runs on, built from servers no other test touches.

    ThrowawayPostgres ─┐
                       ├── instances a, b (2 gevent workers each) ── haproxy (round robin)
    ThrowawayRedis ────┤
                       └── instance c, started by the tests that shut an instance down

The database and Redis are this package's own, so a test may stop, kill or
restart them; they, the instances and the balancer are stopped after the package.
"""

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import migrate
from tests.faults.backends import ThrowawayPostgres, ThrowawayRedis
from tests.scaled.conftest import WORKERS_PER_INSTANCE, running
from tests.scaled.servers import Balancer, Instance
from tests.services import TEST_SETTINGS, unique_prefix

GROUP_SIZE_LIMIT = 8  # small, so that a test can fill a group


@dataclass
class Topology:
    """Two instances behind a balancer, and the servers beneath them."""

    balancer: Balancer
    instances: tuple[Instance, Instance]
    postgres: ThrowawayPostgres
    redis: ThrowawayRedis
    settings: dict[str, str]  # what every instance shares besides the servers

    @property
    def urls(self) -> list[str]:
        """The balancer first, then each instance."""
        return [self.balancer.url, *(instance.url for instance in self.instances)]

    @property
    def wake_channel(self) -> str:
        return self.settings["REDIS_PREFIX"] + "wake"


@pytest.fixture(scope="package")
def throwaway_postgres() -> Iterator[ThrowawayPostgres]:
    server = ThrowawayPostgres.in_new_directory()
    try:
        server.initialize()
        migrate(server.url)
        yield server
    finally:
        server.remove()


@pytest.fixture(scope="package")
def throwaway_redis(tmp_path_factory) -> Iterator[ThrowawayRedis]:
    server = ThrowawayRedis.in_directory(tmp_path_factory.mktemp("redis"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="package")
def topology(throwaway_postgres, throwaway_redis, tmp_path_factory) -> Iterator[Topology]:
    """Instances a and b on the throwaway servers, behind haproxy."""
    shared = {"REDIS_PREFIX": unique_prefix(), "GROUP_SIZE_LIMIT": str(GROUP_SIZE_LIMIT)}
    urls = (throwaway_postgres.url, throwaway_redis.url)
    with running(*urls, tmp_path_factory, **shared) as instances:
        balancer = Balancer.start(tmp_path_factory.mktemp("haproxy"), list(instances))
        try:
            yield Topology(balancer, instances, throwaway_postgres, throwaway_redis, shared)
        finally:
            balancer.stop()


@pytest.fixture
def instance_c(topology, tmp_path, request) -> Iterator[Instance]:
    """A third instance on the same database and Redis, outside the balancer (with
    the settings of an indirect parameter, if any)."""
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    instance = Instance.start(
        "c",
        tmp_path,
        DATABASE_URL=topology.postgres.url,
        REDIS_URL=topology.redis.url,
        WEB_CONCURRENCY=str(WORKERS_PER_INSTANCE),
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        **{key: str(value) for key, value in TEST_SETTINGS.items()},
        **topology.settings,
        **getattr(request, "param", {}),
    )
    try:
        instance.wait_until_ready()
        yield instance
    finally:
        instance.stop()
