"""The real PostgreSQL and Redis the suite talks to, and how to reach them.

Outside CI a missing server skips the tests that need it; with ``CI=true`` it
fails them, so a green CI always means the scaled mode was tested.
"""

import contextlib
import os
import subprocess
import uuid

import psycopg
import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

POSTGRES_URL = os.environ.get(
    "TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/parley_test"
)
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() == "true"


APT_WAIT_S = 600  # a package and its libraries can be ~100 MB on a cold machine


def apt_install(package: str) -> bool:
    """Install a Debian package the tests need (as root), running ``apt-get update``
    first only if the package lists were too stale to find it."""
    for steps in ([["install", "-y", package]], [["update"], ["install", "-y", package]]):
        if all(_apt_get(*step) for step in steps):
            return True
    return False


def _apt_get(*arguments: str) -> bool:
    try:
        done = subprocess.run(
            ["apt-get", *arguments],
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            capture_output=True,
            timeout=APT_WAIT_S,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def require(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: the scaled-mode tests may not be skipped)")
    pytest.skip(reason)


def libpq_url(url: str, database: str | None = None) -> str:
    parsed = make_url(url).set(drivername="postgresql")
    if database:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


def ensure_postgres_database(url: str) -> None:
    """Create the test database beside the server's ``test`` database if it is missing."""
    name = make_url(url).database
    try:
        with psycopg.connect(libpq_url(url, "test"), autocommit=True, connect_timeout=3) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        require(f"PostgreSQL is not reachable at {url}: {exc}")


def ensure_redis(url: str) -> None:
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=3) as client:
            client.ping()
    except redis.RedisError as exc:
        require(f"Redis is not reachable at {url}: {exc}")


TABLES = "inbox_entries, messages, memberships, conversations, devices, users"
# Argon2 at full strength costs ~50 ms a hash; the suite signs up hundreds of users,
# from one address, faster than the production rate limits allow (tests of the
# limits turn them back on).
TEST_SETTINGS = {"ARGON2_TIME_COST": 1, "ARGON2_MEMORY_KIB": 1024, "RATE_LIMITS_ENABLED": False}


def empty_postgres(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE"))
    engine.dispose()


_PREFIX_STEM = "parley-test-"
_prefixes_made: set[bytes] = set()


def unique_prefix() -> str:
    """A Redis key and channel prefix no other test shares."""
    prefix = f"{_PREFIX_STEM}{uuid.uuid4().hex[:12]}:"
    _prefixes_made.add(prefix.encode())
    return prefix


def remove_keys_made(url: str) -> None:
    """Delete the keys under every prefix this run made: the machine's Redis
    outlives the suite, and presence keeps sorted sets that never expire. Keys of
    other runs (another suite on the same Redis) stay."""
    if not _prefixes_made:
        return
    with contextlib.suppress(redis.RedisError), redis.Redis.from_url(url) as client:
        ours = [
            key
            for key in client.scan_iter(match=f"{_PREFIX_STEM}*", count=1000)
            if key.partition(b":")[0] + b":" in _prefixes_made
        ]
        for start in range(0, len(ours), 1000):
            client.unlink(*ours[start : start + 1000])
