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

The price: the parameters are bound on the client (psycopg's escaping; nothing
is prepared, so PostgreSQL plans the statements each time), and no statement
can use an earlier one's result, since they all come back at the end. Each
takes what it needs from the database itself (in the same transaction, a
statement sees what the earlier ones wrote).

On SQLite the statements run one by one in the request's transaction, then
commit: the same statements, the same answers.
"""

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import ClientCursor
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


@dataclass(frozen=True)
class _Compiled:
    """A statement compiled for psycopg, and how to bind its parameters."""

    compiled: Any
    processors: dict[str, Any]

    @property
    def sql(self) -> str:
        return self.compiled.string

    def bind(self, params: Mapping[str, Any]) -> dict[str, Any]:
        bound = self.compiled.construct_params(dict(params))
        for name, process in self.processors.items():
            bound[name] = process(bound[name])
        return bound


# Compiled once per statement and backend: the statements are module constants.
_COMPILED: dict[tuple[Executable, str], _Compiled] = {}


def _compile_once(statement: Executable, dialect: Dialect) -> _Compiled:
    key = (statement, dialect.name)
    if key not in _COMPILED:
        _COMPILED[key] = _compile(statement, dialect)
    return _COMPILED[key]


def _compile(statement: Executable, dialect: Dialect) -> _Compiled:
    compiled = statement.compile(dialect=dialect)
    processors = {
        name: process
        for bind, name in compiled.bind_names.items()
        if (process := bind.type.dialect_impl(dialect).bind_processor(dialect)) is not None
    }
    return _Compiled(compiled, processors)


def _as_one_query(
    session: Session, statements: Sequence[Executable], params: Mapping[str, Any]
) -> list[list[Any]]:
    connection = session.connection()
    raw = connection.connection.driver_connection  # a psycopg Connection
    dbapi_error = connection.dialect.loaded_dbapi.Error
    compiled = [_compile_once(statement, connection.dialect) for statement in statements]
    cursor = ClientCursor(raw, row_factory=namedtuple_row)
    # Each statement bound on its own: anonymous parameters of two statements
    # may share a name.
    query = ";\n".join(cursor.mogrify(each.sql, each.bind(params)) for each in compiled)
    started = time.perf_counter()
    try:
        cursor.execute(query)
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
