"""PostgreSQL connections stay in autocommit mode and transactions send their own
BEGIN: what runs in a transaction must still be one, and what runs outside one
(reads, the one-round-trip send) must not be wrapped in one."""

from psycopg.pq import TransactionStatus
from sqlalchemy import text

from api.db import db
from tests.factories import scaled_only

pytestmark = scaled_only


def status(conn) -> TransactionStatus:
    return conn.connection.dbapi_connection.info.transaction_status


def test_a_transaction_is_open_until_it_commits(make_app):
    app = make_app()
    with db.engine(app).connect() as conn:
        conn.execute(text("SELECT 1"))
        assert status(conn) == TransactionStatus.INTRANS
        conn.commit()
        assert status(conn) == TransactionStatus.IDLE


def test_a_rolled_back_transaction_leaves_nothing(make_app):
    app = make_app()
    with db.engine(app).connect() as conn:
        conn.execute(text("CREATE TEMPORARY TABLE kept (n int)"))
        conn.commit()
        conn.execute(text("INSERT INTO kept VALUES (1)"))
        conn.rollback()
        assert conn.execute(text("SELECT count(*) FROM kept")).scalar() == 0


def test_statements_run_outside_any_transaction(make_app):
    app = make_app()
    with app.app_context(), db.statements() as session:
        session.execute(text("SELECT 1"))
        assert status(session.connection()) == TransactionStatus.IDLE


def test_a_connection_asked_for_autocommit_gets_no_transaction(make_app):
    """As alembic runs a statement that cannot run inside a transaction block."""
    app = make_app()
    with db.engine(app).connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        with conn.begin():
            conn.execute(text("SELECT 1"))
            assert status(conn) == TransactionStatus.IDLE


def test_a_connection_asked_for_an_isolation_level_gets_it(make_app):
    app = make_app()
    with db.engine(app).connect() as conn:
        conn = conn.execution_options(isolation_level="SERIALIZABLE")
        with conn.begin():
            level = conn.execute(text("SHOW transaction_isolation")).scalar()
            assert level == "serializable"
            assert status(conn) == TransactionStatus.INTRANS
