"""Base model, column types, and one engine per process with a session per request.

The engine is made when the app is made (in the worker process, never before
the fork) and connects only when a request first needs it. Each request gets
one session on ``g``; the teardown closes it. A long poll calls
:meth:`Database.release` before it waits, so a waiting client never holds a
connection.
"""

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated

from flask import Flask
from sqlalchemy import BigInteger, DateTime, Engine, Integer, create_engine, event
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.orm import DeclarativeBase, Session, mapped_column, sessionmaker
from sqlalchemy.types import TypeDecorator

from api.context import this_app, this_g
from api.metrics import time_queries

log = logging.getLogger(__name__)

# SQLite only auto-increments a column typed exactly INTEGER.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC timestamps on every backend (SQLite forgets the zone, and
    PostgreSQL answers in the session's time zone, which the server's settings or
    the client's environment choose)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


id_pk = Annotated[int, mapped_column(BigId, primary_key=True, autoincrement=True)]
created_at = Annotated[datetime, mapped_column(UTCDateTime(), default=utcnow, nullable=False)]


class Base(DeclarativeBase):
    pass


# A database that stops answering must turn requests into quick 503s, not hang
# them: give up connecting after 3 s, and drop a connection whose sent data goes
# unacknowledged for 10 s (a server that vanished without closing it).
POSTGRES_CONNECT_ARGS = {"connect_timeout": 3, "tcp_user_timeout": 10_000}

# psycopg prepares a statement on the server once a connection has run it this
# many times; from then on PostgreSQL neither parses nor plans it again (half of
# its CPU for a poll that times out). A rollback of an open transaction drops
# them all (DEALLOCATE ALL, a round trip), so reads run outside transactions
# (``Database.statements``).
PREPARE_AFTER_RUNS = 5


def make_engine(
    url: str,
    pool_size: int = 10,
    pool_timeout: float = 5.0,
    ping_if_idle_s: float = 1.0,
    prepared_statements: bool = True,
) -> Engine:
    """An engine for ``url``; SQLite gets the settings that make it safe to share.

    ``prepared_statements=False`` behind a connection pooler in transaction mode
    (see ``DB_PREPARED_STATEMENTS``).
    """
    if url.startswith("sqlite"):
        # One connection per process: every transaction takes SQLite's write lock
        # (see below), and SQLite waits for that lock in C, which under gevent
        # stops the whole process, the greenlet holding the lock included, so a
        # holder that yielded mid-transaction (its teardown wakes the next
        # request) was never resumed until the 30 s wait failed. The pool's wait
        # is cooperative; SQLite's own wait is left for other processes.
        engine = create_engine(
            url,
            pool_size=1,
            max_overflow=0,
            pool_timeout=pool_timeout,
            connect_args={"check_same_thread": False, "timeout": 30},
        )
        _serialise_sqlite_writers(engine)
        return engine
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=pool_timeout,
        isolation_level="AUTOCOMMIT",  # see _begin_explicitly
        connect_args={
            **POSTGRES_CONNECT_ARGS,
            "prepare_threshold": PREPARE_AFTER_RUNS if prepared_statements else None,
        },
    )
    _ping_connections_idle_for(engine, ping_if_idle_s)
    _begin_explicitly(engine)
    return engine


# The execution option of connections whose statements commit one by one.
ONE_BY_ONE = "parley_one_by_one"


def _begin_explicitly(engine: Engine) -> None:
    """Keep every PostgreSQL connection in autocommit mode, and send BEGIN for
    SQLAlchemy's transactions ourselves, as on SQLite.

    Most statements run outside transactions (``Database.statements``): a
    connection switched into autocommit mode when checked out and back when
    checked in made SQLAlchemy and psycopg reset it twice each time, 6 % of
    the CPU of a poll's read. Connections with ``ONE_BY_ONE`` set begin nothing,
    and neither do those given an isolation level of their own: SQLAlchemy and
    psycopg then set the connection up as asked (alembic's autocommit blocks for
    statements that cannot run in a transaction; a SERIALIZABLE transaction,
    which psycopg begins itself).
    """

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        options = connection.get_execution_options()
        if not (options.get(ONE_BY_ONE) or "isolation_level" in options):
            connection.exec_driver_sql("BEGIN")


def _ping_connections_idle_for(engine: Engine, seconds: float) -> None:
    """Check a pooled connection before use if it sat unused for ``seconds``.

    A database restart, a failover or a proxy may have dropped it meanwhile; a
    dead one is replaced before the request sees it. Connections in steady use
    skip the round trip (SQLAlchemy's ``pool_pre_ping`` would pay it on every
    checkout, and a poll checks out two or three times). One that died within
    the last second costs its request a 503, as during an outage, and makes the
    pool drop every connection as old as it.
    """

    @event.listens_for(engine.pool, "checkin")
    def _checked_in(_dbapi_connection, record) -> None:
        record.info["parley_idle_since"] = time.monotonic()

    @event.listens_for(engine.pool, "checkout")
    def _checked_out(dbapi_connection, record, _proxy) -> None:
        idle_since = record.info.pop("parley_idle_since", None)
        if idle_since is None or time.monotonic() - idle_since < seconds:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            raise DisconnectionError(f"a pooled connection died while idle: {exc}") from exc


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
            ping_if_idle_s=app.config["DB_PING_IF_IDLE_S"],
            prepared_statements=app.config["DB_PREPARED_STATEMENTS"],
        )
        time_queries(engine)
        app.extensions["parley.db"] = sessionmaker(engine, expire_on_commit=False)
        # SQLite keeps one transaction per request: a second connection of the
        # same request would wait for the first one's write lock.
        app.extensions["parley.db.statements"] = (
            None
            if engine.dialect.name == "sqlite"
            else sessionmaker(
                engine.execution_options(**{ONE_BY_ONE: True}), expire_on_commit=False
            )
        )
        app.teardown_appcontext(lambda _exc: self.release())

    @staticmethod
    def engine(app: Flask | None = None) -> Engine:
        return (app or this_app()).extensions["parley.db"].kw["bind"]

    @property
    def session(self) -> Session:
        """This request's session: one transaction until ``commit()``."""
        state = this_g()
        session = state.get("db_session")
        if session is None:
            session = state.db_session = this_app().extensions["parley.db"]()
        return session

    @contextmanager
    def statements(self) -> Iterator[Session]:
        """A session whose statements commit one by one (on PostgreSQL), for the block;
        its connection goes back to the pool when the block ends.

        For reads and one-statement writes: it saves the BEGIN and the COMMIT or
        ROLLBACK round trips (and a rollback would drop the connection's prepared
        statements), and no answer changes, because under READ COMMITTED each
        statement of a transaction reads a fresh snapshot anyway. Call
        ``commit()`` after a write all the same: on SQLite the block runs in the
        request's transaction.
        """
        factory = this_app().extensions["parley.db.statements"]
        if factory is None:
            yield self.session
            return
        session = factory()
        try:
            yield session
        finally:
            _close(session)

    def release(self) -> None:
        """Close this request's session, giving its connection back to the pool.

        Runs in teardown too, where an exception would replace the finished
        answer with the server's bare 500: a connection that died after the
        request's last query (a database restart) is dropped instead.
        """
        session = this_g().pop("db_session", None)
        if session is not None:
            _close(session)


def _close(session: Session) -> None:
    try:
        session.close()
    except DBAPIError as exc:
        log.warning("dropping a dead database connection: %s", exc)
        session.invalidate()


db = Database()
