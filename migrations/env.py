"""Alembic environment: the URL from the app's settings, the metadata from its models."""

from logging.config import fileConfig

from alembic import context
from sqlalchemy import Engine, event

from api.config import load_config
from api.db import Base, make_engine
from api.models import import_all_models

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name)

import_all_models()
target_metadata = Base.metadata


def _no_cascades_while_copying(engine: Engine) -> None:
    """SQLite alters a table by copying it and dropping the original, and with
    foreign keys enforced (as the app's connections have them) that DROP TABLE
    first deletes every row, cascading to every row that refers to one: a
    migration of ``users`` emptied ``devices``, one of ``conversations`` emptied
    ``memberships``, ``messages`` and ``inbox_entries``. The migration's own
    connection enforces none (the pragma is ignored inside a transaction, so it
    is set on connecting); ``_check_foreign_keys`` checks them at the end."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # after make_engine's, which turns them on
        dbapi_connection.execute("PRAGMA foreign_keys=OFF")


def _check_foreign_keys(connection) -> None:
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise RuntimeError(f"the migration left rows with broken foreign keys: {broken[:10]}")


def run_migrations() -> None:
    url = config.attributes.get("database_url") or load_config()["DATABASE_URL"]
    sqlite = url.startswith("sqlite")
    engine = make_engine(url)
    if sqlite:
        _no_cascades_while_copying(engine)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=sqlite,  # SQLite alters tables by copying
        )
        with context.begin_transaction():
            context.run_migrations()
            if sqlite:
                _check_foreign_keys(connection)
    engine.dispose()


run_migrations()
