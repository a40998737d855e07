"""Fixtures: an app per test on each backend, and clients that check the contract.

Every test that takes ``app`` (or ``client``) runs twice: on the embedded
default (a SQLite file, the in-process hub) and on the scaled backend
(PostgreSQL and Redis over real connections).
"""

import shutil
from collections.abc import Iterator

import pytest
from alembic import command
from alembic.config import Config
from flask.testing import FlaskClient
from sqlalchemy import create_engine, text

from api import create_app
from api.db import db
from api.lifecycle import store_what_is_behind
from tests import figures, services
from tests.contract import check_flask_response
from tests.factories import open_direct, sign_up

ROOT = services.__file__.rsplit("/tests/", 1)[0]


def migrate(url: str) -> None:
    config = Config(f"{ROOT}/alembic.ini")
    config.attributes["database_url"] = url
    config.attributes["configure_logger"] = False
    command.upgrade(config, "head")


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("template") / "parley.db"
    migrate(f"sqlite:///{path}")
    return str(path)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    services.ensure_postgres_database(services.POSTGRES_URL)
    engine = create_engine(services.POSTGRES_URL)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
    migrate(services.POSTGRES_URL)
    return services.POSTGRES_URL


@pytest.fixture(scope="session", autouse=True)
def no_redis_keys_left() -> Iterator[None]:
    yield
    services.remove_keys_made(services.REDIS_URL)


@pytest.fixture(scope="session")
def redis_url() -> str:
    services.ensure_redis(services.REDIS_URL)
    return services.REDIS_URL


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request) -> str:
    return request.param


@pytest.fixture
def app_config(backend, request, tmp_path) -> dict:
    """Settings for a fresh, empty service on this test's backend."""
    config = dict(services.TEST_SETTINGS)
    if backend == "sqlite":
        path = tmp_path / "parley.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        config.update(DATABASE_URL=f"sqlite:///{path}", REDIS_URL="")
    else:
        url = request.getfixturevalue("postgres_url")
        services.empty_postgres(url)
        config.update(
            DATABASE_URL=url,
            REDIS_URL=request.getfixturevalue("redis_url"),
            REDIS_PREFIX=services.unique_prefix(),
        )
    return config


class ContractClient(FlaskClient):
    """A test client that checks every response against openapi.yaml."""

    def open(self, *args, **kwargs):
        # Buffered: the answer is read whole and closed at once, as a WSGI server
        # closes it once sent (what the app runs on close runs).
        response = super().open(*args, **{"buffered": True, **kwargs})
        check_flask_response(response)
        return response


@pytest.fixture
def make_app(app_config):
    """Build apps on this test's backend (several share one database, like processes)."""
    apps = []

    def build(**overrides):
        app = create_app({**app_config, **overrides})
        app.test_client_class = ContractClient
        apps.append(app)
        return app

    yield build
    for app in apps:
        store_what_is_behind(app)
        coordinator = app.extensions["parley.hub"]
        coordinator.hub.close()
        if coordinator.client is not None:  # its sockets, closed now rather than by the collector
            coordinator.client.connection_pool.disconnect()
        db.engine(app).dispose()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app) -> ContractClient:
    return app.test_client()


@pytest.fixture
def pair(client):
    """Ann and Ben, signed up and logged in, and their direct conversation's id."""
    ann, ben = sign_up(client, "ann"), sign_up(client, "ben")
    return ann, ben, open_direct(client, ann, ben)


def pytest_terminal_summary(terminalreporter) -> None:
    lines = figures.gathered(terminalreporter)
    if lines:
        terminalreporter.section("delivery figures (0 lost and 0 duplicated are asserted)")
        for line in lines:
            terminalreporter.write_line(line)
