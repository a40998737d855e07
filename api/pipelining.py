"""Several statements as one transaction, sent in one round trip.

On PostgreSQL the statements go out together in psycopg's pipeline mode: on a
connection in autocommit, those before the pipeline's sync form one implicit
transaction, committed at the sync and rolled back whole if one fails. The
locks they take are held while PostgreSQL runs them, not across the client's
round trips, and a client's round trip under load lasts far longer than the
statements: each waits behind the rest of its worker's work. A send into a
group locks the conversation and every member's row; pipelined, the next send
waits for PostgreSQL's work alone.

The price: no statement can use an earlier one's result, since they all come
back at the end. Each takes what it needs from the database itself (in the
same transaction, a statement sees what the earlier ones wrote).

On SQLite the statements run one by one in the request's transaction, then
commit: the same statements, the same answers.
"""

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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
            return _pipelined(session, statements, params)
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
class _Prepared:
    """A statement compiled for psycopg once, and how to bind its parameters."""

    sql: str
    compiled: Any
    processors: dict[str, Any]

    def bind(self, params: Mapping[str, Any]) -> dict[str, Any]:
        bound = self.compiled.construct_params(dict(params))
        for name, process in self.processors.items():
            bound[name] = process(bound[name])
        return bound


# Compiled once per statement and backend: the statements are module constants.
_COMPILED: dict[tuple[Executable, str], _Prepared] = {}


def _compiled(statement: Executable, dialect: Dialect) -> _Prepared:
    key = (statement, dialect.name)
    if key not in _COMPILED:
        _COMPILED[key] = _compile(statement, dialect)
    return _COMPILED[key]


def _compile(statement: Executable, dialect: Dialect) -> _Prepared:
    compiled = statement.compile(dialect=dialect)
    processors = {
        name: process
        for bind, name in compiled.bind_names.items()
        if (process := bind.type.dialect_impl(dialect).bind_processor(dialect)) is not None
    }
    return _Prepared(compiled.string, compiled, processors)


def _pipelined(
    session: Session, statements: Sequence[Executable], params: Mapping[str, Any]
) -> list[list[Any]]:
    connection = session.connection()
    raw = connection.connection.driver_connection  # a psycopg Connection
    dbapi_error = connection.dialect.loaded_dbapi.Error
    prepared = [_compiled(statement, connection.dialect) for statement in statements]
    started = time.perf_counter()
    try:
        # No sync inside the block: leaving it sends the one sync (a sync of
        # our own would cost a second round trip at the block's end).
        with raw.pipeline():
            cursors = []
            for statement in prepared:
                cursor = raw.cursor(row_factory=namedtuple_row)
                cursor.execute(statement.sql, statement.bind(params))
                cursors.append(cursor)
        return [cursor.fetchall() if cursor.description else [] for cursor in cursors]
    except dbapi_error as exc:
        if connection.dialect.is_disconnect(exc, raw, None):
            connection.invalidate(exc)
        raise DBAPIError.instance(
            prepared[0].sql, params, exc, dbapi_error, dialect=connection.dialect
        ) from exc
    finally:
        DB_QUERY_SECONDS.observe(time.perf_counter() - started)
