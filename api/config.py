"""Settings: defaults, then the environment, then the caller's overrides.

Every limit of the service lives here, so that one number has one home.
"""

import os
from typing import Any

DEFAULTS: dict[str, Any] = {
    # Embedded default: a SQLite file and the in-process hub, nothing to install.
    "DATABASE_URL": "sqlite:///parley.db",
    "REDIS_URL": "",
    # Keys and the pub/sub channel start with this, so several deployments
    # (or test runs) can share one Redis; keys then carry the database's
    # identity (api/hub/keyspace.py).
    "REDIS_PREFIX": "parley:",
    # Redis connections per process (one of them is the wake-up subscription);
    # requests beyond it wait for one, up to the Redis socket timeout.
    "REDIS_POOL_SIZE": 32,
    # Connections per process, opened as needed and then kept: a pool that
    # closed its overflow on every return re-opened (and PostgreSQL re-forked)
    # connections all the time under bursts.
    "DB_POOL_SIZE": 20,
    # API requests of a process working at once (long polls waiting do not
    # count); the rest wait their turn, and past ADMISSION_WAIT_S answer 503.
    # Few: a worker runs one greenlet at a time, so each admitted request waits
    # behind the others' work after every round trip. A group send holds its
    # members' row locks across its round trips: with 32 admitted, the polls
    # woken by the send before it kept those locks held over twice as long as
    # with 8. Under the Redis and database pools: the admitted never wait for a
    # connection.
    "ADMITTED_REQUESTS": 8,
    "ADMISSION_WAIT_S": 10.0,
    "DB_POOL_TIMEOUT_S": 5.0,  # a request waits this long for a connection, then 503
    # A pooled connection unused this long is checked (one round trip) before a
    # request gets it: it may have been dropped meanwhile. Busy ones are not.
    "DB_PING_IF_IDLE_S": 1.0,
    # Statements a connection runs often are prepared on the server (a send's
    # with SQL's PREPARE); off behind a pooler in transaction mode (PgBouncer keeps
    # the protocol's prepared statements since 1.21, never SQL's).
    "DB_PREPARED_STATEMENTS": True,
    "LONG_POLL_CAP_S": 25.0,  # under the 30 s idle timeout of common mobile proxies
    "GROUP_SIZE_LIMIT": 256,
    "MESSAGE_MAX_CHARS": 100_000,
    "INBOX_LIMIT_DEFAULT": 100,
    "INBOX_LIMIT_MAX": 500,
    # A poll answer stops adding entries once their text passes this many
    # characters (always at least one entry), so ten 100,000-character
    # messages never travel in one response.
    "INBOX_BATCH_MAX_CHARS": 300_000,
    # Inbox entries older than this are pruned (messages stay in history); a
    # device that polls from behind the pruned part is told so with 410.
    "INBOX_RETENTION_DAYS": 30,
    # Online while a device polls, and for this long after its last poll ends:
    # above the ~25 s gap of a client re-polling, so reconnects never flap.
    "PRESENCE_WINDOW_S": 30.0,
    # Members of groups up to this size hear of each other's presence changes;
    # in bigger groups every change would fan out to too many inboxes.
    "PRESENCE_GROUP_MAX": 64,
    "PRESENCE_QUERY_MAX": 100,  # user ids per GET /v1/presence
    "PRESENCE_SWEEP_INTERVAL_S": 1.0,
    "HISTORY_LIMIT_DEFAULT": 50,
    "HISTORY_LIMIT_MAX": 200,
    # A JSON-escaped 100,000-character message can take 1.2 MB; bodies past
    # this bound are refused with 413 before they are read.
    "MAX_CONTENT_LENGTH": 2 * 1024 * 1024,
    # Cached inbox heads expire so that a head left stale by a lost Redis write
    # can delay a short poll by this much at most (long polls always re-read
    # PostgreSQL at the end of their wait).
    "HEAD_CACHE_TTL_S": 60,
    # A cached cursor is ahead of the stored one only until its poll's
    # confirmation is stored (below), so its expiry bounds only the memory of
    # devices gone quiet: long enough that a device polling all day rarely finds
    # it gone (each time it does, its next confirmation writes the database again).
    "CURSOR_CACHE_TTL_S": 3600,
    # A poll's confirmation (its ``after``) is cached at once and stored this long
    # after, with the process's others meanwhile, in one statement (``api.write_behind``).
    "CURSOR_WRITE_DELAY_S": 0.25,
    # A revoked token is tomb-stoned in the cache, so this bounds nothing about
    # revocation; it only bounds how long an unused token stays cached.
    "TOKEN_CACHE_TTL_S": 300,
    # Rate limits (limits-library syntax: "N per second/minute/hour", ";"-separated).
    "RATE_LIMITS_ENABLED": True,
    "RATE_LIMIT_SEND": "20 per second;600 per minute",
    "RATE_LIMIT_LOG_IN": "10 per minute",  # per username: password guessing
    "RATE_LIMIT_LOG_IN_PER_ADDRESS": "60 per minute",
    "RATE_LIMIT_SIGN_UP_PER_ADDRESS": "30 per hour",
    # Proxies in front that set X-Forwarded-For (1 behind one load balancer):
    # client addresses, and so per-address limits, come from that header.
    "PROXY_HOPS": 0,
    "ARGON2_TIME_COST": 3,
    "ARGON2_MEMORY_KIB": 65_536,
    "ARGON2_PARALLELISM": 1,
}


class ConfigError(RuntimeError):
    """The settings describe a deployment that would be silently wrong."""


def _coerce(default: Any, raw: str) -> Any:
    if isinstance(default, bool):
        return raw.lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    return raw


def load_config(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return the settings: defaults, then environment variables, then ``overrides``."""
    config = dict(DEFAULTS)
    for key, default in DEFAULTS.items():
        if key in os.environ:
            config[key] = _coerce(default, os.environ[key])
    config.update(overrides or {})
    check_backends(config)
    return config


def check_backends(config: dict[str, Any]) -> None:
    """Refuse SQLite with Redis: that pairing means several processes (or greenlets
    waiting on Redis) sharing SQLite's single write lock, which blocks the whole
    process instead of yielding. SQLite is the one-process embedded mode."""
    if config["REDIS_URL"] and config["DATABASE_URL"].startswith("sqlite"):
        raise ConfigError(
            "REDIS_URL is set but DATABASE_URL is SQLite: the scaled mode needs "
            "PostgreSQL (DATABASE_URL=postgresql+psycopg://…). Unset REDIS_URL for "
            "the embedded mode."
        )


def check_process_model(workers: int, redis_url: str) -> None:
    """Refuse several processes without Redis: their waiters would never hear each other."""
    if workers > 1 and not redis_url:
        raise ConfigError(
            f"{workers} worker processes need REDIS_URL: without Redis a message sent "
            "through one process would not wake long polls held by another. "
            "Set REDIS_URL=redis://host:6379/0 or run one process (WEB_CONCURRENCY=1)."
        )
