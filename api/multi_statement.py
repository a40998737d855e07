"""Several statements as one transaction, sent in one round trip.

On PostgreSQL they go out as one query string (the simple query protocol),
which the server runs as one implicit transaction: committed after the last
statement, rolled back whole if one fails. The locks they take are held while
PostgreSQL runs them, not across the app's round trips, and a round trip under
load lasts far longer than the statements: after each one the request's
greenlet waits behind the rest of its worker's work. A send into a group locks
the conversation and every member's row; sent this way, the next send waits for
PostgreSQL's work alone. (psycopg's pipeline mode does the same in one round
trip too, but waits for the socket once per statement, and every wait under
gevent is a turn behind the others.)

The simple protocol carries no parameters, so the statements are prepared on
each connection the first time it runs them (``PREPARE``, a round trip of its
own) and the query string is their ``EXECUTE``s, the parameters bound on the
client (psycopg's escaping): PostgreSQL neither parses nor plans them again,
which was half of its work for a 1:1 send. With prepared statements turned off
(``DB_PREPARED_STATEMENTS``, behind a pooler in transaction mode, which hands
each query to whichever server connection is free) the statements
themselves go out, planned every time. No statement can use an earlier one's
result, since they all come back at the end: each takes what it needs from the
database itself (in the same transaction, a statement sees what the earlier
ones wrote).

On SQLite the statements run one by one in the request's transaction, then
commit: the same statements, the same answers.
"""

import itertools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import ClientCursor
from psycopg.errors import InvalidSqlStatementName
from psycopg.rows import namedtuple_row
from sqlalchemy import Dialect, Executable, Result
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from api.db import db
from api.metrics import DB_QUERY_SECONDS


def run_together(statements: Sequence[Executable], params: Mapping[str, Any]) -> list[list[Any]]:
    """Run ``statements`` (each takes the ``params`` it names) as one transaction;
    returns each one's rows (with attribute access by column name; none for a
    statement that returns none).

    Raises SQLAlchemy's exceptions on both backends (``IntegrityError`` for a
    broken constraint); then nothing of the transaction is left.
    """
    with db.statements() as session:
        if session.get_bind().dialect.name == "postgresql":
            return _as_one_query(session, statements, params)
        try:
            results = [_rows(session.execute(statement, params)) for statement in statements]
        except Exception:
            session.rollback()
            raise
        session.commit()
        return results


def _rows(result: Result) -> list[Any]:
    return result.all() if result.returns_rows else []


@dataclass(frozen=True, eq=False)  # one per statement: a key by identity
class _Compiled:
    """A statement compiled for psycopg (``compiled``, parameters by name) and for
    ``PREPARE`` (``positional``, parameters ``$1``, ``$2``…), and how to bind them."""

    compiled: Any
    positional: Any
    processors: dict[str, Any]

    @property
    def sql(self) -> str:
        return self.compiled.string

    def bind(self, params: Mapping[str, Any]) -> dict[str, Any]:
        bound = self.compiled.construct_params(dict(params))
        for name, process in self.processors.items():
            bound[name] = process(bound[name])
        return bound

    def execute(self, cursor: ClientCursor, name: str, params: Mapping[str, Any]) -> str:
        """``EXECUTE name(…)`` of this statement prepared as ``name``, with ``params``."""
        bound = self.bind(params)
        values = [bound[key] for key in self.positional.positiontup]
        return cursor.mogrify(f"EXECUTE {name}({', '.join(['%s'] * len(values))})", values)


# Compiled once per statement and backend: the statements are module constants.
_COMPILED: dict[tuple[Executable, str], _Compiled] = {}


def _compile_once(statement: Executable, dialect: Dialect) -> _Compiled:
    key = (statement, dialect.name)
    if key not in _COMPILED:
        _COMPILED[key] = _compile(statement, dialect)
    return _COMPILED[key]


def _compile(statement: Executable, dialect: Dialect) -> _Compiled:
    compiled = statement.compile(dialect=dialect)
    positional = statement.compile(dialect=type(dialect)(paramstyle="numeric_dollar"))
    processors = {
        name: process
        for bind, name in compiled.bind_names.items()
        if (process := bind.type.dialect_impl(dialect).bind_processor(dialect)) is not None
    }
    return _Compiled(compiled, positional, processors)


# Each PREPARE gets a name never used before in this process, so a PREPARE
# that failed half-way can leave nothing that a later one would clash with.
_PREPARED_NAMES = (f"parley_{n}" for n in itertools.count())
_PREPARED = "parley.prepared"  # on a connection's info: {_Compiled: its name there}


def _prepared_names(cursor: ClientCursor, info: dict, compiled: Sequence[_Compiled]) -> list[str]:
    """The names these statements are prepared under on the cursor's connection,
    preparing (in one round trip) those that are not yet."""
    names = info.setdefault(_PREPARED, {})
    missing = {each: next(_PREPARED_NAMES) for each in compiled if each not in names}
    if missing:
        cursor.execute(
            ";\n".join(
                f"PREPARE {name} AS {each.positional.string}" for each, name in missing.items()
            )
        )
        names.update(missing)
    return [names[each] for each in compiled]


def _query(
    cursor: ClientCursor, info: dict, compiled: Sequence[_Compiled], params: Mapping[str, Any]
) -> str:
    """The one query string that runs the statements with ``params``."""
    # Each statement bound on its own: anonymous parameters of two statements
    # may share a name.
    if cursor.connection.prepare_threshold is None:  # prepared statements are off
        return ";\n".join(cursor.mogrify(each.sql, each.bind(params)) for each in compiled)
    names = _prepared_names(cursor, info, compiled)
    return ";\n".join(
        each.execute(cursor, name, params) for each, name in zip(compiled, names, strict=True)
    )


def _as_one_query(
    session: Session, statements: Sequence[Executable], params: Mapping[str, Any]
) -> list[list[Any]]:
    connection = session.connection()
    raw = connection.connection.driver_connection  # a psycopg Connection
    dbapi_error = connection.dialect.loaded_dbapi.Error
    compiled = [_compile_once(statement, connection.dialect) for statement in statements]
    cursor = ClientCursor(raw, row_factory=namedtuple_row)
    started = time.perf_counter()
    try:
        try:
            cursor.execute(_query(cursor, connection.info, compiled, params))
        except InvalidSqlStatementName:
            # psycopg deallocates every statement prepared on a connection when a
            # transaction on it rolls back: nothing ran (the first EXECUTE failed),
            # so prepare them again and run them.
            connection.info[_PREPARED] = {}
            cursor.execute(_query(cursor, connection.info, compiled, params))
        results = []
        while True:
            results.append(cursor.fetchall() if cursor.description else [])
            if not cursor.nextset():
                return results
    except dbapi_error as exc:
        if connection.dialect.is_disconnect(exc, raw, cursor):
            connection.invalidate(exc)
        # Reported as SQLAlchemy would: the statements and the parameters apart.
        statement = ";\n".join(each.sql for each in compiled)
        raise DBAPIError.instance(
            statement, params, exc, dbapi_error, dialect=connection.dialect
        ) from exc
    finally:
        cursor.close()
        DB_QUERY_SECONDS.observe(time.perf_counter() - started)
