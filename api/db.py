"""Base model, column types, and one engine per process with a session per request.

The engine is made when the app is made (in the worker process, never before
the fork) and connects only when a request first needs it. Each request gets
one session on ``g``; the teardown closes it. A long poll calls
:meth:`Database.release` before it waits, so a waiting client never holds a
connection.
"""

import logging
from datetime import UTC, datetime
from typing import Annotated

from flask import Flask, current_app, g
from sqlalchemy import BigInteger, DateTime, Engine, Integer, create_engine, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Session, mapped_column, sessionmaker
from sqlalchemy.types import TypeDecorator

from api.metrics import time_queries

log = logging.getLogger(__name__)

# SQLite only auto-increments a column typed exactly INTEGER.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC timestamps on every backend (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


def utcnow() -> datetime:
    return datetime.now(UTC)


id_pk = Annotated[int, mapped_column(BigId, primary_key=True, autoincrement=True)]
created_at = Annotated[datetime, mapped_column(UTCDateTime(), default=utcnow, nullable=False)]


class Base(DeclarativeBase):
    pass


# A database that stops answering must turn requests into quick 503s, not hang
# them: give up connecting after 3 s, and drop a connection whose sent data goes
# unacknowledged for 10 s (a server that vanished without closing it).
# No server-side prepared statements: psycopg drops them all (DEALLOCATE ALL, a
# round trip) whenever a transaction rolls back, which every read-only request
# does when it returns its connection, so they were re-made and thrown away
# instead of reused.
POSTGRES_CONNECT_ARGS = {
    "connect_timeout": 3,
    "tcp_user_timeout": 10_000,
    "prepare_threshold": None,
}


def make_engine(url: str, pool_size: int = 10, pool_timeout: float = 5.0) -> Engine:
    """An engine for ``url``; SQLite gets the settings that make it safe to share."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        _serialise_sqlite_writers(engine)
        return engine
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=pool_timeout,
        connect_args=POSTGRES_CONNECT_ARGS,
    )


def _serialise_sqlite_writers(engine: Engine) -> None:
    """Make every SQLite transaction take the write lock when it begins.

    SQLite ignores ``SELECT … FOR UPDATE``; ``BEGIN IMMEDIATE`` gives the same
    guarantee (one writer at a time, reads inside see the latest commit), so the
    counters that hand out sequence numbers cannot be read stale.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")


class Database:
    """The app's engine and its request-scoped sessions."""

    def __init__(self, app: Flask | None = None) -> None:
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        engine = make_engine(
            app.config["DATABASE_URL"],
            pool_size=app.config["DB_POOL_SIZE"],
            pool_timeout=app.config["DB_POOL_TIMEOUT_S"],
        )
        time_queries(engine)
        app.extensions["parley.db"] = sessionmaker(engine, expire_on_commit=False)
        app.teardown_appcontext(lambda _exc: self.release())

    @staticmethod
    def engine(app: Flask | None = None) -> Engine:
        return (app or current_app).extensions["parley.db"].kw["bind"]

    @property
    def session(self) -> Session:
        if "db_session" not in g:
            g.db_session = current_app.extensions["parley.db"]()
        return g.db_session

    def release(self) -> None:
        """Close this request's session, giving its connection back to the pool.

        Runs in teardown too, where an exception would replace the finished
        answer with the server's bare 500: a connection that died after the
        request's last query (a database restart) is dropped instead.
        """
        session = g.pop("db_session", None)
        if session is None:
            return
        try:
            session.close()
        except DBAPIError as exc:
            log.warning("dropping a dead database connection: %s", exc)
            session.invalidate()


db = Database()
